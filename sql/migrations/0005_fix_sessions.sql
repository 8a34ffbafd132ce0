-- 0005: what a FIX session (adapters/fix) must keep across restarts of the daemon: its sequence
-- numbers, the application messages it sent (to answer the counterparty's ResendRequest), and
-- the execution reports it received (ExecID dedup, open orders and fills for reconciliation).
-- Rows are written only by adapters/fix/store.py.

-- ---------------------------------------------------------------------------------------------
-- fix_sessions: one row per FIX session, keyed "FIX.4.4:SENDER->TARGET" (QuickFIX's spelling).
-- * epoch: incremented by every sequence reset (ResetSeqNumFlag on logon): the messages of an
--   earlier epoch keep their rows but can never be resent.
-- * next_out_seq: the MsgSeqNum our next message will carry. An outgoing message's number is
--   committed here (with a guard that it is still the expected one) before its bytes are
--   written to the socket: a number is never used twice, even across a crash.
-- * next_in_seq: the MsgSeqNum expected from the counterparty, committed after the message
--   before it was processed (a crash in between costs a resend, never a lost message).
CREATE TABLE fix_sessions (
    session_id VARCHAR(120) PRIMARY KEY,
    sender_comp_id VARCHAR(50) NOT NULL,
    target_comp_id VARCHAR(50) NOT NULL,
    epoch INTEGER NOT NULL DEFAULT 1,
    next_out_seq BIGINT NOT NULL DEFAULT 1,
    next_in_seq BIGINT NOT NULL DEFAULT 1,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),

    CONSTRAINT uq_fix_sessions_comp_ids UNIQUE (sender_comp_id, target_comp_id),
    CONSTRAINT ck_fix_sessions_epoch CHECK (epoch >= 1),
    CONSTRAINT ck_fix_sessions_next_out_seq CHECK (next_out_seq >= 1),
    CONSTRAINT ck_fix_sessions_next_in_seq CHECK (next_in_seq >= 1)
);

-- ---------------------------------------------------------------------------------------------
-- fix_outbound_messages: every application message we sent, as sent (raw bytes, header
-- included), committed in the same transaction as its next_out_seq. Session messages are not
-- stored: they are never resent (gap-filled instead).
-- * client_order_id: the ClOrdID of the order the message is about (for a cancel, the order's,
--   not the cancel's own ClOrdID).
-- * uq_fix_outbound_new_orders: one NewOrderSingle per ClOrdID and session, ever: a second
--   submit of the same order fails before anything is sent.
CREATE TABLE fix_outbound_messages (
    session_id VARCHAR(120) NOT NULL,
    epoch INTEGER NOT NULL,
    seq BIGINT NOT NULL,
    msg_type VARCHAR(4) NOT NULL,
    raw BYTEA NOT NULL,
    client_order_id VARCHAR(64),
    sent_at TIMESTAMPTZ NOT NULL,

    PRIMARY KEY (session_id, epoch, seq),
    CONSTRAINT fk_fix_session FOREIGN KEY (session_id) REFERENCES fix_sessions(session_id),
    CONSTRAINT ck_fix_outbound_messages_seq CHECK (seq >= 1)
);

CREATE UNIQUE INDEX uq_fix_outbound_new_orders
    ON fix_outbound_messages(session_id, client_order_id) WHERE msg_type = 'D';

-- ---------------------------------------------------------------------------------------------
-- fix_executions: every ExecutionReport received that reports a change (not the answers to
-- status requests, ExecType I), once per ExecID: (session_id, exec_id) is UNIQUE, so a report
-- received twice (PossDup resend, a broker repeating itself) is recognised and dropped.
-- * id: arrival order; an order's latest row is its latest known state.
-- * client_order_id: OUR order's ClOrdID (OrigClOrdID for the report of a cancel).
-- * commission: Commission (12) as reported; fee: what the fill cost (per CommType, or the
--   increase of a cumulative commission), 0 when nothing was reported. No sign CHECK: a
--   rebate is negative, and refusing the row would stall the session on that report.
-- * transact_time: TransactTime (60), else SendingTime (52): the fill's `at`.
CREATE TABLE fix_executions (
    id BIGSERIAL PRIMARY KEY,
    session_id VARCHAR(120) NOT NULL,
    exec_id VARCHAR(100) NOT NULL,
    client_order_id VARCHAR(64) NOT NULL,
    broker_order_id VARCHAR(100),
    exec_type CHAR(1) NOT NULL,
    ord_status CHAR(1) NOT NULL,
    last_qty NUMERIC,
    last_px NUMERIC,
    cum_qty NUMERIC NOT NULL,
    avg_px NUMERIC,
    commission NUMERIC,
    fee NUMERIC NOT NULL DEFAULT 0,
    venue VARCHAR(50) NOT NULL,
    text TEXT,
    msg_seq_num BIGINT NOT NULL,
    transact_time TIMESTAMPTZ NOT NULL,
    received_at TIMESTAMPTZ NOT NULL,

    CONSTRAINT fk_fix_session FOREIGN KEY (session_id) REFERENCES fix_sessions(session_id),
    CONSTRAINT uq_fix_executions_exec_id UNIQUE (session_id, exec_id),
    CONSTRAINT ck_fix_executions_quantities CHECK (cum_qty >= 0 AND (last_qty IS NULL OR last_qty >= 0))
);

-- An order's latest state (open orders, cumulative commission) and fills since a time.
CREATE INDEX idx_fix_executions_order ON fix_executions(session_id, client_order_id, id);
CREATE INDEX idx_fix_executions_transact_time ON fix_executions(session_id, transact_time);
