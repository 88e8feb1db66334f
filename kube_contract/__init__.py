"""The Kubernetes contract between the edge connector and the cluster controller.

Both edge sides import this package and nothing of each other (as Rancher Fleet's `pkg/apis`):
- `model`: the custom resources Task, Tasklet, Step and Namespace as typed data, the API group
  and version, labels, annotations, and the status types the controller writes and the
  connector reads back;
- `resources`: every resource identity (`ResourceInfo`: group, version, plural, scope) either
  side names, in one place;
- `drift`: the drift-policy decision (`judge_drift`) and the ignore-path matcher both sides use.

It is pure data and pure functions: no client, no I/O. The CRD manifests themselves are in
`cluster_controller/crds/`, installed by the controller.
"""
