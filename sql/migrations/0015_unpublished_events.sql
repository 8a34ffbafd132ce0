-- 0015: the outbox's "still to publish" becomes a narrow table of its own (issue 11: WAL per
-- order), as open_claims (0009) did for unanswered claims.
--
-- Why: execution_events rows (~550 bytes: the update's exact JSON) were written once and then
-- updated once, ~20 ms later, to set published_at. That update could not be HOT (published_at
-- is in the predicate of the partial index idx_execution_events_unpublished) and often found no
-- room on the page: it logged the row again, a new primary-key entry, and before moving the row
-- a lock record — ~600 B of WAL per update, two updates per order in bench/route.py. An outbox
-- row is now written once and never changed: "still to publish" is a row here (~250 B of WAL to
-- insert, index and delete), inserted in the same statement as the event (sql/ops.py) and
-- deleted when the publisher has the stream's acknowledgement.
--
-- execution_events.published_at goes: when an update reached the stream is the stream's to say
-- (each message carries its own timestamp); whether it did is whether its row is still here.
CREATE TABLE unpublished_events (
    execution_id VARCHAR(36) NOT NULL,
    sequence INTEGER NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (execution_id, sequence)
);

INSERT INTO unpublished_events (execution_id, sequence, created_at)
SELECT execution_id, sequence, created_at FROM execution_events WHERE published_at IS NULL;

DROP INDEX idx_execution_events_unpublished;
ALTER TABLE execution_events DROP COLUMN published_at;
-- Rows are never updated now: full pages again (0011 kept a quarter free for the update).
ALTER TABLE execution_events SET (fillfactor = 100);
