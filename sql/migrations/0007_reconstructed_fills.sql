-- 0007: fills reconstructed from a broker's cumulative quantity (issue 10: "fills are never lost
-- to a reset or a gap"). When a broker's reports of some fills are gone (a FIX counterparty that
-- resets its sequence numbers discards the ExecutionReports it queued), recovery books the
-- difference between the broker's CumQty/AvgPx and the fills held as one fill, priced so that
-- the execution's average is the broker's. Such a fill is flagged here (and as `reconstructed`
-- in ExecutionDetails' fills and the published execution updates): it stands for executions
-- whose individual quantities, prices and fees were never reported.
-- Its broker_fill_id is "<client order id>:reconstructed:<cumulative quantity>", so the UNIQUE
-- (broker_order_id, broker_fill_id) constraint stores a repeated recovery once.
ALTER TABLE order_fills ADD COLUMN reconstructed BOOLEAN NOT NULL DEFAULT false;
