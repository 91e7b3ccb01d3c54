-- Signed provider callbacks already acted on (replay protection): a Twilio-style signature
-- has no timestamp, so a captured request stays valid forever; its key (the MessageSid of
-- an inbound SMS, a hash of a status callback) is remembered for the retention period and
-- a repeat is acknowledged without effect.
CREATE TABLE seen_callbacks (
    key     text PRIMARY KEY,
    seen_at timestamptz NOT NULL
);
CREATE INDEX seen_callbacks_age ON seen_callbacks (seen_at);
