-- The access key a SigV4 request was signed with (AWS KMS and STS fronts), so that an auditor
-- can tell which of a principal's keys was used (a leaked one among several). NULL for bearer
-- tokens, system records and records older than the column; covered by the record hash
-- whenever set (left out of the hashed JSON when NULL, so older records verify).
ALTER TABLE audit_log ADD COLUMN access_key_id TEXT;
