-- What keyplane's PostgreSQL connections do during a load run (benches/load/cluster), run
-- with psql in the keyplane database for :window seconds, in the middle of a wrk run:
--   - every ~10 ms, the state and wait event of each keyplane connection (pg_stat_activity,
--     application_name 'keyplane'), and who holds or waits for an audit chain's advisory
--     lock (host/src/audit/mod.rs: chain c's is CHAIN_LOCK + c, CHAIN_LOCK = 0x6b657970_6c616e65:
--     classid 1801812336, objid 1818324581 + c), with the holder's state;
--   - pg_stat_statements over the same window (reset at its start): calls and time per
--     statement, so the lock's wait is also read as the execution time of
--     `SELECT pg_advisory_xact_lock($1)`;
--   - audit records appended (each chain's head less its origin, host/src/audit/chains.rs,
--     summed) and transaction ids assigned (write transactions) meanwhile.
-- Prints tab-separated rows: `<kind> <fields...>` (read by benches/load/cluster-report.py).
\set ON_ERROR_STOP 1
\o /dev/null
SELECT set_config('kp.window', :'window', false);
CREATE TEMP TABLE kp_start AS
  SELECT (SELECT coalesce(sum(head - (chain << 40)), 0)
            FROM (SELECT seq >> 40 AS chain, max(seq) AS head FROM audit_log GROUP BY 1) h) AS seq,
         pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS xid,
         clock_timestamp() AS t;
SELECT pg_stat_statements_reset();
CREATE TEMP TABLE kp_activity (i int, state text, wait text, n int);
CREATE TEMP TABLE kp_lock (i int, waiting int, holder text);
DO $$
DECLARE
  deadline timestamptz := clock_timestamp() + make_interval(secs => current_setting('kp.window')::float);
  i int := 0;
BEGIN
  WHILE clock_timestamp() < deadline LOOP
    i := i + 1;
    PERFORM pg_stat_clear_snapshot();
    INSERT INTO kp_activity
      SELECT i, state, coalesce(wait_event_type || ':' || wait_event, 'running'), count(*)
      FROM pg_stat_activity
      WHERE application_name = 'keyplane' AND pid <> pg_backend_pid()
      GROUP BY 2, 3;
    INSERT INTO kp_lock
      SELECT i,
        (SELECT count(*) FROM pg_locks
          WHERE locktype = 'advisory' AND classid = 1801812336 AND objid >= 1818324581 AND NOT granted),
        (SELECT a.state || ' ' || coalesce(a.wait_event_type || ':' || a.wait_event, 'running')
          FROM pg_locks l JOIN pg_stat_activity a USING (pid)
          WHERE l.locktype = 'advisory' AND l.classid = 1801812336 AND l.objid >= 1818324581 AND l.granted
          LIMIT 1);
    PERFORM pg_sleep(0.01);
  END LOOP;
END $$;
\o
SELECT 'window', extract(epoch FROM clock_timestamp() - t)::numeric(10, 3),
       (SELECT max(i) FROM kp_lock),
       (SELECT coalesce(sum(head - (chain << 40)), 0)
          FROM (SELECT seq >> 40 AS chain, max(seq) AS head FROM audit_log GROUP BY 1) h) - seq,
       pg_snapshot_xmax(pg_current_snapshot())::text::bigint - xid
  FROM kp_start;
-- Mean count of keyplane connections in each state over the samples.
SELECT 'activity', state, wait, (sum(n)::float / (SELECT max(i) FROM kp_lock))::numeric(10, 3)
  FROM kp_activity GROUP BY 2, 3 ORDER BY 4 DESC;
-- The lock: mean waiters, and the share of samples with it held, by what its holder did.
SELECT 'lock-waiting', (avg(waiting))::numeric(10, 3) FROM kp_lock;
SELECT 'lock-holder', coalesce(holder, 'free'), (count(*)::float / (SELECT max(i) FROM kp_lock))::numeric(10, 3)
  FROM kp_lock GROUP BY 2 ORDER BY 3 DESC;
-- The group commit's multi-row INSERT is another statement for each row count: summed here.
SELECT 'statement', sum(calls), sum(total_exec_time)::numeric(12, 1),
       (sum(total_exec_time) / sum(calls) * 1000)::numeric(12, 1), q
  FROM (SELECT calls, total_exec_time,
               CASE WHEN query LIKE 'INSERT INTO audit_log %' AND (SELECT count(*) FROM pg_stat_statements s2 WHERE s2.query LIKE 'INSERT INTO audit_log %') > 1
                    THEN 'INSERT INTO audit_log … VALUES (…), (…), … [' ||
                         (SELECT count(*) FROM pg_stat_statements s2 WHERE s2.query LIKE 'INSERT INTO audit_log %') ||
                         ' statements: one per row count]'
                    ELSE left(regexp_replace(query, '\s+', ' ', 'g'), 90) END AS q
          FROM pg_stat_statements
         WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
           AND query NOT LIKE '%kp\_%' AND query NOT LIKE '%pg_stat_statements%') s
 GROUP BY q ORDER BY 3 DESC LIMIT 14;
