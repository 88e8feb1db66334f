"""NATS JWTs as fleetbus signs them: the form nats-server reads, signatures that are checked."""

from __future__ import annotations

import base64

import orjson
import pytest

from access.nats_jwt import (
    JetStreamLimits,
    JwtError,
    account_jwt,
    credentials_file,
    decode,
    new_nkey,
    operator_jwt,
    user_jwt,
)


def test_a_user_jwt_carries_its_permissions_and_is_signed_by_its_account() -> None:
    account = new_nkey("account")
    user = new_nkey("user")
    token = user_jwt(
        user.public,
        account,
        "alpha",
        iat=100,
        publish={"allow": ["fleet.inventory.alpha"]},
        subscribe={"allow": ["_INBOX.alpha.>"]},
        connection_types=["LEAFNODE"],
    )
    claims = decode(token)
    assert claims["iss"] == account.public
    assert claims["sub"] == user.public
    assert claims["iat"] == 100
    assert claims["nats"]["pub"] == {"allow": ["fleet.inventory.alpha"]}
    assert claims["nats"]["sub"] == {"allow": ["_INBOX.alpha.>"]}
    assert claims["nats"]["allowed_connection_types"] == ["LEAFNODE"]
    assert claims["nats"]["type"] == "user"
    assert len(claims["jti"]) == 52  # base32 of a 32-byte digest, unpadded


def test_keys_carry_their_role_prefix_and_derived_keys_are_stable() -> None:
    assert new_nkey("operator").public.startswith("O")
    assert new_nkey("account").public.startswith("A")
    assert new_nkey("user").public.startswith("U")
    assert new_nkey("user", b"\x01" * 32) == new_nkey("user", b"\x01" * 32)
    assert new_nkey("user", b"\x01" * 32) != new_nkey("user", b"\x02" * 32)
    with pytest.raises(JwtError, match="32 bytes"):
        new_nkey("user", b"short")


def test_a_seed_never_shows_in_a_repr() -> None:
    key = new_nkey("account")
    assert key.seed not in repr(key)
    assert key.public in repr(key)


def test_an_account_jwt_has_its_jetstream_limits_and_revocations() -> None:
    operator, account = new_nkey("operator"), new_nkey("account")
    limits = JetStreamLimits(memory_bytes=0, storage_bytes=1 << 20, streams=3, consumers=10)
    claims = decode(
        account_jwt(account, operator, "team-a", iat=5, jetstream=limits, revocations={"UX": 4})
    )
    assert claims["iss"] == operator.public
    assert claims["nats"]["limits"]["disk_storage"] == 1 << 20
    assert claims["nats"]["limits"]["streams"] == 3
    assert claims["nats"]["limits"]["consumer"] == 10
    assert claims["nats"]["revocations"] == {"UX": 4}
    system = new_nkey("account")
    op = decode(operator_jwt(operator, "fleetbus", system_account=system.public, iat=1))
    assert op["nats"]["system_account"] == system.public
    assert op["sub"] == op["iss"] == operator.public


def test_a_tampered_or_malformed_jwt_is_refused() -> None:
    account = new_nkey("account")
    token = user_jwt(new_nkey("user").public, account, "alpha", iat=1)
    head, payload, signature = token.split(".")
    claims = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["nats"]["pub"] = {"allow": [">"]}
    forged = base64.urlsafe_b64encode(orjson.dumps(claims)).rstrip(b"=").decode()
    with pytest.raises(JwtError, match="signature"):
        decode(f"{head}.{forged}.{signature}")
    with pytest.raises(JwtError, match="three"):
        decode("a.b")
    with pytest.raises(JwtError):
        decode("a.b.c")


def test_a_credentials_file_holds_the_jwt_and_the_seed_in_the_nats_form() -> None:
    user = new_nkey("user")
    text = credentials_file("JWT", user.seed)
    lines = text.splitlines()
    assert lines[lines.index("-----BEGIN NATS USER JWT-----") + 1] == "JWT"
    assert lines[lines.index("-----BEGIN USER NKEY SEED-----") + 1] == user.seed
