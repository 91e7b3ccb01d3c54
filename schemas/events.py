"""One model per topic. These are the contracts the hospital's integrators read.

The JSON Schemas under ``schemas/json`` are generated from these models
(``make schemas``); a test fails when the two drift.
"""

from __future__ import annotations

import base64
from datetime import date
from typing import Annotated, Literal

from pydantic import AwareDatetime, Field, PositiveInt, StringConstraints, model_validator

from schemas.base import (
    Channel,
    Contract,
    Envelope,
    Id,
    Language,
    LongText,
    ShortText,
    TimeZoneName,
    TriggerKind,
)

# --- followup.appointments ---------------------------------------------------------------

AppointmentStatus = Literal[
    "proposed",
    "pending",
    "booked",
    "arrived",
    "checked-in",
    "fulfilled",
    "cancelled",
    "noshow",
    "entered-in-error",
    "waitlist",
]
AppointmentChange = Literal[
    "booked", "rescheduled", "modified", "cancelled", "deleted", "noshow", "status_changed"
]

# Statuses with which an event may name a visit by its id alone (no start).
ENDS_A_VISIT = frozenset(
    {"arrived", "checked-in", "fulfilled", "cancelled", "noshow", "entered-in-error"}
)


class AppointmentEvent(Envelope):
    """The canonical state of one appointment after a change (a full snapshot, not a diff)."""

    type: Literal["appointment"] = "appointment"
    change: AppointmentChange
    appointment_id: Id
    other_ids: list[Id] = Field(
        default_factory=list,
        max_length=4,
        description="Other ids of the same visit (HL7: the placer id beside the filler id); "
        "a later event naming any of them acts on the same visit.",
    )
    patient_id: Id
    start: AwareDatetime | None = Field(
        default=None,
        description="Required unless the event ends a visit already known by its id "
        "(status arrived, checked-in, fulfilled, cancelled, noshow or entered-in-error).",
    )
    end: AwareDatetime | None = None
    timezone: TimeZoneName = Field(description="The clinic's zone for this visit.")
    department: Id
    practitioner_id: Id | None = None
    status: AppointmentStatus
    status_at: AwareDatetime | None = Field(
        default=None, description="When the status took effect at the clinic (e.g. check-in)."
    )
    cancelled_by: Literal["patient", "clinic"] | None = None
    plan_id: Id | None = None
    stage_id: Id | None = None
    site: Id | None = Field(
        default=None,
        description="The clinic of a chain this visit belongs to (an id of the deployment's"
        " sites file); none in a deployment of one clinic. An unknown site is refused.",
    )

    @model_validator(mode="after")
    def _end_after_start(self) -> AppointmentEvent:
        if self.start is None:
            if self.status not in ENDS_A_VISIT:
                raise ValueError(f"start is required for status {self.status}")
            return self
        if self.end is not None and self.end < self.start:
            raise ValueError("end is before start")
        return self


# --- followup.plans ----------------------------------------------------------------------


HttpsUrl = Annotated[str, StringConstraints(max_length=500, pattern=r"^https://\S+$")]


class StageEducation(Contract):
    """What the patient is told about a stage, in one language: why it matters and what a
    delay means, in a sentence or two, and where to read more. Clinical content, not
    personal data; messages in ``language`` carry it (issue 21)."""

    language: Language
    text: Annotated[str, StringConstraints(min_length=1, max_length=300)] = Field(
        description="Why this stage matters, what happens if it is delayed (plain words)."
    )
    url: HttpsUrl | None = Field(
        default=None, description="An https link to read more (the clinic's page)."
    )


class TreatmentStage(Contract):
    stage_id: Id
    sequence: PositiveInt = Field(description="Order of the stage in the plan, from 1.")
    name: ShortText
    max_interval_days: PositiveInt | None = Field(
        default=None,
        description="The doctor's maximum interval after the previous stage, in days.",
    )
    notes: LongText | None = Field(default=None, description="The doctor's notes.")
    completed_at: AwareDatetime | None = None
    education: list[StageEducation] = Field(
        default_factory=list,
        max_length=10,
        description="For the patient: the stage explained, one entry per language.",
    )


