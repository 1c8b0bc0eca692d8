-- The audit log's chains (see host/src/audit/chains.rs): the log is one hash chain per writer,
-- each owning the range of seq from (id << 40) + 1. Chain 0, the records written before
-- chains existed and every record of a SQLite database, has no row. A node on PostgreSQL
-- registers its chains here when it starts, so no two processes ever write one chain.
CREATE TABLE audit_chains (
    id         INTEGER PRIMARY KEY NOT NULL,  -- 1, 2, ...
    node       TEXT NOT NULL,                 -- host name and process id of the writer
    purpose    TEXT NOT NULL,                 -- "transactions" or "group-commit"
    created_at TEXT NOT NULL
);
