-- Migration 3: destinations are keyed by id, not by position (issue 7 §2).

-- Steps that need more than SQL and must run exactly once, recorded when they ran. The
-- first is the rekey of positional keys (`p/a/0`) to destination ids: only the config in
-- force at the first start after this upgrade knows which destination sat at index 0,
-- so the store runs it when it is opened with a config, not here.
CREATE TABLE one_time_steps (
    name        TEXT    PRIMARY KEY,
    done_at_ms  INTEGER NOT NULL,
    detail      TEXT    NOT NULL DEFAULT ''
);
