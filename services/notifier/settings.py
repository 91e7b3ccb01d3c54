"""The notifier's configuration (environment ``FOLLOWUP_*``), validated once at start-up."""

from __future__ import annotations

from datetime import time
from typing import Literal

from pydantic import Field

from common.config import Settings

SCHEMA = "notifier"


class NotifierSettings(Settings):
    service: str = "notifier"
    http_port: int = Field(default=8083, ge=0, le=65535)
    db_schema: str = SCHEMA
    public_base_url: str = "http://127.0.0.1:8083"
    api_token: str = ""
    link_secret: str = ""
    clinic_name: str = "the clinic"
    clinic_phone: str = "+37052000000"
    rebook_url: str | None = None
    default_language: str = "en"
    default_region: str = "LT"
    quiet_start: time = time(21, 0)
    quiet_end: time = time(8, 0)
    # Transient failures are retried until the command's window ends; a number here is an
    # extra bound on tries (unset: the window is the budget, as documented).
    max_tries: int | None = Field(default=None, ge=1)
    retry_base_seconds: float = Field(default=30.0, gt=0)
    retry_cap_seconds: float = Field(default=3600.0, gt=0)
    sending_lease_seconds: float = Field(default=120.0, ge=0)
    # A graceful stop (SIGTERM) lets the send under way finish for at most this long; keep
    # it below the platform's termination grace (Kubernetes: 30 s) minus the rest of stop.
    stop_grace_seconds: float = Field(default=20.0, ge=0)
    # Signed provider callbacks are remembered this long; a repeat has no effect (the
    # provider's signature carries no timestamp, so this is the replay window's bound).
    callback_retention_days: float = Field(default=400.0, gt=0)
    # Runaway guard: at most this many SMS+emails per patient per local day, whatever
    # asks for them (the scheduler's caps are lower; this is the last line of defence).
    runaway_cap_per_day: int = Field(default=4, ge=1)
    # SMS: a primary and an optional secondary Twilio-compatible provider.
    sms_primary_url: str | None = None
    sms_primary_sid: str = ""
    sms_primary_token: str = ""
    sms_primary_from: str = ""
    sms_secondary_url: str | None = None
    sms_secondary_sid: str = ""
    sms_secondary_token: str = ""
    sms_secondary_from: str = ""
    sms_rate_per_second: float = Field(default=10.0, ge=0)
    # Email.
    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_security: Literal["none", "starttls", "tls"] = "starttls"
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_sender: str = "followup@clinic.invalid"
    smtp_validate_certs: bool = True
    unsubscribe_mailto: str | None = None
    # Call tasks: comma-separated sinks, names as in registry.SINKS.
    call_task_sinks: str = "kafka"
    webhook_url: str | None = None
    webhook_secret: str = ""
    front_desk_email: str | None = None
