from __future__ import annotations

import random
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from schemas.base import Channel
from schemas.events import NotificationCommand
from schemas.vocabulary import Hold
from services.notifier import call_task_channel, email_channel
from services.notifier.channels import ChannelRules
from services.notifier.contacts import Contact, normalise_phone, why_impossible
from services.notifier.dispatcher import Decision, Proceed, Refuse, decide, retry_delay
from services.notifier.quiet_hours import QuietHours, next_allowed_moment
from services.notifier.sms import RULES as SMS_RULES
from services.notifier.sms import twilio_signature, valid_twilio_signature
from services.notifier.sms_text import classify_reply, segment_count
from tests.unit.notifier.samples import command, contact

VILNIUS = ZoneInfo("Europe/Vilnius")
# Each channel's own rules, as the registry's channels bring them to the dispatcher.
RULES: dict[str, ChannelRules] = {
    "sms": SMS_RULES,
    "email": email_channel.RULES,
    "call_task": call_task_channel.RULES,
}


def impossible(contact: Contact | None, channel: Channel, status: str | None = None) -> str | None:
    return why_impossible(contact, channel, RULES[channel], status)


def judge(cmd: NotificationCommand, *args: object, **kwargs: object) -> Decision:
    return decide(cmd, *args, rules=RULES[cmd.channel], **kwargs)  # type: ignore[arg-type]


def test_phone_numbers_are_normalised_to_e164_or_refused() -> None:
    assert normalise_phone("8 600 00001", "LT") == "+37060000001"
    assert normalise_phone("+359 88 123 4567", "LT") == "+359881234567"
    assert normalise_phone("12", "LT") is None
    assert normalise_phone("not a phone", "LT") is None
    assert normalise_phone(None, "LT") is None


def test_why_impossible_reasons_in_order() -> None:
    assert impossible(contact(), "sms") is None
    assert impossible(None, "sms") == "no_contact"
    assert impossible(contact(), "sms", "deceased") == "not_contactable"
    assert impossible(contact(status="transferred_out"), "email") == "not_contactable"
    assert impossible(contact(opted_out=frozenset({"sms"})), "sms") == "opted_out"
    # An opt-out wins over consent given earlier; other channels stay open.
    assert impossible(contact(opted_out=frozenset({"sms"})), "email") is None
    assert impossible(contact(consent={"sms": False, "email": True, "call": True}), "sms") == (
        "no_consent"
    )
    assert impossible(contact(phone_raw=None, phone=None), "sms") == "no_phone"
    assert impossible(contact(phone_raw="12", phone=None), "sms") == "invalid_phone"
    assert impossible(contact(email=None), "email") == "no_email"
    assert impossible(contact(phone=None, email=None), "call_task") is None


def test_quiet_hours_in_the_patients_zone() -> None:
    quiet = QuietHours()
    zone = ZoneInfo("America/New_York")
    # 23:30 in New York: quiet; next allowed is 08:00 local, inside the window.
    now = datetime(2026, 3, 3, 4, 30, tzinfo=UTC)
    end = now + timedelta(days=1)
    at = next_allowed_moment(now, now, end, zone, quiet)
    assert at == datetime(2026, 3, 3, 8, 0, tzinfo=zone)
    # The same moment is fine in Vilnius (06:30 local is quiet too, until 08:00).
    assert next_allowed_moment(now, now, end, VILNIUS, quiet) == datetime(
        2026, 3, 3, 8, 0, tzinfo=VILNIUS
    )
    # Daytime: now.
    noon = datetime(2026, 3, 3, 10, 0, tzinfo=UTC)
    assert next_allowed_moment(noon, noon, end, VILNIUS, quiet) == noon
    # The window closes before the morning: nothing allowed.
    assert next_allowed_moment(now, now, now + timedelta(hours=2), zone, quiet) is None


def test_quiet_hours_follow_a_dst_change() -> None:
    # Night of 29 March 2026: Vilnius moves from +02:00 to +03:00.
    late = datetime(2026, 3, 28, 22, 0, tzinfo=UTC)  # 00:00 local
    at = next_allowed_moment(late, late, late + timedelta(days=1), VILNIUS, QuietHours())
    assert at is not None
    assert at.astimezone(VILNIUS).time() == time(8, 0)
    assert at.utcoffset() == timedelta(hours=3)


