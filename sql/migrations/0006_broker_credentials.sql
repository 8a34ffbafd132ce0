-- 0006: the encrypted credential store (issue 6: "credentials from configuration: environment or
-- the encrypted store"). One row per broker: a Fernet token (AES-128-CBC + HMAC-SHA256) of a JSON
-- object {environment-variable name: value}, encrypted with the key in BIS_CREDENTIALS_KEY, which
-- never reaches the database. A table of its own rather than broker_connections.credentials:
-- credentials must exist before the broker's row does (the daemon cannot connect without them).
CREATE TABLE broker_credentials (
    broker_id VARCHAR(36) PRIMARY KEY,
    token TEXT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
