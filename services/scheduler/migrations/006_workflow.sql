-- Issue 18: a clinical concern reported on a call. The administrator's note is kept on the
-- case alone (for the clinician on call's escalation task): never in history, logs or metrics.
ALTER TABLE cases ADD COLUMN concern_at timestamptz;
ALTER TABLE cases ADD COLUMN concern_note text;
