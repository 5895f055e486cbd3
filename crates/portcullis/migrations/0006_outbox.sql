-- The transactional outbox (issue 11): a row is written in the same transaction as
-- the change it announces (a mail, a webhook event), then delivered by a worker at
-- least once. A claim is a lease (`locked_until`): a node that dies mid-delivery
-- lets the lease run out and another node delivers the row later. Rows stay after
-- delivery (a delivery log, failed mail to retry) until the audit retention ends.
CREATE TABLE outbox (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    locked_until BIGINT,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    delivered_at BIGINT
);
CREATE INDEX outbox_due ON outbox (status, next_attempt_at);
