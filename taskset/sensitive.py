"""Whether a configuration value is a secret: by the key it sits under, or by its own shape.

Masking by key name alone missed `dsn`, `pw` and `sshKey`; and a secret can sit under any key
(`url: postgres://app:hunter2@db/app`, `extra: "-----BEGIN PRIVATE KEY-----..."`). So a value
counts as sensitive when its key names a secret (password, pw, pwd, passphrase, secret, token,
credential, private/ssh/tls/api key, dsn, connection string, cookie, auth, bearer) or when the
value itself looks like one: a PEM private key block, a URL carrying a password, a JSON Web
Token, a well-known token format (fleetbus API tokens, GitHub, Slack, AWS access keys), or a
value sealed at rest (`fbsealed:v1:...`: an envelope is shown masked, not as ciphertext).

This is the second line, for what is displayed (the API, CLI and dashboard). What is stored is
protected by encryption, not by guessing.
"""

from __future__ import annotations

import re

SENSITIVE_KEY = re.compile(
    r"pass(word|wd|phrase)?|(^|[-_.])pw(d)?($|[-_.])|secret|token|credential"
    r"|(private|ssh|tls|api|access|signing|encryption)[-_.]?key|^dsn$|[-_.]dsn$|dsn[-_.]"
    r"|connection[-_.]?string|cookie|^auth$|authorization|bearer",
    re.IGNORECASE,
)
_CAMEL_PW = re.compile(r"(^|[a-z])P(w|wd)($|[A-Z])|^pwd?[A-Z]")
"""camelCase: `adminPw`, `dbPwd`, `pwHash` (case-sensitive, so `pwm` and `power` are not)."""
SENSITIVE_VALUE = re.compile(
    r"-----BEGIN ([A-Z0-9]+ )*PRIVATE KEY-----"
    r"|[a-z][a-z0-9+.-]*://[^/\s:@]+:[^/\s@]+@"
    r"|\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]+"
    r"|\bfbt_[0-9a-f]{12}_[A-Za-z0-9_-]{20,}"
    r"|\bgh[pousr]_[A-Za-z0-9]{30,}"
    r"|\bxox[abprs]-[A-Za-z0-9-]{10,}"
    r"|\bAKIA[0-9A-Z]{16}\b"
    r"|^fbsealed:v1:",
)


def sensitive_key(key: str) -> bool:
    """Whether `key` names a secret (`dbPassword`, `pw`, `sshKey`, `SENTRY_DSN`, ...)."""
    return bool(SENSITIVE_KEY.search(key) or _CAMEL_PW.search(key))


def sensitive_value(value: str) -> bool:
    """Whether `value` looks like a secret whatever its key (PEM key, URL password, tokens)."""
    return bool(SENSITIVE_VALUE.search(value))


def is_sensitive(key: str, value: object) -> bool:
    """Whether the entry `key: value` must not be shown; empty values are never secret."""
    if value is None or value == "":
        return False
    if sensitive_key(key):
        return True
    return isinstance(value, str) and sensitive_value(value)
