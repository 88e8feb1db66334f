"""The hub's chart archives: Helm chart .tgz files kept by content address in JetStream.

`store.ChartStore` puts and gets them (bucket `CHARTS`); the write side keeps a chart before
the `TasksetPublished` that names it, and the scheduler re-renders snapshots from it.
"""
