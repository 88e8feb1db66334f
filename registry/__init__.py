"""The write side: the aggregates commands are decided against, and their pure deciders.

Each module is one aggregate — `tasksets` (publish, retire), `clusters` (register, relabel,
deregister), `overrides` (set, remove, preview), `rollouts` (resume) — with the fold of its own
history on its own subject, `decide_*` functions that turn a command into events or a domain
error, and a thin service that loads, decides and appends conditionally on the subject's last
sequence. Nothing here knows HTTP or argparse: `api` maps `registry.errors` to statuses, and the
CLI and the HTTP API call the same services.
"""