class TreatmentPlanEvent(Envelope):
    type: Literal["treatment_plan"] = "treatment_plan"
    plan_id: Id
    patient_id: Id
    department: Id
    timezone: TimeZoneName
    responsible_practitioner_id: Id | None = Field(
        default=None,
        description="The doctor answerable for the plan (escalations go to them); none when"
        " the source names no practitioner (FHIR CarePlan.author is optional).",
    )
    supervisor_id: Id | None = None
    stages: list[TreatmentStage] = Field(min_length=1, max_length=50)
    site: Id | None = Field(default=None, description="The clinic of a chain the plan is kept at.")

    @model_validator(mode="after")
    def _ordered_stages(self) -> TreatmentPlanEvent:
        sequences = [s.sequence for s in self.stages]
        if sequences != sorted(set(sequences)):
            raise ValueError("stages must have unique, increasing sequence numbers")
        return self


# --- followup.contacts (compacted; the only topic with personal data) --------------------


class ChannelConsent(Contract):
    sms: bool = True
    email: bool = True
    call: bool = True
    # A messenger is used only when the patient agreed to it: off until given. null: the
    # source does not say (a scheduling system that knows nothing of messengers), and the
    # answer the notifier holds stays.
    whatsapp: bool | None = Field(
        default=None, description="May be written to on WhatsApp; null: not said here."
    )
    telegram: bool | None = Field(
        default=None, description="May be written to on Telegram; null: not said here."
    )
    viber: bool | None = Field(
        default=None, description="May be written to on Viber; null: not said here."
    )


class MessengerIds(Contract):
    """The patient's own ids on the messengers that have no phone-number address (WhatsApp
    writes to the phone number). Learnt when the patient opened the clinic's bot (the
    patient portal's enrolment); contact details, so on ``followup.contacts`` alone."""

    telegram_chat_id: Annotated[str, StringConstraints(pattern=r"^-?[0-9]{1,20}$")] | None = Field(
        default=None, description="Telegram Bot API chat id of the private chat."
    )
    viber_user_id: Id | None = Field(
        default=None, description="Viber user id the clinic's bot account was given."
    )


ContactField = Literal[
    "given_name",
    "family_name",
    "phone",
    "email",
    "language",
    "timezone",
    "consent",
    "status",
    "proxy",
    "messengers",
    "birth_date",
]