def test_an_escalation_to_the_doctor_needs_no_contact_of_the_patient() -> None:
    # The no_channel escalation exists because nothing reaches the patient: it must still
    # reach the doctor (it was once refused no_contact, like a task for the patient).
    quiet = QuietHours()
    cmd = command(channel="call_task", purpose="escalation", escalate_to="dr-7")
    inside = cmd.window_start + timedelta(minutes=1)
    assert judge(cmd, None, None, inside, quiet) == Proceed()
    refused = judge(cmd, None, "deceased", inside, quiet)
    assert refused == Refuse("channel_impossible", "not_contactable", "not_contactable")
    follow_up = command(channel="call_task")
    late = follow_up.occurred_at + timedelta(minutes=11)
    assert judge(follow_up, None, None, late, quiet) == Refuse("channel_impossible", "no_contact")


def test_decide_holds_refuses_or_proceeds() -> None:
    quiet = QuietHours()
    cmd = command()
    inside = cmd.window_start + timedelta(hours=1)
    assert judge(cmd, contact(), None, inside, quiet) == Proceed()
    refused = judge(cmd, contact(), "deceased", inside, quiet)
    assert refused == Refuse("channel_impossible", "not_contactable", "not_contactable")
    assert judge(cmd, contact(opted_out=frozenset({"sms"})), None, inside, quiet) == Refuse(
        "channel_impossible", "opted_out", "opted_out"
    )
    assert judge(cmd, contact(), None, cmd.window_end, quiet) == Refuse("failed", "window_passed")
    # No contact yet: wait a little (the contacts topic may still be replaying), then give up.
    assert judge(cmd, None, None, cmd.occurred_at, quiet) == Hold(
        "awaiting_contact", cmd.occurred_at + timedelta(seconds=30)
    )
    late = cmd.occurred_at + timedelta(minutes=11)
    assert judge(cmd, None, None, late, quiet) == Refuse("channel_impossible", "no_contact")
    early = cmd.window_start - timedelta(hours=1)
    assert judge(cmd, contact(), None, early, quiet) == Hold("window", cmd.window_start)
    # A window from 20:00 to 23:00 local: at 21:30 no moment is left -> failed quiet_hours.
    evening = command(
        window_start=datetime(2026, 3, 2, 20, 0, tzinfo=VILNIUS),
        window_end=datetime(2026, 3, 2, 23, 0, tzinfo=VILNIUS),
    )
    late = datetime(2026, 3, 2, 21, 30, tzinfo=VILNIUS)
    assert judge(evening, contact(), None, late, quiet) == Refuse(
        "failed", "quiet_hours", "quiet_hours"
    )
    long_window = command(
        window_start=datetime(2026, 3, 2, 20, 0, tzinfo=VILNIUS),
        window_end=datetime(2026, 3, 3, 20, 0, tzinfo=VILNIUS),
    )
    assert judge(long_window, contact(), None, late, quiet) == Hold(
        "quiet_hours", datetime(2026, 3, 3, 8, 0, tzinfo=VILNIUS)
    )
    # A window that opens at night: held until the morning after, which is quiet hours.
    night_window = command(
        window_start=datetime(2026, 3, 2, 22, 0, tzinfo=VILNIUS),
        window_end=datetime(2026, 3, 3, 20, 0, tzinfo=VILNIUS),
    )
    before = datetime(2026, 3, 2, 20, 0, tzinfo=VILNIUS)
    assert judge(night_window, contact(), None, before, quiet) == Hold(
        "quiet_hours", datetime(2026, 3, 3, 8, 0, tzinfo=VILNIUS)
    )
    # Call tasks ignore the patient's quiet hours (an administrator calls in business hours).
    task = command("call_task")
    assert judge(task, contact(), None, inside, quiet) == Proceed()
    withdrawal = command("call_task", purpose="withdrawal")
    assert judge(withdrawal, None, "deceased", inside, quiet) == Proceed()


def test_retry_delay_grows_with_jitter_and_caps() -> None:
    rnd = random.Random(7)
    delays = [retry_delay(n, 1.0, 30.0, rnd) for n in range(1, 9)]
    assert 0.5 <= delays[0] <= 1.0
    assert 4.0 <= delays[3] <= 8.0
    assert all(d <= 30.0 for d in delays)
    assert len({round(d, 6) for d in delays}) == len(delays)


