"""The hub's access component: who may connect to the hub's nats-server, and with what rights.

Where things live:
- `pki`: the fleetbus CA, server and cluster certificates (the leaf connection's TLS);
- `nats_jwt`: NATS operator, account and user JWTs, signed with nkeys;
- `project_accounts`: `ProjectAccountService`, one account per project from its events;
- `project_links`: the exports and imports joining a project's clusters (users of its
  account) to FLEET, exactly their own subjects;
- `nats_accounts`: `NatsAuthority`, the hub's operator and accounts (one per project, FLEET
  for the default project) with their JetStream limits, and the credentials they sign;
- `account_push`: account JWTs pushed to the nats-based resolver and seen on every server;
  `create_project_account`, the one call that makes a project's account;
- `permissions`: the NATS users and permissions of registered clusters, folded from the log
  (pure: `evolve_access`, `evolve_revocations`, `leaf_permissions`, `client_permissions`);
- `service`: `ClusterAccessService`, which follows the cluster events, pushes revocations and
  says when a registration or revocation is effective;
- `ports`: what access needs from the composition root (the server process, the data dir);
- `private_files`: owner-only atomic writes for keys, configs and secrets.

Enrollment (a certificate from the CA and the cluster's NATS credentials, packed into an edge
bundle) is `pki.issue_cluster` and `permissions.leaf_credentials` plus the bundle writer of the
composition root.
"""