LocalTime = Annotated[str, StringConstraints(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")]


class ContactWindow(Contract):
    """When the patient wants to be contacted, in their own zone (``end`` before ``start``
    wraps past midnight). A limit inside the clinic's own hours, never beyond them."""

    start: LocalTime = Field(description="HH:MM, the patient's local time.")
    end: LocalTime = Field(description="HH:MM, the patient's local time.")


class ProxyContact(Contract):
    """Whom to write to or call instead of the patient: a guardian of a child, a carer, an
    attorney (HL7 NK1, FHIR Patient.contact / RelatedPerson). Messages to a proxy name no
    visit details; call tasks name the patient to the front desk only."""

    relationship: Literal["guardian", "parent", "caregiver", "attorney", "other"] = Field(
        description="HL7 NK1-3 / FHIR Patient.contact.relationship, as one of these."
    )
    given_name: ShortText | None = Field(default=None, description="The proxy's given name.")
    family_name: ShortText | None = Field(default=None, description="The proxy's family name.")
    phone: ShortText | None = Field(default=None, description="As received; normalised later.")
    email: ShortText | None = Field(default=None, description="The proxy's email address.")
    reason: Literal["minor", "named"] = Field(
        description="minor: the patient is a child; named: the patient named this proxy."
    )


class ContactEvent(Envelope):
    """Who the patient is and how to reach them. Read by the notifier alone."""

    type: Literal["contact"] = "contact"
    patient_id: Id
    given_name: ShortText | None = None
    family_name: ShortText | None = None
    phone: ShortText | None = Field(default=None, description="As received; normalised later.")
    email: ShortText | None = None
    language: Language = "en"
    timezone: TimeZoneName
    consent: ChannelConsent = ChannelConsent()
    status: Literal["active", "deceased", "transferred_out"] = "active"
    proxy: ProxyContact | None = Field(
        default=None, description="Contact the proxy instead of the patient (minor, named)."
    )
    messengers: MessengerIds | None = Field(
        default=None,
        description="The patient's Telegram and Viber ids, when enrolled; null: not said here"
        " (the ids the notifier holds stay, also in a full snapshot).",
    )
    birth_date: date | None = Field(
        default=None,
        description="HL7 PID-7 / FHIR Patient.birthDate. The tracker derives from it whether"
        " a proxy is a minor's guardian; the notifier keeps none of it (minimum data).",
    )
    fields_sent: list[ContactField] | None = Field(
        default=None,
        max_length=11,
        description="null: a full snapshot (every field as given). A list: only these fields "
        "carry news (a null among them clears the stored value); the others keep what is "
        "stored, as HL7 v2 leaves out what it does not send.",
    )


# --- followup.patients (ids and status only) ---------------------------------------------


class PatientStatusEvent(Envelope):
    """A patient who must no longer be contacted (or may be again), without personal data.

    The tracker derives it from HL7 PID-30 / ADT, FHIR Patient.deceased, or JSON; the
    scheduler closes open cases and withdraws what was planned. ``erased`` is an erasure
    request (GDPR art. 17): every service removes the patient's personal fields, keeps the
    ids, and contacts the patient no more until the hospital sends a newer contact.
    """

    type: Literal["patient_status"] = "patient_status"
    patient_id: Id
    status: Literal["active", "deceased", "transferred_out", "erased"]
    effective_at: AwareDatetime
    requested_by: Id | None = Field(
        default=None,
        description="For erased: who asked (an operator or a system id), for the audit trail.",
    )
    # Planning facts, not contact details (no name, number or address): how and when the
    # patient wants to be reached and their own zone, so the scheduler plans with them.
    timezone: TimeZoneName | None = Field(
        default=None, description="The patient's own zone (quiet hours), when known."
    )
    preferred_channel: Channel | None = Field(
        default=None, description="Tried first in the cadence whenever the clinic's rules allow."
    )
    contact_window: ContactWindow | None = Field(
        default=None, description="Messages and calls only inside it, within the clinic's rules."
    )
    birth_date: date | None = Field(
        default=None,
        description="HL7 PID-7 / FHIR Patient.birthDate, for the scheduler's rule on children"
        " who were not brought (its policy's safeguarding age). Kept by the scheduler beside"
        " the patient's status alone: never on a command, a call task, a log or a metric.",
    )
    fields_sent: list[Literal["birth_date"]] | None = Field(
        default=None,
        max_length=1,
        description='null: the status and every planning fact as given. ["birth_date"]: only'
        " the birth date is news (HL7 PID-7 of a message that says nothing of the status);"
        " the stored status, zone and preferences stay as they are.",
    )


# --- followup.triggers -------------------------------------------------------------------


class TriggerEvent(Envelope):
    """A fact the tracker detected. ``event_id`` is deterministic: a replay adds nothing."""

    type: Literal["trigger"] = "trigger"
    kind: TriggerKind
    patient_id: Id
    department: Id
    timezone: TimeZoneName
    appointment_id: Id | None = None
    appointment_start: AwareDatetime | None = None
    practitioner_id: Id | None = None
    plan_id: Id | None = None
    stage_id: Id | None = Field(default=None, description="The stage the patient should reach.")
    stage_deadline: AwareDatetime | None = None
    case_id: Id | None = Field(default=None, description="For unanswered_call: the case.")
    detected_at: AwareDatetime
    patient_timezone: TimeZoneName | None = Field(
        default=None,
        description="The patient's own zone (quiet hours), when known; `timezone` is the clinic's.",
    )
    site: Id | None = Field(
        default=None,
        description="The clinic of a chain the fact happened at (its profile's rules).",
    )


# --- followup.notifications --------------------------------------------------------------


OutcomeKind = Literal[
    # call results reported by an administrator
    "answered_rebooked",
    "answered_declined",
    "callback_requested",
    "no_answer",
    "busy",
    "voicemail",
    "wrong_number",
    # the patient reports a symptom or danger sign: the clinician on call, at once
    "clinical_concern",
    # delivery
    "task_created",
    "sent",
    "delivered",
    # a messenger's read receipt (WhatsApp read, Viber seen): a receipt, not a result
    "read",
    "failed",
    "channel_impossible",
    "bounced",
    # patient replies
    "reply",
    # rebooking by link (notifier): the patient opened the message's link; asked the
    # hospital for a slot (the case closes only when the hospital's booking arrives)
    "link_opened",
    "booking_requested",
    "opt_out",
    "opt_in",
    "help",
    # the patient's answer to the feedback question (rating 1-5, optional comment)
    "feedback",
    # corrections and withdrawals
    "withdrawn",
    "corrected",
]

# What the front desk may report after a call (the call-result endpoint accepts these only).
CALL_RESULTS: frozenset[OutcomeKind] = frozenset(
    {
        "answered_rebooked",
        "answered_declined",
        "callback_requested",
        "no_answer",
        "busy",
        "voicemail",
        "wrong_number",
        "clinical_concern",
    }
)


# Why a notification or call task exists: the case's own follow-up, an escalation to the
# doctor/supervisor, or the withdrawal of an earlier call task.
# ``feedback``: the one short question after a recovered visit was attended (issue 21).
Purpose = Literal["follow_up", "escalation", "withdrawal", "feedback"]


class AttemptSummary(Contract):
    attempt_number: PositiveInt
    channel: Channel
    at: AwareDatetime
    outcome: OutcomeKind | None = None


class RiskScore(Contract):
    """How likely the patient is lost, for ordering call tasks within a desk's capacity
    (higher first). ``score`` = 2 x earlier no-shows (at most 3) + attempts without an
    answer (at most 5) + 4 when the stage deadline is 2 days away or less, 2 within 7 days,
    1 within 14 + 2 for a visit of a treatment plan's stage. Inputs as counted."""

    score: int = Field(ge=0, description="The sum; higher is called first.")
    earlier_no_shows: int = Field(ge=0, description="The patient's no-shows before this case.")
    unanswered_attempts: int = Field(
        ge=0, description="Call tasks of this case that went out and got no answer."
    )
    days_to_deadline: int | None = Field(
        default=None, description="Whole days left to the stage deadline; none without one."
    )
    plan_stage: bool = Field(description="The case is about a stage of a treatment plan.")


class NotificationCommand(Envelope):
    """What the scheduler asks the notifier to do: one attempt of one case."""

    type: Literal["notification"] = "notification"
    idempotency_key: Id = Field(description="Derived from case and attempt number.")
    case_id: Id
    attempt_number: PositiveInt
    patient_id: Id
    purpose: Purpose = "follow_up"
    channel: Channel
    template: Id
    reason: TriggerKind
    department: Id
    timezone: TimeZoneName
    practitioner_id: Id | None = None
    escalate_to: Id | None = Field(default=None, description="Practitioner or supervisor id.")
    appointment_id: Id | None = None
    appointment_start: AwareDatetime | None = None
    plan_id: Id | None = None
    stage_id: Id | None = None
    stage_name: ShortText | None = None
    stage_deadline: AwareDatetime | None = None
    doctor_notes: LongText | None = None
    window_start: AwareDatetime = Field(description="Not before this moment.")
    window_end: AwareDatetime = Field(description="Useless after this moment.")
    previous_attempts: list[AttemptSummary] = Field(default_factory=list, max_length=100)
    education: list[StageEducation] = Field(
        default_factory=list,
        max_length=10,
        description="The stage explained for the patient (from the plan), one per language;"
        " the notifier writes the patient's language's, else the department's own.",
    )
    note: LongText | None = Field(
        default=None,
        description="An escalation of a clinical concern: what the administrator wrote on the"
        " call, for the clinician on call. Never logged.",
    )
    owner: Id | None = Field(
        default=None,
        description="Call tasks: who works it (the department's team, else the practitioner's"
        " team, else the clinic-wide pool); escalations: escalate_to.",
    )
    risk: RiskScore | None = Field(default=None, description="Call tasks: the case's risk.")
    site: Id | None = Field(
        default=None,
        description="The case's clinic of a chain: its name, phone, signature and call-task"
        " sinks; none in a deployment of one clinic.",
    )
    audience: Literal["patient", "guardian"] = Field(
        default="patient",
        description="guardian: the patient is a child (under the policy's safeguarding age);"
        " what the patient would read or hear addresses their parent or guardian.",
    )
    safeguarding: bool = Field(
        default=False,
        description="The case is a safeguarding case (a child not brought to repeated visits):"
        " its escalation goes to the safeguarding lead.",
    )


# --- followup.outcomes -------------------------------------------------------------------


class OutcomeEvent(Envelope):
    type: Literal["outcome"] = "outcome"
    outcome: OutcomeKind
    patient_id: Id
    channel: Channel
    case_id: Id | None = None
    attempt_number: PositiveInt | None = None
    idempotency_key: Id | None = None
    respond_by: AwareDatetime | None = Field(
        default=None, description="For task_created: when the call task's window ends."
    )
    detail: ShortText | None = Field(default=None, description="A reason code, never free text.")
    reported_by: Id | None = None
    note: LongText | None = Field(
        default=None,
        description="clinical_concern: what the administrator wrote (the symptom or danger"
        " sign), kept on the scheduler's case for the clinician on call; feedback: the"
        " patient's optional comment, for the clinic through the case API. Never logged.",
    )
    rating: int | None = Field(
        default=None, ge=1, le=5, description="feedback only: the patient's answer, 1 to 5."
    )

    @model_validator(mode="after")
    def _note_for_a_concern(self) -> OutcomeEvent:
        if self.note is not None and self.outcome not in ("clinical_concern", "feedback"):
            raise ValueError("note is only for the outcomes clinical_concern and feedback")
        if (self.rating is not None) != (self.outcome == "feedback"):
            raise ValueError("rating is needed for the outcome feedback, and only there")
        return self


# --- followup.calltasks (egress to the clinic's own tools) -------------------------------


class CallTaskEvent(Envelope):
    """A call task for the front desk. It must say whom to call, so it carries the contact
    details; the topic is an egress to the clinic's CRM connectors and is access-controlled."""

    type: Literal["call_task"] = "call_task"
    action: Literal["create", "withdraw"]
    task_id: Id
    case_id: Id
    attempt_number: PositiveInt
    patient_id: Id
    patient_name: ShortText | None = None
    phone: ShortText | None = None
    phone_shared: bool = False
    language: Language
    reason: TriggerKind
    purpose: Purpose = "follow_up"
    department: Id
    practitioner_id: Id | None = None
    stage_name: ShortText | None = None
    stage_deadline: AwareDatetime | None = None
    doctor_notes: LongText | None = None
    previous_attempts: list[AttemptSummary] = Field(default_factory=list, max_length=100)
    window_start: AwareDatetime
    window_end: AwareDatetime
    script: LongText
    report_url: ShortText | None = None
    report_links: dict[str, Annotated[str, StringConstraints(max_length=1000)]] = Field(
        default_factory=dict,
        max_length=20,
        description="One signed, expiring URL per result (rebooked, declined, no_answer,"
        " voicemail, wrong_number, call_back): it opens a page that records the result in one"
        " click. No personal data in the URL.",
    )
    note: LongText | None = Field(
        default=None, description="A clinical concern's escalation: what the administrator wrote."
    )
    owner: Id | None = Field(default=None, description="The team or pool that works the task.")
    risk: RiskScore | None = Field(default=None, description="The case's risk score and inputs.")
    site: Id | None = Field(default=None, description="The clinic of a chain whose desk calls.")
    safeguarding: bool = Field(
        default=False,
        description="A child not brought to repeated visits: the safeguarding lead's task.",
    )


# --- followup.deadletter -----------------------------------------------------------------


class DeadLetter(Envelope):
    """A message we could not use, kept with its original bytes so nothing is lost."""

    type: Literal["dead_letter"] = "dead_letter"
    patient_id: Id = Field(default="unknown", description="Unknown for bytes that never parsed.")
    source_topic: ShortText | None = None
    source_partition: int | None = None
    source_offset: int | None = None
    original_key_b64: str | None = Field(
        default=None, description="The original key, base64 (its first bytes if it was long)."
    )
    original_b64: str = Field(
        description="The original bytes, base64; only their first bytes when the record was "
        "larger than the configured limit (compare original_length), so a letter always fits."
    )
    original_length: int | None = Field(default=None, description="Length of the original bytes.")
    original_sha256: str | None = Field(
        default=None, description="SHA-256 of the whole original bytes, hex."
    )
    original_key_length: int | None = Field(default=None, description="Length of the original key.")
    reason: LongText = Field(description="Why it was refused; no personal data.")
    error_type: ShortText

    def key(self) -> bytes:
        # Keep the original key so a dead letter can be replayed onto the same partition.
        return base64.b64decode(self.original_key_b64) if self.original_key_b64 else b""
