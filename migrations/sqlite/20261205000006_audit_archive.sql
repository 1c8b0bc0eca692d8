-- Archived segments of the audit log (see host/src/audit/archive.rs): the records from
-- first_seq to last_seq, sealed by the signed checkpoint at last_seq, written to one gzip file
-- of JSON lines in the archive directory. Kept after the records are pruned from audit_log, so
-- that the chain (archive files, then the live table) stays verifiable end to end.
CREATE TABLE audit_segments (
    first_seq   INTEGER PRIMARY KEY NOT NULL,
    last_seq    INTEGER NOT NULL UNIQUE,       -- a record with a signed checkpoint
    records     INTEGER NOT NULL,
    head_hash   TEXT NOT NULL,                 -- hash of the record at last_seq
    first_time  TEXT NOT NULL,                 -- time of the first and the last record
    last_time   TEXT NOT NULL,
    file_name   TEXT NOT NULL UNIQUE,          -- inside the archive directory
    file_sha256 TEXT NOT NULL,                 -- hex SHA-256 of the file's bytes
    archived_at TEXT NOT NULL,
    pruned_at   TEXT                           -- set when its records began to leave audit_log
);
