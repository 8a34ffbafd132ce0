-- 0009: the claims still waiting for their answer, in a narrow table of their own (issue 11:
-- WAL per order). 0008 found them with a partial index on routed_orders (WHERE response IS
-- NULL); that index made every write of a response a non-HOT update that logged the whole
-- ~2 kB row again. A row here is inserted with the claim and deleted, in the same transaction,
-- when the answer is stored; the orphan sweeper (`sql.leases`) reads only this table and the
-- PENDING attempts. No foreign key: both sides are written by the same statements (sql.ops).
CREATE TABLE open_claims (
    order_id VARCHAR(36) PRIMARY KEY,
    received_at TIMESTAMPTZ NOT NULL
);

INSERT INTO open_claims (order_id, received_at)
SELECT order_id, received_at FROM routed_orders WHERE response IS NULL;

DROP INDEX idx_routed_orders_unanswered;
