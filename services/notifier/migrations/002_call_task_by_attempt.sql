-- A withdrawal names the call task by its case and attempt number (its own idempotency
-- key is different, so it is not dropped as a repeat); this finds the task without a scan.
CREATE INDEX deliveries_case_attempt ON deliveries (case_id, attempt_number);
