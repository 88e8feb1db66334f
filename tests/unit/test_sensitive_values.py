"""Which values are secrets to display code: by key name, and by shape whatever the key."""

from __future__ import annotations

import pytest

from api.event_records import REDACTED, redact_values
from taskset.sensitive import is_sensitive

SECRET_KEYS = [
    "password",
    "dbPassword",
    "DB_PASSWD",
    "pw",
    "pwd",
    "adminPw",
    "db.pw",
    "passphrase",
    "sshKey",
    "ssh_key",
    "tlsKey",
    "privateKey",
    "apiKey",
    "accessKey",
    "dsn",
    "SENTRY_DSN",
    "dsn_url",
    "connectionString",
    "token",
    "clientSecret",
    "credentials",
    "cookie",
    "auth",
    "authorization",
]
PLAIN_KEYS = ["replicas", "image", "power", "pwm", "keys", "author", "description", "path", "os"]
SECRET_SHAPES = [
    "-----BEGIN PRIVATE KEY-----\nMIIB...\n-----END PRIVATE KEY-----",
    "-----BEGIN OPENSSH PRIVATE KEY-----\nb3Bl...",
    "postgres://app:hunter2@db.internal:5432/app",
    "amqp://guest:guest@rabbit/",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
    "fbt_0123456789ab_" + "x" * 43,
    "ghp_" + "A" * 36,
    "xoxb-1234567890-abcdef",
    "AKIAIOSFODNN7EXAMPLE",
]
PLAIN_VALUES = ["nginx:1.27", "https://example.com/path", "postgres://db.internal:5432/app", "3"]


@pytest.mark.parametrize("key", SECRET_KEYS)
def test_a_key_naming_a_secret_makes_its_value_sensitive(key: str) -> None:
    assert is_sensitive(key, "x")
    assert not is_sensitive(key, ""), "an empty value hides nothing"


@pytest.mark.parametrize("key", PLAIN_KEYS)
def test_ordinary_keys_with_ordinary_values_are_shown(key: str) -> None:
    assert not is_sensitive(key, "value")


@pytest.mark.parametrize("value", SECRET_SHAPES)
def test_a_value_shaped_like_a_secret_is_sensitive_under_any_key(value: str) -> None:
    assert is_sensitive("extra", value)
    assert redact_values({"a": [{"b": value}], "c": value}) == {
        "a": [{"b": REDACTED}],
        "c": REDACTED,
    }


@pytest.mark.parametrize("value", PLAIN_VALUES)
def test_ordinary_values_are_shown(value: str) -> None:
    assert redact_values({"image": value}) == {"image": value}
