-- One canonical form of an email address, computed by the server (Unicode
-- lower case, see auth::email) and used for uniqueness, the login look-up
-- and the login throttle, so every spelling that finds an account shares
-- its failure count. Existing rows get PostgreSQL's lower(), which agrees
-- with the server's form for ASCII addresses.
ALTER TABLE users ADD COLUMN email_canonical text;
UPDATE users SET email_canonical = lower(email);
ALTER TABLE users ALTER COLUMN email_canonical SET NOT NULL;
CREATE UNIQUE INDEX users_email_canonical ON users (email_canonical);
DROP INDEX users_email_lower;

-- A random id shared by every instance on this database: the default Redis
-- key prefix, so deployments sharing a Redis never share keys.
CREATE TABLE deployment (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    id  text    NOT NULL DEFAULT substr(md5(random()::text || clock_timestamp()::text), 1, 12)
);
INSERT INTO deployment DEFAULT VALUES;

-- Keyset paging of the Redis rebuild over revoked sessions.
DROP INDEX sessions_revoked;
CREATE INDEX sessions_revoked ON sessions (id) WHERE revoked_at IS NOT NULL;
