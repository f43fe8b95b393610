-- The statements that set up a connection and frame each transaction. A PRAGMA takes no
-- bound parameters, so the few values these need are integers put in with
-- str.format ({name}), never text.

-- name: busy_timeout
PRAGMA busy_timeout = {ms};

-- name: journal_mode
PRAGMA journal_mode = WAL;

-- name: foreign_keys
PRAGMA foreign_keys = ON;

-- name: secure_delete
-- Zero what SQLite frees (a rewritten row's old bytes, freed pages) instead of leaving it
-- on disk: a purge must leave no copy of the buyer data it scrubbed. Freed space is rare
-- here (rows are inserted, and rewritten only by status updates and purge).
PRAGMA secure_delete = ON;

-- name: schema_version_table
CREATE TABLE IF NOT EXISTS schema_version (
    version       INTEGER PRIMARY KEY,
    applied_at_ms INTEGER NOT NULL
);

-- name: schema_version
SELECT COALESCE(MAX(version), 0) AS version FROM schema_version;

-- name: apply_migration
-- One migration script (a file of sql/) and its version, in one transaction.
BEGIN IMMEDIATE;
{script}
INSERT INTO schema_version VALUES ({version}, {now_ms});
COMMIT;

-- name: synchronous_full
PRAGMA synchronous = FULL;

-- name: synchronous_normal
PRAGMA synchronous = NORMAL;

-- name: begin
BEGIN IMMEDIATE;

-- name: commit
COMMIT;

-- name: rollback
ROLLBACK;
