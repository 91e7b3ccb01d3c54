-- Retention: consumed-event notes and published commands are pruned after some days.
CREATE INDEX processed_events_by_age ON processed_events (processed_at);
CREATE INDEX outbox_published_by_age ON outbox (published_at) WHERE published_at IS NOT NULL;
