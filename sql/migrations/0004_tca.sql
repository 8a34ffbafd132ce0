-- 0004: transaction cost analysis online (issue 5).
--
-- execution_reports gains what the TCA literature needs beyond the spec's columns, so a later
-- request (any benchmark, after a restart) is answered from the row alone:
-- * one report per execution: broker_order_id (= broker_orders.id, the execution id) UNIQUE;
-- * the peer dimensions: asset_class, order_type, strategy, size_bucket, executed_notional,
--   fees, arrival_price, arrival_cost_bps (slippage vs arrival plus fees: what broker ranks,
--   savings and recommendations compare);
-- * every benchmark price (benchmarks), Perold's shortfall with Wagner's split (shortfall), the
--   measures that could not be computed and why (unavailable);
-- * market_window: the quotes and trades of the order's window (plus what prevailed at its
--   start), compressed, so the VWAP/TWAP/quality score can be recomputed when the in-memory
--   tapes no longer hold them.
ALTER TABLE execution_reports
    ADD COLUMN asset_class VARCHAR(20),
    ADD COLUMN order_type VARCHAR(20),
    ADD COLUMN strategy VARCHAR(30),
    ADD COLUMN size_bucket SMALLINT,
    ADD COLUMN executed_notional DECIMAL(28, 8),
    ADD COLUMN fees DECIMAL(20, 8),
    ADD COLUMN arrival_price DECIMAL(20, 8),
    ADD COLUMN arrival_cost_bps FLOAT,
    ADD COLUMN end_price DECIMAL(20, 8),
    ADD COLUMN benchmarks JSONB,
    ADD COLUMN shortfall JSONB,
    ADD COLUMN unavailable JSONB,
    ADD COLUMN market_window BYTEA,
    ADD CONSTRAINT uq_execution_reports_execution UNIQUE (broker_order_id),
    ADD CONSTRAINT ck_execution_reports_asset_class CHECK (asset_class IN
        ('EQUITY', 'FOREX', 'CRYPTO', 'FUTURES', 'OPTIONS'));

CREATE INDEX idx_execution_reports_peers ON execution_reports (asset_class, created_at);

-- The official close per symbol and trade date (CLOSE_PRICE benchmark), from the market-data
-- close messages: kept here so a TCA request after a restart still has it.
CREATE TABLE market_closes (
    symbol VARCHAR(20) NOT NULL,
    trade_date DATE NOT NULL,
    price DECIMAL(20, 8) NOT NULL,
    received_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (symbol, trade_date),
    CONSTRAINT ck_market_closes_price CHECK (price > 0)
);
