-- Migration 2: leases become fences (issue 6, defect 4), and readiness gets a write probe.

-- The claim that holds a row's lease. Outcome writes present it and apply only while the
-- row still holds it, so a holder whose lease was taken over can never record an attempt.
ALTER TABLE deliveries ADD COLUMN lease_token TEXT;
-- Who holds the lease: "serve", or "cli:<pid>" for a replay run by the CLI alone. A serve
-- start releases only what an earlier serve held; other leases run out by time.
ALTER TABLE deliveries ADD COLUMN lease_owner TEXT;
-- When the first lease runs out, without reading the backlog (next_due).
CREATE INDEX deliveries_leased ON deliveries (lease_until_ms)
    WHERE status = 'pending' AND lease_until_ms IS NOT NULL;

-- One row, rewritten by the readiness probe: a cheap proof that the store can write.
CREATE TABLE write_probe (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    written_at_ms INTEGER NOT NULL
);
