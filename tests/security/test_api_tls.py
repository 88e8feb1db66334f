"""The API over TLS: `fleetbus up --tls` serves HTTPS only, and the CLI checks whom it talks to.

A real `fleetbus up --tls` process: its API certificate comes from the hub CA, its fingerprint
is printed and recorded in `hub.json`. Plain HTTP on that port gets no answer; a client that
trusts neither the CA nor the fingerprint is refused by its own TLS check; the CLI finds the
local hub's fingerprint by itself, and a wrong pin is refused before any request is sent.
"""

from __future__ import annotations

import http.client
import re
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator

import orjson
import pytest

from fleetbus.api_tls import fingerprint_of_der
from tests.security.live_hub import LiveHub

WRONG_PIN = "sha256:" + ":".join(["AB"] * 32)


@pytest.fixture(scope="module")
def tls_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveHub]:
    hub = LiveHub(tmp_path_factory.mktemp("api-tls") / "hub", extra_args=("--tls",))
    hub.start()
    try:
        yield hub
    finally:
        hub.stop()


def served_fingerprint(hub: LiveHub) -> str:
    pem = ssl.get_server_certificate(("127.0.0.1", hub.http_port))
    return fingerprint_of_der(ssl.PEM_cert_to_DER_cert(pem))


def test_the_printed_and_recorded_fingerprint_is_the_served_certificate(tls_hub: LiveHub) -> None:
    printed = re.search(r"API TLS certificate (sha256:[0-9A-F:]{95})", tls_hub.log_text())
    assert printed is not None, tls_hub.log_text()[-2000:]
    info = orjson.loads((tls_hub.data_dir / "hub.json").read_bytes())
    assert info["http_url"].startswith("https://")
    assert printed.group(1) == info["api_tls_fingerprint"] == served_fingerprint(tls_hub)


def test_plain_http_gets_no_answer_from_a_tls_hub(tls_hub: LiveHub) -> None:
    url = f"http://127.0.0.1:{tls_hub.http_port}/api/v1/clusters"
    request = urllib.request.Request(url, headers={"Authorization": "Bearer x"})
    with pytest.raises((urllib.error.URLError, http.client.HTTPException, ConnectionError)):
        urllib.request.urlopen(request, timeout=5)


def test_a_client_trusting_neither_the_ca_nor_the_fingerprint_refuses_the_hub(
    tls_hub: LiveHub,
) -> None:
    with pytest.raises(urllib.error.URLError) as refused:
        urllib.request.urlopen(f"{tls_hub.http_url}/healthz", timeout=5)
    assert isinstance(refused.value.reason, ssl.SSLCertVerificationError)
    answer = tls_hub.http("GET", "/api/v1/clusters", token=tls_hub.admin_token())
    assert answer.status == 200, "trusting the hub CA, the same request goes through"


def test_the_cli_pins_the_local_hub_and_refuses_a_wrong_pin(tls_hub: LiveHub) -> None:
    local = tls_hub.cli("cluster", "ls", "--data-dir", str(tls_hub.data_dir))
    assert local.returncode == 0, local.stderr
    remote = ("--server", tls_hub.http_url, "--token", tls_hub.admin_token())
    pinned = tls_hub.cli("cluster", "ls", *remote, "--tls-fingerprint", served_fingerprint(tls_hub))
    assert pinned.returncode == 0, pinned.stderr
    with_ca = tls_hub.cli(
        "cluster", "ls", *remote, "--ca-file", str(tls_hub.data_dir / "pki" / "ca.crt")
    )
    assert with_ca.returncode == 0, with_ca.stderr
    wrong = tls_hub.cli("cluster", "ls", *remote, "--tls-fingerprint", WRONG_PIN)
    assert wrong.returncode == 2
    assert wrong.stdout == b""
    (line,) = wrong.stderr.decode().strip().splitlines()
    assert "failed TLS verification" in line
    assert f"not the pinned {WRONG_PIN}" in line
    unverified = tls_hub.cli("cluster", "ls", *remote)
    assert unverified.returncode == 2
    assert "failed TLS verification: unable to get local issuer" in unverified.stderr.decode()
