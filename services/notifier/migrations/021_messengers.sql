-- Issue 21: the patient's chat messengers. Consent to each (off unless given) and the ids
-- Telegram and Viber know the patient by (WhatsApp writes to the phone number).
ALTER TABLE contacts ADD COLUMN consent_whatsapp boolean NOT NULL DEFAULT false;
ALTER TABLE contacts ADD COLUMN consent_telegram boolean NOT NULL DEFAULT false;
ALTER TABLE contacts ADD COLUMN consent_viber boolean NOT NULL DEFAULT false;
ALTER TABLE contacts ADD COLUMN telegram_chat_id text;
ALTER TABLE contacts ADD COLUMN viber_user_id text;
CREATE INDEX contacts_telegram ON contacts (telegram_chat_id);
CREATE INDEX contacts_viber ON contacts (viber_user_id);

-- When the patient last wrote to us on a messenger, by its address there: WhatsApp's
-- 24-hour customer-service window opens with each message the patient sends.
CREATE TABLE chat_sessions (
    channel          text NOT NULL,
    address          text NOT NULL,
    last_inbound_at  timestamptz NOT NULL,
    PRIMARY KEY (channel, address)
);