def test_sms_segments_gsm7_and_ucs2() -> None:
    assert segment_count("Hello") == ("gsm7", 1)
    assert segment_count("a" * 160) == ("gsm7", 1)
    assert segment_count("a" * 161) == ("gsm7", 2)
    assert segment_count("€" * 80) == ("gsm7", 1)  # extension chars count twice
    assert segment_count("€" * 81) == ("gsm7", 2)
    assert segment_count("Привет") == ("ucs2", 1)
    assert segment_count("ж" * 70) == ("ucs2", 1)
    assert segment_count("ж" * 71) == ("ucs2", 2)
    assert segment_count("Jūsų vizitas") == ("ucs2", 1)  # Lithuanian ū is not GSM-7


@pytest.mark.parametrize(
    ("body", "meaning"),
    [
        ("STOP", "opt_out"),
        (" stop. ", "opt_out"),
        ("СТОП", "opt_out"),
        ("спри", "opt_out"),
        ("Atsisakyti", "opt_out"),
        ("START", "opt_in"),
        ("старт", "opt_in"),
        ("HELP", "help"),
        ("помощ", "help"),
        ("Pagalba", "help"),
        ("Please stop by tomorrow", "reply"),
        ("I will call you", "reply"),
    ],
)
def test_replies_are_classified_in_every_language(body: str, meaning: str) -> None:
    assert classify_reply(body) == meaning


def test_twilio_signature_matches_the_documented_example() -> None:
    # The worked example from Twilio's security documentation.
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    params = {
        "CallSid": "CA1234567890ABCDE",
        "Caller": "+12349013030",
        "Digits": "1234",
        "From": "+12349013030",
        "To": "+18005551212",
    }
    token = "12345"
    assert twilio_signature(token, url, params) == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
    assert valid_twilio_signature(token, url, params, "0/KCTR6DLpKmkAf8muzZqo1nDgQ=")
    assert not valid_twilio_signature(token, url, {**params, "Digits": "9"}, None)
    assert not valid_twilio_signature(token, url, {**params, "Digits": "9"}, "x")


class RecordingClock:
    def __init__(self, start: datetime) -> None:
        self.moment = start
        self.slept: list[float] = []

    def now(self) -> datetime:
        return self.moment

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.moment += timedelta(seconds=seconds)


async def test_rate_limiter_spaces_sends_to_the_providers_limit() -> None:
    from services.notifier.channels import RateLimiter

    clock = RecordingClock(datetime(2026, 3, 2, tzinfo=UTC))
    limiter = RateLimiter(4.0, clock)
    for _ in range(5):
        await limiter.wait()
    assert clock.slept == [0.25, 0.25, 0.25, 0.25]
    clock.moment += timedelta(seconds=10)
    await limiter.wait()  # idle for long: no wait
    assert len(clock.slept) == 4


async def test_rate_limiter_gives_concurrent_sends_each_their_own_slot() -> None:
    import asyncio

    from services.notifier.channels import RateLimiter

    class StillClock(RecordingClock):
        async def sleep(self, seconds: float) -> None:
            self.slept.append(seconds)
            await asyncio.sleep(0)  # time moves for nobody: the waits must differ anyway

    clock = StillClock(datetime(2026, 3, 2, tzinfo=UTC))
    limiter = RateLimiter(4.0, clock)
    await asyncio.gather(*(limiter.wait() for _ in range(4)))
    assert sorted(clock.slept) == [0.25, 0.5, 0.75]


def test_runaway_guard_refuses_beyond_the_hard_cap() -> None:
    cmd = command()
    inside = cmd.window_start + timedelta(hours=1)
    quiet = QuietHours()
    assert judge(cmd, contact(), None, inside, quiet, sent_today=3, daily_hard_cap=4) == Proceed()
    assert judge(cmd, contact(), None, inside, quiet, sent_today=4, daily_hard_cap=4) == Refuse(
        "failed", "runaway_guard", "runaway_guard"
    )
    # Call tasks are counted apart: the guard is for automated messages.
    task = command("call_task")
    assert judge(task, contact(), None, inside, quiet, sent_today=9, daily_hard_cap=4) == Proceed()
