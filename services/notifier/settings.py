"""The notifier's configuration (environment ``FOLLOWUP_*``), validated once at start-up."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import time
from typing import Literal

from pydantic import Field

from common.config import Settings
from schemas.events import StageEducation

SCHEMA = "notifier"


class NotifierSettings(Settings):
    service: str = "notifier"
    http_port: int = Field(default=8083, ge=0, le=65535)
    db_schema: str = SCHEMA
    public_base_url: str = "http://127.0.0.1:8083"
    api_token: str = ""
    link_secret: str = ""  # HMAC key of unsubscribe and call-report links
    # Report links stay valid this long after the task's window ends.
    report_link_grace_hours: float = Field(default=72.0, gt=0)
    # Who writes: a name for every language (proper names read the same everywhere), and
    # per-language overrides as JSON objects by language code, e.g.
    # FOLLOWUP_CLINIC_NAMES='{"ru": "Клиника «Шипсена»"}'. Empty: each language's own
    # generic word ("your clinic", "Jūsų klinika", ...), never English in another text.
    # Patient texts and call scripts read the same names (clinic_name_in).
    clinic_name: str = ""
    clinic_names: dict[str, str] = Field(default_factory=dict)
    clinic_signatures: dict[str, str] = Field(default_factory=dict)
    # The clinic's zone and language: what administrators read (times, dates, words).
    clinic_timezone: str = "Europe/Vilnius"
    clinic_language: str | None = None  # unset: default_language
    clinic_phone: str = "+37052000000"
    rebook_url: str | None = None
    # Rebooking by link (docs/rebooking.md): the hospital's slot source ("" = off; the
    # messages then name rebook_url only), how long a link holds after its message's window
    # (never past the stage deadline), and which slots the page offers.
    slots_source: Literal["", "fhir", "hl7"] = ""
    slots_fhir_url: str | None = None
    slots_fhir_token: str = ""
    # How free times are asked for: Appointment/$find where the CapabilityStatement declares
    # it (auto), or always a Slot search (slot), or always $find (find).
    slots_fhir_search: Literal["auto", "slot", "find"] = "auto"
    # Whose schedules a department's slots hang on: HealthcareService/<department> or
    # Location/<department> (a practitioner named by the plan: Practitioner/<id>).
    slots_department_actor: Literal["HealthcareService", "Location"] = "HealthcareService"
    # proposed: the hospital confirms the request; booked where its server lets us book.
    slots_booking_status: Literal["proposed", "booked"] = "proposed"
    slots_hl7_host: str | None = None
    slots_hl7_port: int = Field(default=2576, ge=1, le=65535)
    slots_hl7_facility: str = "FOLLOWUP"
    # MLLP over TLS to the hospital (its interface engine's CA, PEM): set to turn TLS on;
    # a client certificate and key for engines that ask for one (mutual TLS).
    slots_hl7_tls_ca: str = ""
    slots_hl7_tls_cert: str = ""
    slots_hl7_tls_key: str = ""
    slots_cache_minutes: float = Field(default=2.0, ge=0, le=15)
    slots_offered: int = Field(default=6, ge=1, le=20)
    slots_lead_hours: float = Field(default=2.0, ge=0)
    slots_horizon_days: float = Field(default=28.0, gt=0)
    rebook_link_days: float = Field(default=7.0, gt=0)
    # The links' host: a short one keeps the SMS within its segment budget (the link is
    # <base>/r/<12 characters>; SMS budgets are checked with it at start-up). Empty:
    # FOLLOWUP_PUBLIC_BASE_URL.
    rebook_base_url: str = ""
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
    # Provider calls under way at once per channel (each patient's still one at a time).
    dispatch_concurrency: int = Field(default=8, ge=1)
    # A graceful stop (SIGTERM) lets the sends under way finish for at most this long; keep
    # it below the platform's termination grace (Kubernetes: 30 s) minus the rest of stop.
    stop_grace_seconds: float = Field(default=20.0, ge=0)
    # Signed provider callbacks are remembered this long; a repeat has no effect (the
    # provider's signature carries no timestamp, so this is the replay window's bound).
    callback_retention_days: float = Field(default=400.0, gt=0)
    # Runaway guard: at most this many SMS+emails per patient per local day, whatever
    # asks for them (the scheduler's caps are lower; this is the last line of defence).
    runaway_cap_per_day: int = Field(default=4, ge=1)
    # Retention (issue 19): the doctor's notes in the ledger's commands after the send,
    # contacts with no change and no delivery, opt-outs of addresses no contact holds.
    retention_message_body_days: int = Field(default=30, ge=1)
    retention_contact_days: int = Field(default=365, ge=1)
    retention_opt_out_days: int = Field(default=730, ge=1)
    # Rebooking links after their expiry, and requests after they were made (docs/rebooking.md).
    retention_rebook_days: int = Field(default=30, ge=1)
    retention_sweep_seconds: float = Field(default=300.0, gt=0)
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
    # fhir_task sink: the hospital's FHIR R4 server (base URL ending before /Task).
    fhir_base_url: str | None = None
    fhir_token: str = ""  # bearer token, if the server asks for one
    fhir_poll_seconds: float = Field(default=30.0, ge=0)  # 0: do not read results back
    fhir_poll_lookback_hours: float = Field(default=24.0, ge=0)
    # Register an R4 rest-hook Subscription on Tasks: the server's notification makes the
    # next poll happen at once (polling stays the fallback and the truth).
    fhir_subscription: bool = False
    # caldav sink: the front desk's task list (a CalDAV calendar collection holding VTODOs).
    caldav_list_url: str | None = None
    caldav_username: str = ""
    caldav_password: str = ""
    caldav_poll_seconds: float = Field(default=60.0, ge=0)  # 0: do not read results back
    # Ticketing tools (jira, zendesk sinks): the doctor's notes stay out unless set.
    notes_in_tickets: bool = False
    jira_base_url: str | None = None  # https://<site>.atlassian.net
    jira_email: str = ""
    jira_api_token: str = ""
    jira_project_key: str = ""
    jira_issue_type: str = "Task"
    jira_withdraw_transition: str = "Cancel"
    jira_webhook_secret: str = ""  # the admin webhook's secret (X-Hub-Signature)
    zendesk_url: str | None = None  # https://<subdomain>.zendesk.com
    zendesk_email: str = ""
    zendesk_api_token: str = ""
    zendesk_webhook_secret: str = ""  # the webhook's signing secret
    zendesk_group_id: int | None = None
    # Chat sinks (slack, teams, mattermost): incoming-webhook URLs, and what a notice shows.
    slack_webhook_url: str | None = None
    teams_webhook_url: str | None = None
    mattermost_webhook_url: str | None = None
    chat_fields: str = "patient_id,reason,window,report_links"
    # The patient's chat messengers (issue 21); a messenger without its token is not
    # configured and its commands end failed/channel_not_configured.
    # WhatsApp Business Cloud API (Meta Graph API): POST {url}/{phone_number_id}/messages.
    whatsapp_url: str | None = None  # https://graph.facebook.com/v21.0
    whatsapp_phone_number_id: str = ""
    whatsapp_access_token: str = ""
    whatsapp_app_secret: str = ""  # checks X-Hub-Signature-256 of the webhooks
    whatsapp_verify_token: str = ""  # the webhook's GET verification (hub.verify_token)
    # Outside the 24-hour window only approved templates: reason -> template name (JSON),
    # and the one used for any other reason. Their body takes {{1}} the clinic's name and
    # {{2}} its phone: nothing about the patient or the visit.
    whatsapp_templates: dict[str, str] = Field(default_factory=dict)
    whatsapp_template_default: str = "care_follow_up"
    # Telegram Bot API: POST {url}/bot{token}/sendMessage; the webhook's secret_token.
    telegram_url: str | None = None  # https://api.telegram.org
    telegram_bot_token: str = ""
    telegram_webhook_secret: str = ""
    # Viber REST bot API: POST {url}/pa/send_message, X-Viber-Auth-Token.
    viber_url: str | None = None  # https://chatapi.viber.com
    viber_auth_token: str = ""
    viber_sender_name: str = "Clinic"  # the bot's name shown with each message (28 chars)
    # The stages explained per department (issue 21), for plans that carry no explanation
    # of their own: JSON {department: [{language, text, url}]} (schemas StageEducation).
    education: dict[str, list[StageEducation]] = Field(default_factory=dict)
    # Escalations go to the doctor or supervisor: their sinks (unset: the call-task sinks)
    # and addresses (unset: the front desk's, with a warning at start-up).
    escalation_sinks: str | None = None
    escalation_email: str | None = None
    escalation_webhook_url: str | None = None
    # The doctor's clinical notes in calendar copies (VTODO) and chat notices: off unless set.
    notes_in_calendar: bool = False
    notes_in_chat: bool = False

    def clinic_name_in(self, language: str) -> str:
        """The clinic's name as patients of ``language`` know it; empty when the site names
        none (the templates then write that language's generic word, phrases.clinic)."""
        return by_language(self.clinic_names, language) or self.clinic_name

    @property
    def admin_language(self) -> str:
        return self.clinic_language or self.default_language

    def sinks_for(self, purpose: str) -> list[str]:
        """The sink names a task of ``purpose`` goes to (withdrawals follow their task)."""
        names = self.call_task_sinks
        if purpose == "escalation" and self.escalation_sinks is not None:
            names = self.escalation_sinks
        return [n.strip() for n in names.split(",") if n.strip()]


def by_language(values: Mapping[str, str], language: str) -> str | None:
    """The value for ``language`` ("lt-LT"), else for its base language ("lt")."""
    return values.get(language) or values.get(language.split("-", 1)[0])
