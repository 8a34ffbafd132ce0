-- 0003: the routing decision of each order (issue 4), stored with its idempotency row in the
-- claim's transaction: the strategy and urgency, every eligible broker ranked with its score and
-- components, every ineligible broker with its reason (api.contracts.RoutingDecision as JSON).
-- In routed_orders rather than a table of its own: one decision per order, written in the same
-- INSERT as the claim (no extra statement on the order path), read by GetExecution.
ALTER TABLE routed_orders ADD COLUMN routing_decision JSONB;
-- Which broker each decision chose, for "how often did X win" without parsing the JSON.
ALTER TABLE routed_orders ADD COLUMN chosen_broker VARCHAR(50);
CREATE INDEX idx_routed_orders_chosen_broker ON routed_orders (chosen_broker, received_at);
