-- Authorization: bans, Clerk-style metadata, role timestamps, API keys.
ALTER TABLE users ADD COLUMN banned_at BIGINT;
ALTER TABLE users ADD COLUMN public_metadata TEXT NOT NULL DEFAULT '{}';
ALTER TABLE users ADD COLUMN private_metadata TEXT NOT NULL DEFAULT '{}';
ALTER TABLE users ADD COLUMN unsafe_metadata TEXT NOT NULL DEFAULT '{}';
ALTER TABLE roles ADD COLUMN updated_at BIGINT NOT NULL DEFAULT 0;
CREATE INDEX user_roles_role ON user_roles (role, user_id);

-- A key has a current secret and, for a grace period after rotation, the previous
-- one. Only SHA-256 hashes of secrets are stored.
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    owner_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    prefix TEXT NOT NULL,
    secret_hash TEXT NOT NULL UNIQUE,
    previous_secret_hash TEXT UNIQUE,
    previous_expires_at BIGINT,
    scopes TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    last_used_at BIGINT,
    revoked_at BIGINT
);
CREATE INDEX api_keys_owner ON api_keys (owner_id, id);
