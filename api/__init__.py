"""The hub's HTTP face: the API under /api/v1, the dashboard and /metrics."""
