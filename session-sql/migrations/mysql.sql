-- session-kit: the MySQL/MariaDB sessions table, as MySqlStore::migrate() creates it.
CREATE TABLE IF NOT EXISTS sessions (
    `key` VARCHAR(64) NOT NULL PRIMARY KEY,  -- a versioned hash of the session id, never the id
    data JSON NOT NULL,                      -- the session's keys (%, " and \ percent-encoded) and values
    meta JSON NOT NULL,                      -- timestamps and expiry settings
    user_id VARCHAR(255) NULL,               -- set on login, for "log out everywhere"
    expires_at BIGINT NOT NULL,              -- Unix milliseconds
    INDEX sessions_expires_at (expires_at),
    INDEX sessions_user_id (user_id)
);
