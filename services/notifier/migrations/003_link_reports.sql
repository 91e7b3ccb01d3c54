-- One call result per task through the signed report links: the first click records it,
-- a second click (or another link of the same task) finds it and changes nothing.
CREATE TABLE link_reports (
    task_id     text PRIMARY KEY,
    outcome     text NOT NULL,
    recorded_at timestamptz NOT NULL
);
