"""The cluster controller: Task, Tasklet, Step and Namespace CRDs and their reconcilers.

Runs in each cluster next to the edge connector. The connector writes Task and Step resources;
the controller applies each Step's object with server-side apply in phase order, waits for it
to be ready, keeps it from drifting, and rolls status up from Step to Tasklet to Task.
"""
