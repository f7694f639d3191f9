-- Realtime: the outbox drainer prunes rows published more than an hour ago; this index keeps
-- that DELETE from scanning the whole table.
CREATE INDEX outbox_published ON outbox (published_at) WHERE published_at IS NOT NULL;
