"""The email channel against a real SMTP server that demands TLS and authentication."""

from __future__ import annotations

import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from services.notifier.email_channel import Email, Mailer, SmtpConfig
from tests.integration.notifier.world import Inbox
from tests.support.polling import free_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server_tls(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(Path(cert), Path(key))
    return context


def authenticator(_server: Any, _session: Any, _envelope: Any, _mech: str, data: Any) -> AuthResult:
    return AuthResult(success=data.login == b"followup" and data.password == b"s3cret")


def start(inbox: Inbox, **kwargs: Any) -> tuple[Controller, int]:
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    return controller, port


def mail(key: str) -> Email:
    return Email(to="p@example.org", subject="S", text="T", idempotency_key=key)


@pytest.fixture
def starttls_server(server_tls: ssl.SSLContext) -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    controller, port = start(
        inbox,
        tls_context=server_tls,
        require_starttls=True,
        auth_required=True,
        authenticator=authenticator,
    )
    yield inbox, port
    controller.stop()


async def test_starttls_with_auth_and_one_connection_for_a_burst(
    starttls_server: tuple[Inbox, int],
) -> None:
    inbox, port = starttls_server
    config = SmtpConfig(
        host="127.0.0.1",
        port=port,
        sender="followup@clinic.example",
        security="starttls",
        username="followup",
        password="s3cret",
        validate_certs=False,
    )
    mailer = Mailer(config)
    try:
        for n in range(3):
            await mailer.send(mail(f"burst:{n}"))
    finally:
        await mailer.close()
    assert [m["X-Followup-Key"] for m in inbox.messages] == ["burst:0", "burst:1", "burst:2"]
    assert all(inbox.tls)
    assert len(set(inbox.connections)) == 1  # the burst reused one connection


async def test_implicit_tls(server_tls: ssl.SSLContext) -> None:
    inbox = Inbox()
    controller, port = start(inbox, ssl_context=server_tls)
    mailer = Mailer(
        SmtpConfig(
            host="127.0.0.1",
            port=port,
            sender="followup@clinic.example",
            security="tls",
            validate_certs=False,
        )
    )
    try:
        await mailer.send(mail("tls:1"))
    finally:
        await mailer.close()
        controller.stop()
    assert [m["X-Followup-Key"] for m in inbox.messages] == ["tls:1"]
