-- Webhooks (issue 14). An endpoint is a URL, the event types it takes (JSON
-- array; `["*"]` is every type) and its signing secret, sealed under the master key
-- (it must be read back to sign; only the operator sees it, once). During a
-- rotation's grace the previous secret signs too, until `previous_expires_at`.
-- `failing_since` is when its current run of failures began: past
-- `webhooks.disable_after`, the endpoint is disabled.
CREATE TABLE webhook_endpoints (
    id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    description TEXT,
    events TEXT NOT NULL,
    enabled BIGINT NOT NULL DEFAULT 1,
    secret TEXT NOT NULL,
    previous_secret TEXT,
    previous_expires_at BIGINT,
    failing_since BIGINT,
    disabled_reason TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- A delivery is an outbox row of kind `webhook` (written in the transaction of the
-- change its event announces, one per subscribed endpoint); `target` names the
-- endpoint, so its deliveries are listed and replayed without reading payloads.
ALTER TABLE outbox ADD COLUMN target TEXT;
-- Claims given back unattempted (the endpoint had its share in flight): `attempts`
-- keeps counting claims (each claim's token stays unique), and the attempts that
-- really ran are `attempts - deferrals`.
ALTER TABLE outbox ADD COLUMN deferrals BIGINT NOT NULL DEFAULT 0;
CREATE INDEX outbox_target ON outbox (target, created_at);

-- Every attempt of a delivery, for the delivery log: the answer's status, how long
-- it took, the first KiB of its body, or why no answer came.
CREATE TABLE webhook_attempts (
    id TEXT PRIMARY KEY,
    delivery_id TEXT NOT NULL,
    endpoint_id TEXT NOT NULL,
    attempt BIGINT NOT NULL,
    at BIGINT NOT NULL,
    status_code BIGINT,
    latency_ms BIGINT NOT NULL,
    response TEXT,
    error TEXT
);
CREATE INDEX webhook_attempts_delivery ON webhook_attempts (delivery_id, attempt);
CREATE INDEX webhook_attempts_time ON webhook_attempts (at);

-- `session.ended` is also sent when a session runs out: a sweep marks each expired
-- session it announced. Sessions that exist when this migration runs count as
-- announced (no burst of stale events on upgrade).
ALTER TABLE sessions ADD COLUMN expiry_announced BIGINT NOT NULL DEFAULT 0;
UPDATE sessions SET expiry_announced = 1;
CREATE INDEX sessions_unannounced ON sessions (expires_at) WHERE revoked_at IS NULL AND expiry_announced = 0;

UPDATE roles SET permissions = REPLACE(permissions, '"admin:emails:read"',
    '"admin:emails:read","admin:webhooks:read","admin:webhooks:write"')
WHERE name = 'admin';
