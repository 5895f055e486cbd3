-- Second factors (issue 13). A factor is pending until its first code confirms
-- it; a user has at most one factor of each kind. `secret_sealed` is the TOTP
-- secret (or the SMS number) sealed under the master key: a copy of the database
-- alone yields no codes. `last_step` is the newest TOTP time step accepted: a code
-- is accepted only for a later step, by one conditional UPDATE, so a code works
-- once even under parallel use (RFC 6238 §5.2). An SMS factor is confirmed by the
-- code sent to its number.
CREATE TABLE mfa_factors (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    secret_sealed TEXT NOT NULL,
    label TEXT,
    created_at BIGINT NOT NULL,
    confirmed_at BIGINT,
    last_step BIGINT,
    last_used_at BIGINT,
    -- A pending SMS enrolment: the HMAC of the code sent, until when it works,
    -- and the wrong codes tried against it.
    code_hash TEXT,
    code_expires_at BIGINT,
    code_failures BIGINT NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX mfa_factors_user_kind ON mfa_factors (user_id, kind);

-- Recovery codes: an HMAC under a key derived from the master key (60 random bits
-- would fall to an offline search of a plain hash), spent by setting `used_at`.
CREATE TABLE recovery_codes (
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    code_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    used_at BIGINT,
    PRIMARY KEY (user_id, code_hash)
);

-- A sign-in between its first and second factor (the `mfa_token`, stored as
-- SHA-256). `purpose`: `login` (JSON API), `page` (hosted pages), `reauth`
-- (renews `session_id`'s sign-in), `enroll` (mfa required, no factor yet).
-- `amr` holds the methods proven so far. It ends at the first success
-- (`used_at`) or after a few wrong codes (`failures`). An SMS code sent for it is
-- kept as an HMAC (`sms_code_hash`).
CREATE TABLE mfa_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    purpose TEXT NOT NULL,
    session_id TEXT,
    amr TEXT NOT NULL,
    failures BIGINT NOT NULL DEFAULT 0,
    sms_code_hash TEXT,
    sms_expires_at BIGINT,
    sms_sends BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);
CREATE INDEX mfa_tokens_user ON mfa_tokens (user_id);
CREATE INDEX mfa_tokens_expiry ON mfa_tokens (expires_at);

-- Passkeys (WebAuthn). `credential` is the relying party's record of the
-- credential (public key, sign counter, flags) as JSON; `credential_id` (base64url)
-- finds it from an assertion, `user_handle` (a UUID per user) from a discoverable
-- one. `amr` is `hwk` only when attestation proved a hardware key, else `swk`.
CREATE TABLE passkeys (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    credential_id TEXT NOT NULL,
    user_handle TEXT NOT NULL,
    name TEXT NOT NULL,
    credential TEXT NOT NULL,
    amr TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT
);
CREATE UNIQUE INDEX passkeys_credential ON passkeys (credential_id);
CREATE INDEX passkeys_user ON passkeys (user_id);

-- A WebAuthn ceremony in progress: the relying party's state (the challenge), what
-- it may finish (`register`, `login`, `mfa`, `reauth`) and for whom; single-use
-- (`used_at`, one conditional UPDATE) and short-lived.
CREATE TABLE webauthn_challenges (
    id TEXT PRIMARY KEY,
    purpose TEXT NOT NULL,
    user_id TEXT REFERENCES users(id) ON DELETE CASCADE,
    mfa_token_hash TEXT,
    session_id TEXT,
    state TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);
CREATE INDEX webauthn_challenges_expiry ON webauthn_challenges (expires_at);
