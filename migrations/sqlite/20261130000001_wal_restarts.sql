-- One row that the WAL checkpoint task rewrites right after it has started the WAL over, so
-- that the sync of the new WAL header happens on that task's connection and never on the
-- audit group commit's (which runs on a tokio worker). It also counts the restarts.
CREATE TABLE wal_restarts (
    id    INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    count INTEGER NOT NULL
);
INSERT INTO wal_restarts (id, count) VALUES (1, 0);
