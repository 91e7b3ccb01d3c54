-- Issue 16: due work is claimed per lane (purpose, channel), taken in turn, so a backlog
-- in one lane (a department's 50,000 call tasks due at 09:00) does not hold back the SMS
-- and escalations falling due beside it. Each lane's walk is one range of this index.
CREATE INDEX attempts_due_by_lane ON attempts (purpose, channel, planned_at)
    WHERE state = 'planned';
-- The lanes' index answers the next due moment too (one probe per lane).
DROP INDEX attempts_due;
