-- Migration 5: retention (issue 8). The daily purge looks for events past retention that
-- still hold buyer data. Without this index it would walk every event ever scrubbed, each
-- day, through events_by_time; a partial index holds only the unscrubbed ones, so the walk
-- costs what there is to purge. Numbered 9, not 3: other migrations land in parallel.
CREATE INDEX events_unscrubbed ON events (received_at_ms) WHERE scrubbed_at_ms IS NULL;
