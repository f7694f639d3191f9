-- Minimal schema for the service skeleton; the full chat schema comes in later migrations.
CREATE TABLE apps (
    id          text        PRIMARY KEY,
    name        text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now()
);
