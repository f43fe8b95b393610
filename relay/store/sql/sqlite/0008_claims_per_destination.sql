-- Migration 8: a claim that costs the same at any backlog (issue 10).
--
-- The old claim walked the due index in due order across all destinations: its cost grew
-- with the backlog, and bounding the walk let one destination's rows fill the window
-- (head-of-line blocking). Now a claim works per destination:
--
--   destination_queue   one row per destination that may have claimable work, with a
--                       lower bound of when its first claimable row falls due. A claim
--                       reads only the due ones, so it never looks at the backlog.
--   deliveries_pending_by_destination
--                       each destination's pending rows in due order: a claim takes the
--                       head of each destination's own range, oldest first.
--
-- The invariant (kept by the trigger below and the inserts, relied on by `claim_due`): every pending,
-- unleased row's destination has a queue row whose next_due_ms is no later than the row's
-- due time. The bound may be early (a row settled elsewhere, a rekeyed key): the next claim
-- that visits the destination reads its true head and moves the bound, or drops the row.
-- Leased rows are not in the invariant: a released lease fires the update trigger, and a
-- lease that simply runs out is found by the claim's lease-expiry query (deliveries_leased).

CREATE INDEX deliveries_pending_by_destination
    ON deliveries (destination_key, next_attempt_at_ms) WHERE status = 'pending';

CREATE TABLE destination_queue (
    key          TEXT    PRIMARY KEY,
    next_due_ms  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX destination_queue_by_due ON destination_queue (next_due_ms, key);

-- A row becomes claimable when it is inserted pending (the writes that insert rows move
-- the bound themselves: `queue_destinations` in queries.sql), or updated to pending, to an
-- earlier due time, out of its lease, or to another destination (this trigger). An insert
-- trigger was measured and dropped: a statement that fires a writing trigger needs a
-- statement journal, a temp file here, and ingest's INSERT went from about 40 to about
-- 110 us per event. An UPDATE that leaves its row unclaimable (a lease taken, a row sent)
-- never gets past the WHEN, and costs nothing measurable. The upsert only ever moves a
-- bound earlier; when the bound is already earlier it reads one row and writes nothing.
CREATE TRIGGER destination_queue_on_update
AFTER UPDATE OF status, next_attempt_at_ms, lease_until_ms, destination_key ON deliveries
WHEN NEW.status = 'pending' AND NEW.destination_key IS NOT NULL
     AND NEW.next_attempt_at_ms IS NOT NULL AND NEW.lease_until_ms IS NULL
BEGIN
    INSERT INTO destination_queue (key, next_due_ms)
    VALUES (NEW.destination_key, NEW.next_attempt_at_ms)
    ON CONFLICT (key) DO UPDATE SET next_due_ms = excluded.next_due_ms
    WHERE excluded.next_due_ms < destination_queue.next_due_ms;
END;

-- What is pending now, leased or not (an early bound is allowed).
INSERT INTO destination_queue (key, next_due_ms)
SELECT destination_key, MIN(next_attempt_at_ms) FROM deliveries
WHERE status = 'pending' AND destination_key IS NOT NULL AND next_attempt_at_ms IS NOT NULL
GROUP BY destination_key;
