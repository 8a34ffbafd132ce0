-- 0008: daemon leases and claim owners (issue 10: "every claimed order reaches an answer").
--
-- Every running daemon has a row in `daemons` (one per process run) whose `seen_at` it renews
-- every few seconds: its lease. A daemon that stops cleanly ends its lease; one that dies stops
-- renewing it. `routed_orders.owner` is the daemon that claimed (or took over) the order. A
-- claim still unanswered, or an attempt still PENDING, whose owner's lease has lapsed is taken
-- over by a live daemon (`nursery.orphans`): it asks the broker and records the answer, so the
-- OMS's retry with the same orderId gets one. Rows claimed before this migration have no owner
-- and count as orphans.
CREATE TABLE daemons (
    id VARCHAR(36) PRIMARY KEY,
    instance_id TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    state_dir TEXT NOT NULL,
    started_at TIMESTAMPTZ NOT NULL,
    seen_at TIMESTAMPTZ NOT NULL,
    stopped_at TIMESTAMPTZ
);

CREATE INDEX idx_daemons_seat ON daemons (host, state_dir);

ALTER TABLE routed_orders ADD COLUMN owner VARCHAR(36);

-- Only claims still waiting for their answer: small by construction, swept every few seconds.
CREATE INDEX idx_routed_orders_unanswered ON routed_orders (received_at) WHERE response IS NULL;
