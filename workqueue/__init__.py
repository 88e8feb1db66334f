"""A keyed work queue shared by the edge's two reconcilers (the connector and the controller).

It sits below every component and imports only the standard library, so both edge sides can use
the same per-key serialisation without importing each other.
"""

from workqueue.queue import WorkQueue

__all__ = ["WorkQueue"]
