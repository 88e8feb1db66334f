"""The hub's access component: who may connect to the hub's nats-server, and with what rights.

Where things live:
- `pki`: the fleetbus CA, server and cluster certificates, the certificate → NATS user mapping;
- `permissions`: the NATS users and permissions of registered clusters, folded from the log
  (pure: `evolve_access`, `leaf_permissions`, `client_permissions`, `cluster_users`);
- `leafnodes`: the hub's nats-server as access sees it — config reloads, its monitor endpoint,
  leaf connections to drop after a revocation and the system-account kick that drops them;
- `service`: `ClusterAccessService`, which follows the cluster events, writes the config,
  reloads, kicks, and says when a registration or revocation is effective;
- `ports`: what access needs from the composition root (the server process, the data dir);
- `private_files`: owner-only atomic writes for keys, configs and secrets.

Enrollment (a certificate from the CA, packed into an edge bundle) is `pki.issue_cluster`
plus the bundle writer of the composition root.
"""
