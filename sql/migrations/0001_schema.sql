-- 0001: the spec's write model (broker_connections, broker_orders, order_fills,
-- execution_reports) and read model (broker_performance, execution_quality_by_asset_class,
-- broker_latency_stats), plus the two tables the daemon's guarantees need (routed_orders,
-- execution_events).
--
-- Deviations from the spec, each for a reason:
-- * TIMESTAMPTZ everywhere instead of TIMESTAMP: a naive timestamp means a different instant on
--   hosts with different time zones; every value here is an instant.
-- * Enumerated columns carry CHECKs with the exact wire spellings (api/enums.py), and
--   quantities/prices carry range CHECKs: a bad row is refused by the database, whatever code
--   path tried to write it.
-- * Where the spec declares a plain index on a column that a new UNIQUE constraint starts with,
--   the constraint takes the spec's index name and replaces it: same lookups, one index fewer
--   on the write path (idx_broker_connections_broker_id, idx_broker_orders_order_id,
--   idx_order_fills_broker_order_id).

-- ---------------------------------------------------------------------------------------------
-- broker_connections
-- broker_id is UNIQUE: the spec's foreign keys reference broker_connections(broker_id), and
-- PostgreSQL refuses a foreign key to a column that is not unique.
-- credentials: always '{}' for now; secrets never reach the database in clear.
CREATE TABLE broker_connections (
    id VARCHAR(36) PRIMARY KEY,
    broker_id VARCHAR(36) NOT NULL,
    name VARCHAR(100) NOT NULL,
    status VARCHAR(20) NOT NULL,
    supported_asset_classes JSONB NOT NULL,
    features JSONB NOT NULL,
    commission_structure JSONB NOT NULL,
    credentials JSONB NOT NULL,
    connection_params JSONB NOT NULL,
    rate_limits JSONB NOT NULL,
    latency_stats JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    last_connected_at TIMESTAMPTZ,

    CONSTRAINT idx_broker_connections_broker_id UNIQUE (broker_id),
    CONSTRAINT ck_broker_connections_status
        CHECK (status IN ('CONNECTED', 'DISCONNECTED', 'DEGRADED', 'MAINTENANCE'))
);

CREATE INDEX idx_broker_connections_status ON broker_connections(status);

-- ---------------------------------------------------------------------------------------------
-- routed_orders (new): the idempotency record of each OMS order. order_id is the key: a second
-- RouteOrder with the same orderId finds this row and gets `response` (the first answer)
-- replayed. `response` is NULL while the first routing is still in progress. request_hash tells
-- a true repeat from a different order reusing the id.
CREATE TABLE routed_orders (
    order_id VARCHAR(36) PRIMARY KEY,
    routing_id VARCHAR(36) NOT NULL UNIQUE,
    request_hash TEXT NOT NULL,
    request JSONB NOT NULL,
    response JSONB,
    arrival_price DECIMAL(20, 8),
    received_at TIMESTAMPTZ NOT NULL,
    responded_at TIMESTAMPTZ,

    CONSTRAINT ck_routed_orders_arrival_price CHECK (arrival_price IS NULL OR arrival_price > 0),
    CONSTRAINT ck_routed_orders_responded CHECK ((response IS NULL) = (responded_at IS NULL))
);

