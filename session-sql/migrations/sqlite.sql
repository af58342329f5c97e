-- session-kit: the SQLite sessions table, as SqliteStore::migrate() creates it.
CREATE TABLE IF NOT EXISTS sessions (
    "key" TEXT NOT NULL PRIMARY KEY,  -- a versioned hash of the session id, never the id
    data TEXT NOT NULL,               -- JSON: the session's keys (%, " and \ percent-encoded) and values
    meta TEXT NOT NULL,               -- JSON: timestamps and expiry settings
    user_id TEXT,                     -- set on login, for "log out everywhere"
    expires_at INTEGER NOT NULL       -- Unix milliseconds
);
CREATE INDEX IF NOT EXISTS sessions_expires_at ON sessions (expires_at);
CREATE INDEX IF NOT EXISTS sessions_user_id ON sessions (user_id) WHERE user_id IS NOT NULL;
