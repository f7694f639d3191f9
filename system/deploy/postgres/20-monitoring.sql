-- Runs once, on the first start of an empty data volume, after 10-app-role.sh, in the application
-- database (docker-entrypoint-initdb.d). What the primary knows of its standbys
-- (pg_stat_replication), for the application role, which may not read the replication role's rows
-- there itself: a function run as its owner, the superuser, returning each standby's state and lag
-- and nothing else (chatsdk/replication.py reads it). The backup job leaves this schema out of its
-- dumps: provisioning makes it, as it makes the roles. The native target runs this same file
-- (preflight/targets/servers.py); the Kubernetes ConfigMap postgres-init holds a copy.
CREATE SCHEMA monitoring;
CREATE FUNCTION monitoring.replication()
    RETURNS TABLE (standby text, state text, sync_state text, replay_lag_s float8,
                   lag_bytes float8)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog
AS $$
    SELECT application_name, state, sync_state, extract(epoch FROM replay_lag)::float8,
           pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::float8
      FROM pg_stat_replication
$$;
REVOKE ALL ON SCHEMA monitoring FROM PUBLIC;
REVOKE ALL ON FUNCTION monitoring.replication() FROM PUBLIC;
GRANT USAGE ON SCHEMA monitoring TO chatsdk;
GRANT EXECUTE ON FUNCTION monitoring.replication() TO chatsdk;
