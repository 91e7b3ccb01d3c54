-- Issue 21: the patient's chat messengers are channels too (schemas.base.Channel).
ALTER TABLE attempts DROP CONSTRAINT IF EXISTS attempts_channel_check;
ALTER TABLE attempts ADD CONSTRAINT attempts_channel_check
    CHECK (channel IN ('sms', 'email', 'call_task', 'whatsapp', 'telegram', 'viber'));
