-- 0002: what broker supervision needs to survive a restart: the history of each broker's
-- connection status (for the BrokerStatus `uptime` over the last 24 hours) and the maintenance
-- flag an operator sets. broker_connections' runtime columns (status, latency_stats,
-- last_connected_at) already exist; the daemon now writes them back as they change.

-- ---------------------------------------------------------------------------------------------
-- broker_connections: the maintenance flag, set and cleared only by an operator (the store's
-- set_maintenance), never by a configuration reload (upsert_brokers does not touch these
-- columns): a broker put in maintenance stays there across restarts until it is cleared.
-- * maintenance: the broker takes no new orders while true. NOT NULL DEFAULT false: every
--   existing broker starts out of maintenance (a constant default: PostgreSQL adds the column
--   without rewriting the table).
-- * maintenance_reason: free text from the operator (why, ticket, ...); NULL when none given,
--   always NULL out of maintenance.
-- * maintenance_since: when the current maintenance began; set exactly while in maintenance.
ALTER TABLE broker_connections
    ADD COLUMN maintenance BOOLEAN NOT NULL DEFAULT false,
    ADD COLUMN maintenance_reason TEXT,
    ADD COLUMN maintenance_since TIMESTAMPTZ,
    ADD CONSTRAINT ck_broker_connections_maintenance_since
        CHECK (maintenance = (maintenance_since IS NOT NULL)),
    ADD CONSTRAINT ck_broker_connections_maintenance_reason
        CHECK (maintenance OR maintenance_reason IS NULL);

-- ---------------------------------------------------------------------------------------------
-- broker_status_transitions (new): one row per change of a broker's connection status, append
-- only. A status holds from its row's `at` until the broker's next row, so the uptime over a
-- window needs the rows inside it plus the last one before it (the state at its start).
-- * id: insertion order; orders two changes recorded at the same instant (the later wins).
-- * status: the ConnectionStatus entered, with the wire spellings (api/enums.py).
-- * at: when the broker entered that status (the daemon's clock, not the commit time).
-- * reason: why (error message, operator's note); NULL when there is nothing to say.
-- Old rows are pruned, except each broker's last change before the cut-off, which still says
-- what the status was from the cut-off on.
CREATE TABLE broker_status_transitions (
    id BIGSERIAL PRIMARY KEY,
    broker_id VARCHAR(36) NOT NULL,
    status VARCHAR(20) NOT NULL,
    at TIMESTAMPTZ NOT NULL,
    reason TEXT,

    CONSTRAINT fk_broker FOREIGN KEY (broker_id) REFERENCES broker_connections(broker_id),
    CONSTRAINT ck_broker_status_transitions_status
        CHECK (status IN ('CONNECTED', 'DISCONNECTED', 'DEGRADED', 'MAINTENANCE'))
);

-- A broker's history over a window, the last change before a time (backwards scan) and the
-- pruning all read (broker_id, at) ranges.
CREATE INDEX idx_broker_status_transitions_broker_at ON broker_status_transitions(broker_id, at);
