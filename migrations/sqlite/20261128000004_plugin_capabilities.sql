-- Capabilities a plugin was granted at upload beyond its world's defaults (JSON array), e.g.
-- ["filesystem"]: a preopened directory of its own, scoped to the tenant.
ALTER TABLE plugins ADD COLUMN capabilities TEXT NOT NULL DEFAULT '[]';
