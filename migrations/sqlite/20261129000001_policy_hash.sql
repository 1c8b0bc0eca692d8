-- The SHA-256 of the policy set that decided each request (hex). NULL for records written
-- before this column existed and for records no policy decided (unauthenticated or malformed
-- requests, the scheduler, bootstrap). The audit hash chain covers it whenever it is set.
ALTER TABLE audit_log ADD COLUMN policy_hash TEXT;
