-- Who asked, as CloudTrail records it: the request's W3C trace id (when tracing is on) and the
-- client's User-Agent. NULL for older records and system records; covered by the record hash
-- whenever set (left out of the hashed JSON when NULL, so older records verify unchanged).
ALTER TABLE audit_log ADD COLUMN trace_id TEXT;
ALTER TABLE audit_log ADD COLUMN user_agent TEXT;
