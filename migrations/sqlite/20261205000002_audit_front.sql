-- Which front a request came through ("native", "aws-kms", ...). NULL for records written
-- before fronts were recorded and for system records (scheduler, gc, SIGHUP); covered by the
-- record hash whenever set (left out of the hashed JSON when NULL, so older records verify).
ALTER TABLE audit_log ADD COLUMN front TEXT;
