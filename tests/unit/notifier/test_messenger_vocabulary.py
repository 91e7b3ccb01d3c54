"""Each messenger's words, as its platform documents them, mapped to ours (pure)."""

from __future__ import annotations

import pytest

from services.notifier import telegram, viber, whatsapp
from services.notifier.channels import PermanentSendError, TransientSendError
from services.notifier.messenger import ChatMessage, ChatTemplate, PatientLeft


def test_whatsapp_text_and_template_bodies_are_the_cloud_apis_message_objects() -> None:
    text = whatsapp.request_body(ChatMessage("+37060000001", "Hello"))
    assert text == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": "37060000001",
        "type": "text",
        "text": {"preview_url": False, "body": "Hello"},
    }
    template = ChatTemplate("missed_visit", "lt", ("Clinic", "+37052000000"))
    body = whatsapp.request_body(ChatMessage("+37060000001", "Hello", template))
    assert body["type"] == "template" and "text" not in body
    assert body["template"]["components"] == [
        {
            "type": "body",
            "parameters": [
                {"type": "text", "text": "Clinic"},
                {"type": "text", "text": "+37052000000"},
            ],
        }
    ]


def test_whatsapp_error_codes() -> None:
    assert whatsapp.error_verdict(131047) == ("failed", "outside_service_window")
    assert whatsapp.error_verdict(131026) == ("channel_impossible", "no_chat_account")
    assert whatsapp.error_verdict(132001) == ("failed", "provider_132001")


def test_signatures_are_the_hex_hmac_sha256_of_the_raw_body() -> None:
    # Computed independently: printf '{"a":1}' | openssl dgst -sha256 -hmac secret
    digest = "aa9e2e3575f5d7098b6caccd790888c36d5fdb63342a73bada2d6a51747a8494"
    assert whatsapp.hub_signature("secret", b'{"a":1}') == "sha256=" + digest
    assert viber.viber_signature("secret", b'{"a":1}') == digest


def test_telegram_answers() -> None:
    ok = telegram._answer(200, {"ok": True, "result": {"message_id": 7}}, "555")
    assert ok.provider_id == "555:7"
    with pytest.raises(PatientLeft):
        telegram._answer(
            403,
            {
                "ok": False,
                "error_code": 403,
                "description": "Forbidden: bot was blocked by the user",
            },
            "555",
        )
    with pytest.raises(PermanentSendError) as gone:
        telegram._answer(
            403,
            {"ok": False, "error_code": 403, "description": "Forbidden: user is deactivated"},
            "555",
        )
    assert gone.value.outcome == "channel_impossible"
    with pytest.raises(PermanentSendError) as unknown:
        telegram._answer(
            400, {"ok": False, "error_code": 400, "description": "Bad Request: chat not found"}, "5"
        )
    assert unknown.value.detail == "no_chat_account"
    with pytest.raises(TransientSendError):
        telegram._answer(
            429, {"ok": False, "error_code": 429, "parameters": {"retry_after": 3}}, "5"
        )


def test_viber_statuses() -> None:
    assert viber._answer({"status": 0, "message_token": 5741311803571721087}).provider_id == (
        "5741311803571721087"
    )
    with pytest.raises(PatientLeft):
        viber._answer({"status": 6, "status_message": "receiverNotSubscribed"})
    with pytest.raises(PermanentSendError) as unregistered:
        viber._answer({"status": 5, "status_message": "receiverNotRegistered"})
    assert unregistered.value.outcome == "channel_impossible"
    with pytest.raises(TransientSendError):
        viber._answer({"status": 12, "status_message": "tooManyRequests"})
    with pytest.raises(PermanentSendError) as ours:
        viber._answer({"status": 2, "status_message": "invalidAuthToken"})
    assert ours.value.detail == "provider_2"
