-- Migration 7: sale recovery (issue 11).

-- What a notification says: slip, reminder, paid, expired, or event (any other subscribed
-- event). NULL for an alert, which goes to the producer. A reminder is a notification of
-- its slip's event with a due time in the future (next_attempt_at_ms).
ALTER TABLE deliveries ADD COLUMN notification TEXT;
UPDATE deliveries
SET notification = CASE WHEN event_name = 'PURCHASE_BILLET_PRINTED' THEN 'slip' ELSE 'event' END
WHERE kind IN ('notification', 'test');

-- The recovery report walks the slips notified in a window (`recovery_figures`), not
-- the whole history: a partial index holds the slip notifications only.
CREATE INDEX deliveries_slip_notices ON deliveries (created_at_ms)
    WHERE notification = 'slip' AND kind = 'notification';
