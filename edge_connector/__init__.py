"""The edge connector: runs beside each cluster, turns its desired state into applied state.

It reads the cluster's ClusterTasks (from the leaf's mirror of DESIRED, or the hub's durable
consumer), hands each to an executor (Kubernetes, or the in-memory simulator), and appends what
happened to the cluster's outbox, which the hub sources into REPORTS. It imports neither the
Helm engine nor any hub component, so an edge install stays small.
"""
