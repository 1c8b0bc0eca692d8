-- Uploaded WebAssembly components, content-addressed: the bytes a plugin row's sha256 names.
-- Kept in the database (not a node's data directory) so every node sharing the database can
-- run every plugin: a node compiles a component on first use and caches the precompiled
-- artifact in its own data directory (see host/src/plugins/mod.rs).
--
-- A row is written in the transaction of the upload that brings it (a failed upload leaves
-- none) and deleted in the transaction that deletes the last plugin row naming it (garbage
-- collection removes any left unreferenced otherwise). Two plugins with the same bytes share
-- one row. Components an older release kept as <data-dir>/plugins/<sha256>.wasm are imported
-- at start.
CREATE TABLE plugin_components (
    sha256     TEXT PRIMARY KEY NOT NULL,   -- lowercase hex SHA-256 of bytes
    bytes      BLOB NOT NULL,
    size       INTEGER NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX plugins_sha256 ON plugins (sha256);
