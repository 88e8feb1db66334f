"""Sources: charts from Helm repositories and OCI registries, overlays from Git.

`fetch` brings one reference onto the hub's disk, within the host allow-list and the limits
(`references`, `limits`), through Helm's own client (`helm_fetch`) or `git` itself
(`git_fetch`), and says where it came from (`Provenance`). `publish` normalizes what was
fetched and publishes it through the write side, with its provenance. `watch` is the pure part
of standing sources (their state folded from the log, when to check next, when a failure is
worth recording); `service` is the hub service that checks them on an interval and on demand.
"""
