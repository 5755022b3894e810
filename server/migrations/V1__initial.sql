-- Users. Email uniqueness is case-insensitive through the expression index,
-- which is also the index of the login look-up (WHERE lower(email) = ...).
CREATE TABLE users (
    id                bigserial PRIMARY KEY,
    email             text        NOT NULL CHECK (length(email) <= 254),
    password_hash     text        NOT NULL,
    role              text        NOT NULL DEFAULT 'user'
                                  CHECK (role IN ('user', 'admin')),
    status            text        NOT NULL DEFAULT 'active'
                                  CHECK (status IN ('active', 'banned', 'deactivated', 'security_issue')),
    status_updated_at timestamptz NOT NULL DEFAULT now(),
    -- Sessions with an id <= min_session_id are dead: set from the session
    -- id sequence by every status change and logout-all (see auth::revocation).
    min_session_id    bigint      NOT NULL DEFAULT 0,
    -- When min_session_id last moved; the Redis rebuild reads recent ones.
    not_before        timestamptz NOT NULL DEFAULT '-infinity',
    created_at        timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email_lower ON users (lower(email));
-- Rebuild of Redis after it lost its state: blocked users, recent not-befores.
CREATE INDEX users_blocked ON users (id) WHERE status <> 'active';
CREATE INDEX users_not_before ON users (not_before);

-- One row per login. The id comes from a sequence, so "created before the
-- ban" is an exact comparison of ids, not of clocks.
CREATE TABLE sessions (
    id             bigserial PRIMARY KEY,
    user_id        bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    refresh_jti    text        NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    refreshed_at   timestamptz,
    expires_at     timestamptz NOT NULL,
    revoked_at     timestamptz,
    revoked_reason text
);
CREATE INDEX sessions_user_live ON sessions (user_id) WHERE revoked_at IS NULL;
-- Rebuild of Redis: revoked sessions not yet expired.
CREATE INDEX sessions_revoked ON sessions (expires_at) WHERE revoked_at IS NOT NULL;

CREATE TABLE tasks (
    id           bigserial PRIMARY KEY,
    user_id      bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    title        text        NOT NULL,
    description  text,
    is_completed boolean     NOT NULL DEFAULT false,
    due_date     timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
-- Every per-user task query filters on user_id and orders or matches by id.
CREATE INDEX tasks_user_id ON tasks (user_id, id);
