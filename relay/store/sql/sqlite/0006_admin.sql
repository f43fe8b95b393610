-- Migration 6: the admin page and its API (issue 8). Every filter of the deliveries list
-- walks an index, so a page costs the same on a million rows as on a hundred
-- (tests/admin/test_history_queries.py reads the plans); and what operators do there
-- is kept, as an audit trail they can read.

CREATE INDEX deliveries_by_producer ON deliveries (producer_id, id);
CREATE INDEX deliveries_by_channel ON deliveries (channel, id);
-- A date bound becomes a range of ids: this finds the first id of a moment in one seek.
CREATE INDEX deliveries_by_created ON deliveries (created_at_ms);
-- events_by_transaction starts with the producer; the list filters by either alone.
CREATE INDEX events_by_transaction_code ON events (transaction_code);
CREATE INDEX events_by_hotmart_id ON events (hotmart_id);

-- What, which ids, when and from where; never a secret or a buyer's data.
CREATE TABLE audit_log (
    id            INTEGER PRIMARY KEY,
    at_ms         INTEGER NOT NULL,
    action        TEXT    NOT NULL,          -- replay | replay-failed | send-test | enable | ...
    via           TEXT    NOT NULL,          -- page | api
    remote        TEXT    NOT NULL DEFAULT '',
    producer_id   TEXT    NOT NULL DEFAULT '',
    target        TEXT    NOT NULL DEFAULT '',
    delivery_ids  TEXT    NOT NULL DEFAULT '[]',  -- a JSON array
    outcome       TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX audit_by_producer ON audit_log (producer_id, id);
