-- Mail and the account lifecycle (issue 12). One-time secrets sent by mail: a
-- link token (256 random bits, stored as SHA-256) and, for address proofs, a
-- 6-digit code (stored as an HMAC under a key derived from the master key, since
-- a plain hash of six digits is reversed in microseconds). `purpose` says what
-- spending it does: `verify` proves `email`, the account's address;
-- `change_email` proves a new address and moves the account to it; `reset` sets a
-- new password; `unlock` lifts a lock for the address that opens it. A row is spent by setting `used_at`, once, by one
-- conditional UPDATE: single-use under parallel use.
CREATE TABLE email_tokens (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    purpose TEXT NOT NULL,
    email TEXT NOT NULL,
    token_hash TEXT NOT NULL,
    code_hash TEXT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    code_expires_at BIGINT,
    -- Wrong codes tried against this token; past a few, its code stops working
    -- (the link still does), whatever the lockout says.
    code_attempts BIGINT NOT NULL DEFAULT 0,
    used_at BIGINT
);
CREATE UNIQUE INDEX email_tokens_hash ON email_tokens (token_hash);
CREATE INDEX email_tokens_user ON email_tokens (user_id, purpose);
CREATE INDEX email_tokens_expiry ON email_tokens (expires_at);
CREATE INDEX email_tokens_email ON email_tokens (email, created_at);
-- Failed mail is listed by status; the outbox keeps rows of every kind.
CREATE INDEX outbox_kind_status ON outbox (kind, status, created_at);

UPDATE roles SET permissions = REPLACE(permissions, '"admin:clients:write"',
    '"admin:clients:write","admin:emails:read"')
WHERE name = 'admin';
