-- Where each connector's read-back of a tool stopped (a CalDAV list's sync token, a FHIR
-- server's _lastUpdated cursor), per sink and tool address: a restarted notifier goes on
-- from there, so it neither misses what was completed while it was down (a cursor that
-- restarted "24 hours back") nor reads a whole list again.
CREATE TABLE tool_poll_positions (
    sink       text NOT NULL,
    source     text NOT NULL,
    position   text NOT NULL,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (sink, source)
);

-- Results read back from a tool and published (the report id <task>:<tool>:<outcome>): a
-- poll that reads one again (the cursor's overlap, a full resync, a restart) publishes
-- nothing. Written after the publish: a crash in between publishes the same event id again,
-- which the scheduler drops, and never loses the result.
CREATE TABLE tool_reports (
    report_id    text PRIMARY KEY,
    published_at timestamptz NOT NULL
);
CREATE INDEX tool_reports_age ON tool_reports (published_at);
