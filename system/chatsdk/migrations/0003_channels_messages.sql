-- Indexes for query patterns of channels, messages and polls that 0002 does not cover.

-- GET /channels pages a user's channels by channel id (keyset, never OFFSET).
CREATE INDEX channel_members_user_channel ON channel_members (app_id, user_id, channel_id);

-- Message JSON names the poll of a poll message; a page looks them up by message id.
CREATE INDEX polls_message ON polls (message_id);

-- A vote replaces the caller's earlier vote, and GET /polls/{id} shows the caller's choices.
CREATE INDEX poll_votes_poll_user ON poll_votes (poll_id, user_id);

-- Unread count of one member: messages after their read position, sent by others, not deleted.
-- Walks the (channel_id, seq) index from the read position; capped so that a member who never
-- reads a busy channel costs a bounded scan.
CREATE FUNCTION channel_unread(p_channel text, p_user text, p_after bigint) RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT count(*) FROM (
        SELECT 1 FROM messages
        WHERE channel_id = p_channel AND seq > p_after AND user_id <> p_user
          AND deleted_at IS NULL
        LIMIT 10000
    ) AS unread
$$;
