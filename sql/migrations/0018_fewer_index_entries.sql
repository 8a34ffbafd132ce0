-- 0018: two index entries fewer per order (issue 11: WAL and server CPU per order).
--
-- 1. routed_orders.routing_id loses its UNIQUE index. Nothing looks an order up by routing id
--    (every read and every claim guard goes by order_id, the primary key); the id is a random
--    UUID the daemon draws once per order, stored with the claim and replayed in its answer.
ALTER TABLE routed_orders DROP CONSTRAINT routed_orders_routing_id_key;

-- 2. The peer statistics' reload (every 5 minutes: the reports of the last 30 days, by
--    created_at) used a B-tree on (asset_class, created_at), which cannot seek to a time range
--    across asset classes, at the cost of one entry per report. Reports are appended in
--    created_at order, so a BRIN index (one summary per 128 pages, written when VACUUM
--    summarises a range, not per row) finds the range for next to nothing.
DROP INDEX idx_execution_reports_peers;
CREATE INDEX idx_execution_reports_created_at_brin ON execution_reports USING brin (created_at);
