-- Uploads, erasure and webhooks: what 0002 does not cover.

-- Erasure marks an upload deleted in its transaction; the bytes are removed from storage after
-- the commit. purged_at records that the storage delete succeeded, so a crash or a storage
-- outage in between leaves a row the purge sweeper finds and finishes (deletes are idempotent).
ALTER TABLE uploads ADD COLUMN purged_at timestamptz;
CREATE INDEX uploads_unpurged ON uploads (deleted_at)
    WHERE deleted_at IS NOT NULL AND purged_at IS NULL;

-- Erasure removes the polls a user created (their question and options are the user's text).
CREATE INDEX polls_creator ON polls (app_id, created_by);
