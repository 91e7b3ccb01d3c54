"""The generic webhook's Standard Webhooks signature, verified by the library receivers use."""

from __future__ import annotations

import base64

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from services.notifier.sinks import standard_headers, standard_webhook

BODY = b'{"task": {"task_id": "c-1:1"}}'


def test_a_receiver_verifies_with_the_shared_secret_in_either_spelling() -> None:
    headers = standard_headers(standard_webhook("plain-secret"), "c-1:1:create", BODY)
    assert headers["webhook-id"] == "c-1:1:create"
    assert headers["webhook-signature"].startswith("v1,")
    assert Webhook(b"plain-secret").verify(BODY, headers) == {"task": {"task_id": "c-1:1"}}
    spelled = "whsec_" + base64.b64encode(b"plain-secret").decode()
    assert Webhook(spelled).verify(BODY, headers)
    # A whsec_ secret is taken as the spec has it (base64), on both sides.
    signed = standard_headers(standard_webhook(spelled), "c-1:1:create", BODY)
    assert signed["webhook-signature"] == headers["webhook-signature"]


def test_a_changed_body_id_or_key_is_refused() -> None:
    headers = standard_headers(standard_webhook("plain-secret"), "c-1:1:create", BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(b"plain-secret").verify(BODY.replace(b"c-1", b"c-2"), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(b"plain-secret").verify(BODY, {**headers, "webhook-id": "c-1:1:withdraw"})
    with pytest.raises(WebhookVerificationError):
        Webhook(b"other-secret").verify(BODY, headers)
