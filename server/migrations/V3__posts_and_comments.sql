-- The GraphQL blog (API.md "GraphQL"). Authors are local users. Pages of
-- posts run newest first on (created_at, id) and comments oldest first on
-- the same pair, so both indexes serve keyset paging; a comment goes with
-- its post.
CREATE TABLE posts (
    id         bigserial   PRIMARY KEY,
    author_id  bigint      NOT NULL REFERENCES users (id),
    title      text        NOT NULL,
    content    text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX posts_newest ON posts (created_at DESC, id DESC);

CREATE TABLE comments (
    id         bigserial   PRIMARY KEY,
    post_id    bigint      NOT NULL REFERENCES posts (id) ON DELETE CASCADE,
    author_id  bigint      NOT NULL REFERENCES users (id),
    content    text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX comments_by_post ON comments (post_id, created_at, id);
