"""Secrets at rest: envelope encryption of secret values with per-scope data keys.

`sealing.envelope` seals and opens single values (AES-256-GCM from `cryptography`, the key id
in the envelope); `sealing.keyring` keeps the data keys, wrapped by the hub's key-encryption
key; `sealing.trees` finds the secret values inside Kubernetes objects, Helm values and patches
and seals or opens them in place.
"""