-- ---------------------------------------------------------------------------------------------
-- broker_orders: one row per attempt of an OMS order at one broker (`id` is the execution id).
-- New columns:
-- * client_order_id: what the broker sees, fixed (and committed) before the broker is called,
--   so a retry or a reconciliation after a crash finds the same order at the broker.
-- * asset_class: what execution_quality_by_asset_class groups by (the spec guessed it from the
--   symbol's first three letters).
-- * attempt: 1 for the first broker, 2 for the failover after it, ...; UNIQUE(order_id, attempt).
-- * sequence: how many execution updates of this row were published (the outbox numbers them).
-- fees is NOT NULL DEFAULT 0: an order without fees has paid 0, not "unknown".
-- order_id references routed_orders: no attempt exists without its idempotency record.
CREATE TABLE broker_orders (
    id VARCHAR(36) PRIMARY KEY,
    order_id VARCHAR(36) NOT NULL,
    broker_id VARCHAR(36) NOT NULL,
    client_order_id VARCHAR(64) NOT NULL UNIQUE,
    broker_order_id VARCHAR(100),
    account_id VARCHAR(36) NOT NULL,
    symbol VARCHAR(20) NOT NULL,
    asset_class VARCHAR(10) NOT NULL,
    side VARCHAR(10) NOT NULL,
    order_type VARCHAR(15) NOT NULL,
    quantity DECIMAL(20, 8) NOT NULL,
    price DECIMAL(20, 8),
    stop_price DECIMAL(20, 8),
    time_in_force VARCHAR(10) NOT NULL,
    status VARCHAR(20) NOT NULL,
    filled_quantity DECIMAL(20, 8) NOT NULL DEFAULT 0,
    average_price DECIMAL(20, 8),
    fees DECIMAL(20, 8) NOT NULL DEFAULT 0,
    rejection_reason TEXT,
    execution_strategy VARCHAR(30) NOT NULL,
    urgency VARCHAR(10) NOT NULL,
    attempt SMALLINT NOT NULL DEFAULT 1,
    sequence INTEGER NOT NULL DEFAULT 0,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,

    CONSTRAINT fk_broker FOREIGN KEY (broker_id) REFERENCES broker_connections(broker_id),
    CONSTRAINT fk_routed_order FOREIGN KEY (order_id) REFERENCES routed_orders(order_id),
    -- Also serves every lookup by order_id (the spec's idx_broker_orders_order_id).
    CONSTRAINT idx_broker_orders_order_id UNIQUE (order_id, attempt),
    CONSTRAINT ck_broker_orders_quantity CHECK (quantity > 0),
    CONSTRAINT ck_broker_orders_filled_quantity CHECK (filled_quantity >= 0 AND filled_quantity <= quantity),
    CONSTRAINT ck_broker_orders_price CHECK (price IS NULL OR price > 0),
    CONSTRAINT ck_broker_orders_stop_price CHECK (stop_price IS NULL OR stop_price > 0),
    CONSTRAINT ck_broker_orders_average_price CHECK (average_price IS NULL OR average_price > 0),
    CONSTRAINT ck_broker_orders_fees CHECK (fees >= 0),
    CONSTRAINT ck_broker_orders_attempt CHECK (attempt >= 1),
    CONSTRAINT ck_broker_orders_sequence CHECK (sequence >= 0),
    CONSTRAINT ck_broker_orders_status CHECK (status IN
        ('PENDING', 'ACCEPTED', 'REJECTED', 'PARTIALLY_FILLED', 'FILLED', 'CANCELED', 'EXPIRED')),
    CONSTRAINT ck_broker_orders_side CHECK (side IN ('BUY', 'SELL')),
    CONSTRAINT ck_broker_orders_order_type CHECK (order_type IN ('MARKET', 'LIMIT', 'STOP', 'STOP_LIMIT')),
    CONSTRAINT ck_broker_orders_time_in_force CHECK (time_in_force IN ('DAY', 'GTC', 'IOC', 'FOK')),
    CONSTRAINT ck_broker_orders_execution_strategy CHECK (execution_strategy IN
        ('LOWEST_COST', 'FASTEST_EXECUTION', 'HIGHEST_FILL_PROBABILITY', 'MINIMAL_MARKET_IMPACT', 'SMART')),
    CONSTRAINT ck_broker_orders_urgency CHECK (urgency IN ('LOW', 'MEDIUM', 'HIGH', 'CRITICAL')),
    CONSTRAINT ck_broker_orders_asset_class CHECK (asset_class IN
        ('EQUITY', 'FOREX', 'CRYPTO', 'FUTURES', 'OPTIONS'))
);

CREATE INDEX idx_broker_orders_broker_id ON broker_orders(broker_id);
CREATE INDEX idx_broker_orders_account_id ON broker_orders(account_id);
CREATE INDEX idx_broker_orders_symbol ON broker_orders(symbol);
CREATE INDEX idx_broker_orders_status ON broker_orders(status);
CREATE INDEX idx_broker_orders_created_at ON broker_orders(created_at);

-- ---------------------------------------------------------------------------------------------
-- order_fills: `broker_order_id` is the execution id (broker_orders.id), as in the spec.
-- `id` is deterministic (uuid5 of broker id + broker fill id, computed by the caller) and
-- (broker_order_id, broker_fill_id) is UNIQUE: a fill reported twice (stream replay,
-- reconciliation) is stored once.
CREATE TABLE order_fills (
    id VARCHAR(36) PRIMARY KEY,
    broker_order_id VARCHAR(36) NOT NULL,
    broker_fill_id VARCHAR(100) NOT NULL,
    quantity DECIMAL(20, 8) NOT NULL,
    price DECIMAL(20, 8) NOT NULL,
    fees DECIMAL(20, 8) NOT NULL,
    timestamp TIMESTAMPTZ NOT NULL,
    venue VARCHAR(50) NOT NULL,

    CONSTRAINT fk_broker_order FOREIGN KEY (broker_order_id) REFERENCES broker_orders(id),
    -- Also serves every lookup by broker_order_id (the spec's idx_order_fills_broker_order_id).
    CONSTRAINT idx_order_fills_broker_order_id UNIQUE (broker_order_id, broker_fill_id),
    CONSTRAINT ck_order_fills_quantity CHECK (quantity > 0),
    CONSTRAINT ck_order_fills_price CHECK (price > 0)
);

CREATE INDEX idx_order_fills_timestamp ON order_fills(timestamp);

-- ---------------------------------------------------------------------------------------------
-- execution_events (new): the transactional outbox of published execution updates, and their
-- audit trail. An update is written in the same transaction as the state it describes; the
-- publisher sends unpublished rows (JetStream dedupes by msg_id, the Nats-Msg-Id) and then
-- sets published_at. payload is the exact JSON published, so a republish is byte-identical.
CREATE TABLE execution_events (
    execution_id VARCHAR(36) NOT NULL REFERENCES broker_orders(id),
    sequence INTEGER NOT NULL,
    subject TEXT NOT NULL,
    payload BYTEA NOT NULL,
    msg_id TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    published_at TIMESTAMPTZ,

    PRIMARY KEY (execution_id, sequence),
    CONSTRAINT ck_execution_events_sequence CHECK (sequence >= 1)
);

-- Small by construction (only rows still to publish): the publisher's scan stays cheap however
-- long the audit trail grows.
CREATE INDEX idx_execution_events_unpublished ON execution_events(created_at)
    WHERE published_at IS NULL;

-- ---------------------------------------------------------------------------------------------
-- execution_reports: as the spec, with TIMESTAMPTZ, foreign keys to unique columns, a foreign
-- key to routed_orders for order_id, and CHECKs on the enumerated columns.
CREATE TABLE execution_reports (
    id VARCHAR(36) PRIMARY KEY,
    order_id VARCHAR(36) NOT NULL,
    broker_order_id VARCHAR(36) NOT NULL,
    broker_id VARCHAR(36) NOT NULL,
    symbol VARCHAR(20) NOT NULL,
    side VARCHAR(10) NOT NULL,
    quantity DECIMAL(20, 8) NOT NULL,
    filled_quantity DECIMAL(20, 8) NOT NULL,
    average_price DECIMAL(20, 8) NOT NULL,
    benchmark_price DECIMAL(20, 8),
    benchmark_type VARCHAR(30) NOT NULL,
    slippage_bps FLOAT,
    market_impact_bps FLOAT,
    total_cost_bps FLOAT,
    execution_start TIMESTAMPTZ NOT NULL,
    execution_end TIMESTAMPTZ NOT NULL,
    execution_duration_ms BIGINT NOT NULL,
    execution_quality_score FLOAT,
    broker_performance_rank INTEGER,
    recommendations JSONB,
    created_at TIMESTAMPTZ NOT NULL,

    CONSTRAINT fk_broker_order FOREIGN KEY (broker_order_id) REFERENCES broker_orders(id),
    CONSTRAINT fk_broker FOREIGN KEY (broker_id) REFERENCES broker_connections(broker_id),
    CONSTRAINT fk_routed_order FOREIGN KEY (order_id) REFERENCES routed_orders(order_id),
    CONSTRAINT ck_execution_reports_side CHECK (side IN ('BUY', 'SELL')),
    CONSTRAINT ck_execution_reports_benchmark_type CHECK (benchmark_type IN
        ('ARRIVAL_PRICE', 'VWAP', 'TWAP', 'CLOSE_PRICE', 'IMPLEMENTATION_SHORTFALL')),
    CONSTRAINT ck_execution_reports_duration CHECK (execution_duration_ms >= 0)
);

CREATE INDEX idx_execution_reports_order_id ON execution_reports(order_id);
CREATE INDEX idx_execution_reports_broker_id ON execution_reports(broker_id);
CREATE INDEX idx_execution_reports_symbol ON execution_reports(symbol);
CREATE INDEX idx_execution_reports_execution_start ON execution_reports(execution_start);

-- ---------------------------------------------------------------------------------------------
-- broker_performance (view). Two fixes to the spec's query:
-- * it joined orders and reports in one LEFT JOIN chain, so an order with n reports counted n
--   times in fill_rate_percent; orders and reports are now aggregated separately per broker;
-- * it divided by COUNT(bo.id), which is 0 for a broker without orders (division by zero for
--   the whole view): NULLIF makes that broker's fill rate NULL.
CREATE VIEW broker_performance AS
SELECT
    b.broker_id,
    b.name,
    COALESCE(r.total_executions, 0) AS total_executions,
    r.avg_quality_score,
    r.avg_slippage_bps,
    r.avg_market_impact_bps,
    r.avg_total_cost_bps,
    r.avg_execution_duration_ms,
    o.filled_orders * 100.0 / NULLIF(o.total_orders, 0) AS fill_rate_percent
FROM
    broker_connections b
LEFT JOIN (
    SELECT
        broker_id,
        COUNT(*) AS total_orders,
        COUNT(*) FILTER (WHERE status = 'FILLED') AS filled_orders
    FROM broker_orders
    GROUP BY broker_id
) o ON o.broker_id = b.broker_id
LEFT JOIN (
    SELECT
        bo.broker_id,
        COUNT(e.id) AS total_executions,
        AVG(e.execution_quality_score) AS avg_quality_score,
        AVG(e.slippage_bps) AS avg_slippage_bps,
        AVG(e.market_impact_bps) AS avg_market_impact_bps,
        AVG(e.total_cost_bps) AS avg_total_cost_bps,
        AVG(e.execution_duration_ms) AS avg_execution_duration_ms
    FROM execution_reports e
    JOIN broker_orders bo ON bo.id = e.broker_order_id
    GROUP BY bo.broker_id
) r ON r.broker_id = b.broker_id;

-- ---------------------------------------------------------------------------------------------
-- execution_quality_by_asset_class (materialized view). Fixes:
-- * groups by broker_orders.asset_class (the spec's SUBSTRING(symbol, 1, 3) is the first three
--   letters of the ticker, not an asset class);
-- * orders and reports are aggregated separately (no double counting, as above), so a
--   (broker, asset class) pair with orders but no reports yet shows total_executions = 0;
-- * NULLIF guards the division.
-- The unique index lets REFRESH MATERIALIZED VIEW CONCURRENTLY run without blocking readers.
CREATE MATERIALIZED VIEW execution_quality_by_asset_class AS
SELECT
    b.broker_id,
    b.name,
    o.asset_class,
    COALESCE(r.total_executions, 0) AS total_executions,
    r.avg_quality_score,
    r.avg_slippage_bps,
    r.avg_market_impact_bps,
    r.avg_total_cost_bps,
    r.avg_execution_duration_ms,
    o.filled_orders * 100.0 / NULLIF(o.total_orders, 0) AS fill_rate_percent
FROM
    broker_connections b
JOIN (
    SELECT
        broker_id,
        asset_class,
        COUNT(*) AS total_orders,
        COUNT(*) FILTER (WHERE status = 'FILLED') AS filled_orders
    FROM broker_orders
    GROUP BY broker_id, asset_class
) o ON o.broker_id = b.broker_id
LEFT JOIN (
    SELECT
        bo.broker_id,
        bo.asset_class,
        COUNT(e.id) AS total_executions,
        AVG(e.execution_quality_score) AS avg_quality_score,
        AVG(e.slippage_bps) AS avg_slippage_bps,
        AVG(e.market_impact_bps) AS avg_market_impact_bps,
        AVG(e.total_cost_bps) AS avg_total_cost_bps,
        AVG(e.execution_duration_ms) AS avg_execution_duration_ms
    FROM execution_reports e
    JOIN broker_orders bo ON bo.id = e.broker_order_id
    GROUP BY bo.broker_id, bo.asset_class
) r ON r.broker_id = o.broker_id AND r.asset_class = o.asset_class;

CREATE UNIQUE INDEX idx_execution_quality_broker_asset
    ON execution_quality_by_asset_class(broker_id, asset_class);

-- ---------------------------------------------------------------------------------------------
-- broker_latency_stats (materialized view): as the spec (orders of the last 7 days at refresh
-- time), with NULLIF on the division and a unique index for concurrent refresh.
CREATE MATERIALIZED VIEW broker_latency_stats AS
SELECT
    b.broker_id,
    b.name,
    AVG(EXTRACT(EPOCH FROM (bo.updated_at - bo.created_at)) * 1000) AS avg_order_processing_ms,
    PERCENTILE_CONT(0.95) WITHIN GROUP (
        ORDER BY EXTRACT(EPOCH FROM (bo.updated_at - bo.created_at)) * 1000) AS p95_order_processing_ms,
    PERCENTILE_CONT(0.99) WITHIN GROUP (
        ORDER BY EXTRACT(EPOCH FROM (bo.updated_at - bo.created_at)) * 1000) AS p99_order_processing_ms,
    COUNT(bo.id) AS total_orders,
    COUNT(*) FILTER (WHERE bo.status = 'REJECTED') AS rejected_orders,
    COUNT(*) FILTER (WHERE bo.status = 'REJECTED') * 100.0 / NULLIF(COUNT(bo.id), 0)
        AS rejection_rate_percent
FROM
    broker_connections b
JOIN
    broker_orders bo ON b.broker_id = bo.broker_id
WHERE
    bo.created_at > NOW() - INTERVAL '7 days'
GROUP BY
    b.broker_id, b.name;

CREATE UNIQUE INDEX idx_broker_latency_stats_broker_id ON broker_latency_stats(broker_id);
