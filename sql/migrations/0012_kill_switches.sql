-- 0012: the kill switches (issue 13). One row per switch: the global one (scope GLOBAL,
-- account_id '') and one per account (scope ACCOUNT). An engaged switch refuses every new order
-- in its scope before routing; the row keeps its last position, why and who changed it.
-- Changes also go to kill_switch_changes, never updated: the audit trail an operator reads.
CREATE TABLE kill_switches (
    scope VARCHAR(10) NOT NULL,
    account_id VARCHAR(36) NOT NULL DEFAULT '',
    engaged BOOLEAN NOT NULL,
    reason TEXT,
    changed_by TEXT,
    changed_at TIMESTAMPTZ NOT NULL,

    PRIMARY KEY (scope, account_id),
    CONSTRAINT ck_kill_switches_scope CHECK (scope IN ('GLOBAL', 'ACCOUNT')),
    CONSTRAINT ck_kill_switches_account CHECK ((scope = 'GLOBAL') = (account_id = ''))
);

CREATE TABLE kill_switch_changes (
    id BIGSERIAL PRIMARY KEY,
    scope VARCHAR(10) NOT NULL,
    account_id VARCHAR(36) NOT NULL,
    engaged BOOLEAN NOT NULL,
    reason TEXT,
    changed_by TEXT,
    changed_at TIMESTAMPTZ NOT NULL
);

CREATE INDEX idx_kill_switch_changes_changed_at ON kill_switch_changes (changed_at);
