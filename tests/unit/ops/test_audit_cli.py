"""The admin tool's audit question: what it refuses before it asks the database."""

from __future__ import annotations

import io

import pytest

from common.audit import credential_id
from followup_admin import cli


@pytest.mark.parametrize(
    ("since", "error"),
    [("yesterday", "not an ISO 8601 moment"), ("2026-12-01T00:00", "needs an offset")],
)
def test_a_moment_without_an_offset_or_not_a_moment_is_refused(
    since: str, error: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["audit", "--credential", "api_token:0", "--since", since]) == 2
    assert error in capsys.readouterr().err


def test_an_empty_secret_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("\n"))
    assert cli.main(["audit", "--secret-stdin", "--since", "2026-12-01T00:00Z"]) == 2
    assert "no secret" in capsys.readouterr().err


def test_a_credential_is_named_by_its_fingerprint_never_by_the_secret() -> None:
    named = credential_id("api_token", "s3cret-token")
    assert named.startswith("api_token:") and len(named) == len("api_token:") + 12
    assert "s3cret" not in named and named == credential_id("api_token", "s3cret-token")
    assert named != credential_id("report_link", "s3cret-token")
