-- Users of an external identity provider (API.md, "External identity
-- providers"): identified by (issuer, subject), created by the first
-- accepted token, without a password, and never found by the login look-up
-- (no canonical email), so a provider's `email` claim can neither log in
-- nor take a local address.
ALTER TABLE users ADD COLUMN issuer text, ADD COLUMN subject text;
ALTER TABLE users ALTER COLUMN email DROP NOT NULL,
                  ALTER COLUMN email_canonical DROP NOT NULL,
                  ALTER COLUMN password_hash DROP NOT NULL;
ALTER TABLE users ADD CONSTRAINT users_local_or_external CHECK (
    (issuer IS NULL AND subject IS NULL AND email IS NOT NULL
        AND email_canonical IS NOT NULL AND password_hash IS NOT NULL)
    OR (issuer IS NOT NULL AND subject IS NOT NULL
        AND email_canonical IS NULL AND password_hash IS NULL));
CREATE UNIQUE INDEX users_external ON users (issuer, subject) WHERE issuer IS NOT NULL;
-- For an external user, min_session_id is a Unix second on the provider's
-- clock: its tokens have no session, and one whose `iat` is at or before it
-- is dead (see auth::revocation).

-- External tokens ended by `POST /auth/logout`, until they expire. The key
-- is a digest of the token's `jti`, or of the token when it has none.
CREATE TABLE external_revocations (
    id         bigserial   PRIMARY KEY,
    user_id    bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_key  text        NOT NULL,
    expires_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_id, token_key)
);
