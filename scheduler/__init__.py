"""The scheduler: from published snapshots, overrides and clusters to each cluster's desired state.

Placement, override merge and rollout waves are pure functions of the log (`placement`,
`rollout`, `decide`); `service` only loads, decides, appends and writes DESIRED; `bus` is the
one module here that speaks NATS.
"""
