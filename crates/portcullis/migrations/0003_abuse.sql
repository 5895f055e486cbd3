-- Abuse protection shared by every node: per-client rate-limit windows and
-- per-email lockout state (keyed by email, not user, so unknown emails lock too and
-- lockout reveals nothing about which accounts exist).
CREATE TABLE rate_limits (
    bucket TEXT PRIMARY KEY,
    window_start BIGINT NOT NULL,
    count BIGINT NOT NULL,
    prev_count BIGINT NOT NULL
);

CREATE TABLE login_failures (
    email TEXT PRIMARY KEY,
    failures BIGINT NOT NULL,
    lock_level BIGINT NOT NULL,
    locked_until BIGINT,
    last_failure_at BIGINT NOT NULL
);
