-- The scheduler's own tables. Unqualified names: the pool's search_path is the schema.

-- One follow-up of one patient for one reason.
CREATE TABLE cases (
    case_id             text PRIMARY KEY,
    patient_id          text NOT NULL,
    reason              text NOT NULL,
    department          text NOT NULL,
    timezone            text NOT NULL,
    state               text NOT NULL CHECK (state IN ('open', 'contacting', 'escalating', 'closed')),
    resolution          text CHECK (resolution IN ('recovered', 'declined', 'opted_out',
                            'unreachable', 'escalated', 'superseded', 'deceased', 'transferred_out')),
    trigger_event_id    text NOT NULL,
    fact_at             timestamptz NOT NULL,   -- when the fact happened (the missed visit)
    opened_at           timestamptz NOT NULL,
    closed_at           timestamptz,
    appointment_id      text,
    appointment_start   timestamptz,
    practitioner_id     text,
    supervisor_id       text,
    plan_id             text,
    stage_id            text,
    stage_name          text,
    doctor_notes        text,
    stage_deadline      timestamptz,
    impossible_channels text[] NOT NULL DEFAULT '{}',
    first_contact_at    timestamptz,
    review_at           timestamptz,            -- when to look at the case again (no attempt planned)
    updated_at          timestamptz NOT NULL,
    CHECK ((state = 'closed') = (resolution IS NOT NULL))
);
-- A second trigger for the same patient and reason joins the open case.
CREATE UNIQUE INDEX cases_one_open_per_reason ON cases (patient_id, reason) WHERE state <> 'closed';
CREATE INDEX cases_review_due ON cases (review_at) WHERE review_at IS NOT NULL;
CREATE INDEX cases_by_opened ON cases (opened_at, case_id);
CREATE INDEX cases_by_state ON cases (state, opened_at, case_id);
CREATE INDEX cases_by_deadline ON cases (stage_deadline) WHERE state <> 'closed';
CREATE INDEX cases_by_plan ON cases (plan_id) WHERE state <> 'closed';

-- Every attempt: planned, then fired (its command is in the outbox) or cancelled.
CREATE TABLE attempts (
    case_id         text NOT NULL REFERENCES cases (case_id),
    attempt_number  integer NOT NULL CHECK (attempt_number > 0),
    purpose         text NOT NULL CHECK (purpose IN ('follow_up', 'escalation')),
    channel         text NOT NULL CHECK (channel IN ('sms', 'email', 'call_task')),
    template        text NOT NULL,
    escalate_to     text,
    state           text NOT NULL CHECK (state IN ('planned', 'fired', 'cancelled')),
    step_index      integer,
    tightened       boolean NOT NULL DEFAULT false,
    planned_at      timestamptz NOT NULL,
    window_end      timestamptz NOT NULL,
    fired_at        timestamptz,
    outcome         text,
    outcome_detail  text,
    outcome_at      timestamptz,
    withdrawn_at    timestamptz,
    PRIMARY KEY (case_id, attempt_number)
);
-- The firing query walks this index: its cost follows what is due, not what is open.
CREATE INDEX attempts_due ON attempts (planned_at) WHERE state = 'planned';

-- Commands written in the same transaction as the attempt; the relay publishes them.
CREATE TABLE outbox (
    id               bigserial PRIMARY KEY,
    idempotency_key  text NOT NULL UNIQUE,
    patient_id       text NOT NULL,
    payload          jsonb NOT NULL,
    created_at       timestamptz NOT NULL,
    published_at     timestamptz
);
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;

-- Consumed events, so that a redelivered message changes nothing.
CREATE TABLE processed_events (
    topic         text NOT NULL,
    event_id      text NOT NULL,
    processed_at  timestamptz NOT NULL,
    PRIMARY KEY (topic, event_id)
);

-- STOP on a channel holds for every case of the patient.
CREATE TABLE channel_opt_outs (
    patient_id    text NOT NULL,
    channel       text NOT NULL,
    opted_out_at  timestamptz NOT NULL,
    PRIMARY KEY (patient_id, channel)
);

CREATE TABLE plans (
    plan_id      text PRIMARY KEY,
    patient_id   text NOT NULL,
    department   text NOT NULL,
    occurred_at  timestamptz NOT NULL,
    payload      jsonb NOT NULL
);
CREATE INDEX plans_by_patient ON plans (patient_id);

-- Stage completions seen as fulfilled visits (the plan itself may not say so yet).
CREATE TABLE stage_completions (
    plan_id       text NOT NULL,
    stage_id      text NOT NULL,
    completed_at  timestamptz NOT NULL,
    PRIMARY KEY (plan_id, stage_id)
);

-- Every change of a case, for operators: ids and codes only.
CREATE TABLE case_history (
    id        bigserial PRIMARY KEY,
    case_id   text NOT NULL,
    at        timestamptz NOT NULL,
    event     text NOT NULL,
    state     text NOT NULL,
    detail    jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX case_history_by_case ON case_history (case_id, id);

-- Patients who must not be contacted any more (deceased, transferred out).
CREATE TABLE patient_status (
    patient_id    text PRIMARY KEY,
    status        text NOT NULL CHECK (status IN ('active', 'deceased', 'transferred_out')),
    effective_at  timestamptz NOT NULL
);
