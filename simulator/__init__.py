"""The simulator: in-memory clusters behind real connectors, for scale and for `--sim-clusters`.

- `executor`: `SimExecutor`, the executor port on an in-memory store (same phase logic as the
  Kubernetes path, plus injected failures, edits and deletions for tests);
- `fleet`: `SimFleet`, clusters sim-1..sim-N registered, provisioned and connected by the hub,
  and how a fleet of a given size is run (in the hub process or in worker processes);
- `workers`: the hub's side of the worker processes that run large fleets;
- `heap`: the garbage collector of a process once its simulated fleet is connected.

It is an edge runtime, not a fake: it never stands in for the Kubernetes path in tests.
"""
