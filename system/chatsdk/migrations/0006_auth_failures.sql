-- Failed authentication attempts while Redis is unavailable (chatsdk/auththrottle.py): the
-- fallback that keeps the throttle of failed authentication global across workers. `key` is a
-- digest naming a client address, a credential, or the pair of both, never the address or the
-- credential itself. Rows older than the throttle window are deleted as new ones arrive and by
-- the retention job.
CREATE TABLE auth_failures (
    id   bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key  text        NOT NULL,
    at   timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX auth_failures_key_at ON auth_failures (key, at);
CREATE INDEX auth_failures_at ON auth_failures (at);
