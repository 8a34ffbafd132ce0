-- 0017: fewer keys and checks written per order (issue 11: WAL and server CPU per order).
--
-- 1. execution_reports.id is the execution id (sql/reports.py has written broker_order_id into
--    both since 0004), so uq_execution_reports_execution indexed the primary key's values a
--    second time: one more index entry per report. The CHECK states the equality; the primary
--    key then makes broker_order_id unique. (The UPDATE aligns a row written otherwise by hand.)
UPDATE execution_reports SET id = broker_order_id WHERE id <> broker_order_id;
ALTER TABLE execution_reports
    ADD CONSTRAINT ck_execution_reports_id CHECK (id = broker_order_id),
    DROP CONSTRAINT uq_execution_reports_execution;

-- 2. The foreign keys this service added to the spec's, between rows its own statements write
--    together, go: broker_orders -> routed_orders, execution_reports -> routed_orders and
--    execution_events -> broker_orders. Each inserted child row ran a lookup of its parent and
--    locked it (FOR KEY SHARE, a WAL record each: ~3 per order on routed_orders and broker_orders).
--    What they guarded is guarded where the rows are written (sql/ops.py): a claim's execution,
--    open claim and first event are inserted only if the claim's routing row is there (scalar
--    subqueries on its key, in the same statement); a transition's event and fills go with the
--    UPDATE of their execution, which fails the transaction if the row is missing
--    (bis_missing); a report is written for an execution the daemon loaded. Rows are never
--    deleted from the parents. The spec's own foreign keys (to broker_connections, and
--    order_fills / execution_reports -> broker_orders) stay.
ALTER TABLE broker_orders DROP CONSTRAINT fk_routed_order;
ALTER TABLE execution_reports DROP CONSTRAINT fk_routed_order;
ALTER TABLE execution_events DROP CONSTRAINT execution_events_execution_id_fkey;
