-- Migrations and the settings of the PostgreSQL store.

-- name: schema_version_table
CREATE TABLE IF NOT EXISTS schema_version (
    version       INTEGER PRIMARY KEY,
    applied_at_ms BIGINT  NOT NULL
)

-- name: schema_version_exists
SELECT to_regclass('schema_version') IS NOT NULL

-- name: schema_version
SELECT COALESCE(MAX(version), 0) FROM schema_version

-- name: lock_migrations
-- Two instances started at once with --migrate: the second waits here, then finds the
-- migrations applied. A transaction-level lock, let go at COMMIT or ROLLBACK.
SELECT pg_advisory_xact_lock(:key::bigint)

-- name: record_migration
INSERT INTO schema_version (version, applied_at_ms) VALUES (:version::int, :now_ms::bigint)

-- name: notify
-- Wakes the dispatchers of every instance; delivered at COMMIT, never for a rollback.
SELECT pg_notify(:channel::text, '')
