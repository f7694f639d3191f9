-- The chat schema: every table the API of API.md needs, with an index for every query it makes.
-- Ids are text (prefixed random ids made by the app); every row carries its app_id so that no
-- query can cross apps by accident.

CREATE TABLE api_keys (
    key_id      text        PRIMARY KEY,
    app_id      text        NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    key_hash    bytea       NOT NULL,               -- sha256 of the secret part; never the key
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
CREATE INDEX api_keys_app ON api_keys (app_id);

CREATE TABLE users (
    app_id         text        NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    id             text        NOT NULL,
    name           text,
    avatar_url     text,
    -- Tokens carry the version they were minted under; revocation bumps it, durably.
    token_version  integer     NOT NULL DEFAULT 1,
    created_at     timestamptz NOT NULL DEFAULT now(),
    erased_at      timestamptz,
    PRIMARY KEY (app_id, id)
);

CREATE TABLE refresh_tokens (
    jti         text        PRIMARY KEY,
    app_id      text        NOT NULL,
    user_id     text        NOT NULL,
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz,                          -- rotated: a second use is refused
    FOREIGN KEY (app_id, user_id) REFERENCES users (app_id, id) ON DELETE CASCADE
);
CREATE INDEX refresh_tokens_user ON refresh_tokens (app_id, user_id);

CREATE TABLE channels (
    id          text        PRIMARY KEY,
    app_id      text        NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    name        text        NOT NULL,
    kind        text        NOT NULL CHECK (kind IN ('public', 'private', 'direct')),
    created_by  text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    deleted_at  timestamptz,
    -- The last seq handed out; bumped with UPDATE ... RETURNING in the message's transaction,
    -- so the row lock serialises senders and a rollback gives the number back (no gaps).
    last_seq    bigint      NOT NULL DEFAULT 0
);
CREATE INDEX channels_app ON channels (app_id);

CREATE TABLE channel_members (
    channel_id     text        NOT NULL REFERENCES channels(id) ON DELETE CASCADE,
    app_id         text        NOT NULL,
    user_id        text        NOT NULL,
    role           text        NOT NULL DEFAULT 'member' CHECK (role IN ('owner', 'member')),
    joined_at      timestamptz NOT NULL DEFAULT now(),
    last_read_seq  bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (channel_id, user_id)
);
CREATE INDEX channel_members_user ON channel_members (app_id, user_id);

CREATE TABLE uploads (
    id            text        PRIMARY KEY,
    app_id        text        NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    user_id       text        NOT NULL,
    size          bigint      NOT NULL,
    content_type  text        NOT NULL,               -- sniffed from the bytes, not the claim
    sha256        text        NOT NULL,
    storage_key   text        NOT NULL,
    filename      text,                               -- shown only; never used as a path
    created_at    timestamptz NOT NULL DEFAULT now(),
    deleted_at    timestamptz
);
CREATE INDEX uploads_user ON uploads (app_id, user_id);

CREATE TABLE messages (
    id             text        PRIMARY KEY,
    app_id         text        NOT NULL,
    channel_id     text        NOT NULL REFERENCES channels(id) ON DELETE CASCADE,
    seq            bigint      NOT NULL,
    user_id        text        NOT NULL,
    kind           text        NOT NULL DEFAULT 'text' CHECK (kind IN ('text', 'poll')),
    text           text,                              -- NULL once tombstoned or erased
    client_msg_id  text,
    parent_id      text        REFERENCES messages(id),
    created_at     timestamptz NOT NULL DEFAULT now(),
    edited_at      timestamptz,
    deleted_at     timestamptz,
    UNIQUE (channel_id, seq)
);
-- Idempotent sends: one message per (channel, sender, client_msg_id).
CREATE UNIQUE INDEX messages_client_msg ON messages (channel_id, user_id, client_msg_id)
    WHERE client_msg_id IS NOT NULL;
CREATE INDEX messages_replies ON messages (parent_id, seq) WHERE parent_id IS NOT NULL;
CREATE INDEX messages_user ON messages (app_id, user_id);

CREATE TABLE message_uploads (
    message_id  text NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    upload_id   text NOT NULL REFERENCES uploads(id) ON DELETE CASCADE,
    PRIMARY KEY (message_id, upload_id)
);
CREATE INDEX message_uploads_upload ON message_uploads (upload_id);

CREATE TABLE reactions (
    message_id  text        NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    user_id     text        NOT NULL,
    emoji       text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (message_id, user_id, emoji)
);
CREATE INDEX reactions_user ON reactions (user_id);

CREATE TABLE polls (
    id          text        PRIMARY KEY,
    app_id      text        NOT NULL,
    channel_id  text        NOT NULL REFERENCES channels(id) ON DELETE CASCADE,
    message_id  text        NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    question    text        NOT NULL,
    multiple    boolean     NOT NULL DEFAULT false,
    created_by  text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX polls_channel ON polls (channel_id);

CREATE TABLE poll_options (
    poll_id   text    NOT NULL REFERENCES polls(id) ON DELETE CASCADE,
    id        text    NOT NULL,
    position  integer NOT NULL,
    text      text    NOT NULL,
    PRIMARY KEY (poll_id, id)
);

CREATE TABLE poll_votes (
    poll_id    text        NOT NULL,
    option_id  text        NOT NULL,
    user_id    text        NOT NULL,
    voted_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (poll_id, option_id, user_id),
    FOREIGN KEY (poll_id, option_id) REFERENCES poll_options (poll_id, id) ON DELETE CASCADE
);
CREATE INDEX poll_votes_user ON poll_votes (user_id);

CREATE TABLE idempotency_keys (
    app_id        text        NOT NULL,
    user_id       text        NOT NULL,
    key           text        NOT NULL,
    request_hash  text        NOT NULL,
    status        integer     NOT NULL,
    response      jsonb       NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (app_id, user_id, key)
);

-- Transactional outbox: written in the same transaction as the change it announces, published
-- to Redis (and turned into webhook deliveries) by a drainer, so nothing is lost between commit
-- and publish.
CREATE TABLE outbox (
    id            bigserial   PRIMARY KEY,
    app_id        text        NOT NULL,
    channel_id    text,                               -- channel events
    user_id       text,                               -- user events (revocation)
    type          text        NOT NULL,
    seq           bigint,                             -- message.new: the message's seq
    data          jsonb       NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz
);
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;

CREATE TABLE webhooks (
    id                    text        PRIMARY KEY,
    app_id                text        NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    url                   text        NOT NULL,
    events                text[]      NOT NULL,
    secret                text        NOT NULL,
    created_at            timestamptz NOT NULL DEFAULT now(),
    consecutive_failures  integer     NOT NULL DEFAULT 0,
    disabled_at           timestamptz
);
CREATE INDEX webhooks_app ON webhooks (app_id);

CREATE TABLE webhook_deliveries (
    id               bigserial   PRIMARY KEY,
    webhook_id       text        NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    outbox_id        bigint      NOT NULL,
    event_type       text        NOT NULL,
    payload          jsonb       NOT NULL,
    status           text        NOT NULL DEFAULT 'pending'
                                 CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         integer     NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_status      integer,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz,
    UNIQUE (webhook_id, outbox_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_hook ON webhook_deliveries (webhook_id, id);
