-- session-kit: the PostgreSQL sessions table, as PostgresStore::migrate() creates it.
CREATE TABLE IF NOT EXISTS sessions (
    key TEXT PRIMARY KEY,          -- a versioned hash of the session id, never the id
    data JSONB NOT NULL,           -- the session's keys and values
    meta JSONB NOT NULL,           -- timestamps and expiry settings
    user_id TEXT,                  -- set on login, for "log out everywhere"
    expires_at BIGINT NOT NULL     -- Unix milliseconds
);
CREATE INDEX IF NOT EXISTS sessions_expires_at ON sessions (expires_at);
CREATE INDEX IF NOT EXISTS sessions_user_id ON sessions (user_id) WHERE user_id IS NOT NULL;
