-- Migration 1: the whole outbox. Designed up front for attempts, destination health,
-- history filters (indexes below) and future scheduled deliveries (next_attempt_at_ms).

CREATE TABLE events (
    id              INTEGER PRIMARY KEY,
    producer_id     TEXT    NOT NULL,
    hotmart_id      TEXT    NOT NULL,          -- Hotmart's event id; the idempotency key
    event_name      TEXT    NOT NULL,
    source          TEXT    NOT NULL,          -- "2.0.0" | "v1" | "send-test"
    outcome         TEXT    NOT NULL,          -- accepted | ignored
    transaction_code TEXT   NOT NULL DEFAULT '',
    product_id      TEXT    NOT NULL DEFAULT '',
    payload_json    TEXT    NOT NULL,          -- the normalised Event; buyer fields scrubbed by purge
    received_at_ms  INTEGER NOT NULL,
    scrubbed_at_ms  INTEGER,
    UNIQUE (producer_id, hotmart_id)
);
-- Sale recovery (roadmap): find every event of one transaction.
CREATE INDEX events_by_transaction ON events (producer_id, transaction_code);
CREATE INDEX events_by_time ON events (received_at_ms);

-- One row per decision: deliverable rows move pending -> delivered | failed | skipped;
-- withheld / skipped / ignored rows are born final and say why in `reason`.
CREATE TABLE deliveries (
    id                 INTEGER PRIMARY KEY,
    event_id           INTEGER NOT NULL REFERENCES events (id),
    kind               TEXT    NOT NULL DEFAULT 'notification',  -- notification | test | alert
    producer_id        TEXT    NOT NULL,
    affiliate_code     TEXT    NOT NULL DEFAULT '',
    destination_key    TEXT,                  -- producer/affiliate/index; NULL when no destination
    channel            TEXT,                  -- email | webhook
    event_name         TEXT    NOT NULL,
    status             TEXT    NOT NULL,      -- pending | delivered | failed | withheld | skipped | ignored
    reason             TEXT    NOT NULL DEFAULT '',
    message_id         TEXT    NOT NULL,      -- webhook-id and Message-ID: the same on every attempt
    attempts           INTEGER NOT NULL DEFAULT 0,
    replayed_after     INTEGER NOT NULL DEFAULT 0,  -- attempts made before the last replay
    next_attempt_at_ms INTEGER,               -- due time while pending; may lie in the future
    lease_until_ms     INTEGER,               -- claimed by a dispatcher until then
    last_error         TEXT    NOT NULL DEFAULT '',
    created_at_ms      INTEGER NOT NULL,
    updated_at_ms      INTEGER NOT NULL
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at_ms) WHERE status = 'pending';
CREATE INDEX deliveries_by_event ON deliveries (event_id);
CREATE INDEX deliveries_by_status ON deliveries (status, id);
CREATE INDEX deliveries_by_affiliate ON deliveries (affiliate_code, id);
CREATE INDEX deliveries_by_event_name ON deliveries (event_name, id);
CREATE INDEX deliveries_by_destination ON deliveries (destination_key, status);

CREATE TABLE attempts (
    id               INTEGER PRIMARY KEY,
    delivery_id      INTEGER NOT NULL REFERENCES deliveries (id),
    attempt_no       INTEGER NOT NULL,
    started_at_ms    INTEGER NOT NULL,
    latency_ms       REAL    NOT NULL,
    outcome          TEXT    NOT NULL,        -- success | transient | permanent
    status_code      INTEGER,                 -- HTTP status or SMTP reply code
    response_excerpt TEXT    NOT NULL DEFAULT '',
    response_headers TEXT    NOT NULL DEFAULT '{}',
    request_payload  TEXT    NOT NULL DEFAULT '',  -- what was sent; scrubbed by purge
    detail           TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX attempts_by_delivery ON attempts (delivery_id, attempt_no);

CREATE TABLE destinations (
    key                  TEXT    PRIMARY KEY,
    enabled              INTEGER NOT NULL DEFAULT 1,
    disabled_reason      TEXT    NOT NULL DEFAULT '',
    disabled_at_ms       INTEGER,
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    last_success_at_ms   INTEGER,
    last_error           TEXT    NOT NULL DEFAULT '',
    last_error_at_ms     INTEGER,
    alerted_at_ms        INTEGER               -- the producer was told of the last disabling
);
