-- Security review (issue 10).

-- Who registered each OAuth client: a user id, or 'operator' (the CLI). A
-- client-credentials grant never exceeds what its owner holds now. Clients from
-- before this change were registered by operators or admins: 'operator'.
ALTER TABLE oauth_clients ADD COLUMN owner TEXT NOT NULL DEFAULT 'operator';

-- The session an API key was created from: when theft detection ends that session
-- (a reused refresh token), the keys minted with it are revoked too.
ALTER TABLE api_keys ADD COLUMN session_id TEXT;

-- Lockout is keyed by (email, client address) so an attacker's failures lock only
-- the attacker's address out. The old per-email state is short-lived and dropped.
DROP TABLE login_failures;
CREATE TABLE login_failures (
    email TEXT NOT NULL,
    address TEXT NOT NULL,
    failures BIGINT NOT NULL,
    lock_level BIGINT NOT NULL,
    locked_until BIGINT,
    last_failure_at BIGINT NOT NULL,
    PRIMARY KEY (email, address)
);

-- Addresses that signed in to an account successfully: while the account is over
-- its failure ceiling (all addresses together), only these still get through.
CREATE TABLE login_successes (
    email TEXT NOT NULL,
    address TEXT NOT NULL,
    last_success_at BIGINT NOT NULL,
    PRIMARY KEY (email, address)
);
