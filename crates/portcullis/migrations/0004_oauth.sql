-- OAuth 2.0 / OpenID Connect: the client registry, authorization codes, remembered
-- consent, spent client-assertion ids, and sessions that belong to a client (an
-- OAuth grant) or to a browser (the hosted pages' cookie).
CREATE TABLE oauth_clients (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    -- Validated RFC 7591 metadata as JSON (redirect URIs, grants, scopes, JWKS...).
    metadata TEXT NOT NULL,
    secret_hash TEXT UNIQUE,
    previous_secret_hash TEXT UNIQUE,
    previous_expires_at BIGINT,
    trusted BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- Only the SHA-256 of a code is stored. `grant_session_id` names the session the
-- code was redeemed for, so a replay can end it (RFC 6749 §4.1.2).
CREATE TABLE oauth_codes (
    code_hash TEXT PRIMARY KEY,
    client_id TEXT NOT NULL REFERENCES oauth_clients(id) ON DELETE CASCADE,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    redirect_uri TEXT NOT NULL,
    scope TEXT NOT NULL,
    nonce TEXT,
    code_challenge TEXT,
    auth_time BIGINT NOT NULL,
    amr TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT,
    grant_session_id TEXT
);
CREATE INDEX oauth_codes_expiry ON oauth_codes (expires_at);

CREATE TABLE oauth_consents (
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    client_id TEXT NOT NULL REFERENCES oauth_clients(id) ON DELETE CASCADE,
    scope TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, client_id)
);

-- `jti`s of private_key_jwt assertions already accepted, until they expire: an
-- assertion works once (RFC 7523 §3).
CREATE TABLE oauth_assertions (
    jti_key TEXT PRIMARY KEY,
    expires_at BIGINT NOT NULL
);

ALTER TABLE sessions ADD COLUMN client_id TEXT;
ALTER TABLE sessions ADD COLUMN scope TEXT;
ALTER TABLE sessions ADD COLUMN auth_time BIGINT;
ALTER TABLE sessions ADD COLUMN cookie_hash TEXT;
CREATE UNIQUE INDEX sessions_cookie ON sessions (cookie_hash);
CREATE INDEX sessions_client ON sessions (client_id, user_id);

UPDATE roles SET permissions = REPLACE(permissions, '"admin:audit:read"',
    '"admin:audit:read","admin:clients:read","admin:clients:write"')
WHERE name = 'admin';
