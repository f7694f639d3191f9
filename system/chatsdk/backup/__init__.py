"""Backups of everything that holds the service's state, and their restore.

`python -m chatsdk.backup run` takes one backup into the repository (CHATSDK_BACKUP_DIR):

- PostgreSQL, logically: `pg_dump -Fc` of the application database from an exported snapshot,
  with the fastest compression the installed pg_dump has (lz4 from PostgreSQL 16, gzip level 1
  before). In the same snapshot the job counts the rows of every table, digests every message in
  (channel, seq) order and lists the live uploads, so a restore can be checked against exactly
  what the dump holds.
- PostgreSQL, physically: `pg_basebackup` (plain format, WAL streamed, fast checkpoint) checked
  with `pg_verifybackup` against its manifest. PostgreSQL 15's pg_verifybackup reads only the
  plain format, so the base backup is not compressed.
- The upload store: every upload that is live in the snapshot, copied and hashed; a file that is
  missing or whose sha256 differs from the database's is recorded as a problem.
- Redis: an RDB snapshot over the replication protocol (`redis-cli --rdb`), checked with
  `redis-check-rdb`. Redis holds only rebuildable state (rate-limit buckets, caches, pub/sub);
  the copy is for completeness, not needed to recover.

Each backup is a directory named by its id; `catalogue.json` lists every backup with its
trigger, status, times, sizes, step durations and the sha256 of each file. A successful run
prunes backups older than the retention (CHATSDK_BACKUP_RETENTION_DAYS, 30; the newest
successful backup is always kept) and writes `chatsdk_backup_last_success_timestamp_seconds`
for node_exporter's textfile collector (CHATSDK_BACKUP_TEXTFILE_DIR).

`python -m chatsdk.backup schedule` takes one backup at once and then one every
CHATSDK_BACKUP_EVERY seconds, start to start, until SIGTERM. The default is 12 hours: backups at
least daily, and a failure just before the next backup loses less than the 24-hour RPO (with a
daily schedule the worst case is a day plus one backup's duration).

`python -m chatsdk.backup restore` restores one backup into an empty database and upload store
and verifies it (system/docs/operations/backup-and-restore.md).
"""
