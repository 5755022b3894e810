//! Benchmarks of Tollgate's paths: the CPU-bound operations ([`OPS`]) and
//! fixtures the criterion benches and the instruction counter share, and the
//! two regression gates.
//!
//! - `benches/paths.rs`: criterion, wall time per operation, from one JWT
//!   verification to a full request over loopback.
//! - `src/bin/instructions.rs`: the CPU-bound operations counted in
//!   instructions under callgrind, which, unlike wall time, repeat exactly on a
//!   noisy machine.
//! - [`gate`]: judges criterion's comparison with a saved baseline, and
//!   instruction counts against a stored baseline.

#![deny(missing_docs)]

pub mod gate;

use bytes::Bytes;
use chrono::{TimeZone, Utc};
use std::hint::black_box;
use std::time::Duration;
use tollgate::auth::revocation::{is_revoked, parse_nbf};
use tollgate::auth::token::{Role, TokenType, Tokens};
use tollgate::http::router::Router;
use tollgate::metrics::Metrics;
use tollgate::tasks::model::{ListQuery, NewTaskBody, Task};

/// A fixed page of `n` tasks, as a user's list would hold them.
pub fn sample_tasks(n: usize) -> Vec<Task> {
    let t = Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).single().unwrap_or_default();
    (0..n as i64)
        .map(|i| Task {
            id: 1000 + i,
            user_id: 42,
            title: format!("Task number {i}: write the quarterly report"),
            description: (i % 2 == 0).then(|| "A description of moderate length, as people write them.".to_owned()),
            is_completed: i % 3 == 0,
            due_date: (i % 4 == 0).then_some(t + chrono::Duration::days(i)),
            created_at: t,
            updated_at: t,
        })
        .collect()
}

/// The encoded body of [`sample_tasks`], as the cache stores it.
pub fn encoded_tasks(n: usize) -> Bytes {
    Bytes::from(serde_json::to_vec(&sample_tasks(n)).unwrap_or_default())
}

/// Keys with the server's default lifetimes.
pub fn tokens() -> Tokens {
    Tokens::new(b"bench-secret-bench-secret-bench-secret", Duration::from_secs(900), Duration::from_secs(604_800))
}

/// An access token of user 42, session 7.
pub fn access_token(t: &Tokens) -> String {
    t.issue(42, 7, Role::User, "refresh-jti".into(), i64::MAX).access_token
}

/// A typical `POST /tasks` body.
pub const NEW_TASK_BODY: &[u8] =
    br#"{"title":"  Prepare the release notes  ","description":"Summarise the changes since 1.4","dueDate":"2030-06-01T10:00:00+02:00"}"#;

/// What the operations of [`OPS`] run on, made once.
pub struct Pieces {
    tokens: Tokens,
    token: String,
    router: Router,
    tasks_20: Vec<Task>,
    tasks_100: Vec<Task>,
    /// The router's metric handles live in it.
    _metrics: Metrics,
}

impl Pieces {
    /// The pieces, with the token already verified once (the cached case
    /// measures hits).
    pub fn new() -> Self {
        let tokens = tokens();
        let token = access_token(&tokens);
        let _ = tokens.verify_access(&token);
        let metrics = Metrics::new();
        let router = Router::new(&metrics);
        Self { tokens, token, router, tasks_20: sample_tasks(20), tasks_100: sample_tasks(100), _metrics: metrics }
    }
}

impl Default for Pieces {
    fn default() -> Self {
        Self::new()
    }
}

/// One CPU-bound operation, measured by both criterion
/// (`benches/paths.rs`, wall time) and callgrind (`instructions`).
pub struct Op {
    /// Its name in `baselines/instructions.json`.
    pub name: &'static str,
    /// Its criterion group.
    pub group: &'static str,
    /// Its criterion function within the group.
    pub bench: &'static str,
    /// Elements per run, for criterion's throughput (0: none).
    pub elements: u64,
    /// Runs it once.
    pub run: fn(&Pieces),
}

/// Every operation both measurements cover, declared once. (Password
/// hashing is criterion's only: 19 MiB of Argon2 under valgrind takes
/// minutes, and its cost is set by its parameters, not by our code.)
pub const OPS: &[Op] = &[
    Op {
        name: "jwt_sign_pair",
        group: "jwt",
        bench: "sign_pair",
        elements: 0,
        run: |p| drop(black_box(p.tokens.issue(black_box(42), 7, Role::User, "jti".into(), i64::MAX))),
    },
    Op {
        name: "jwt_verify",
        group: "jwt",
        bench: "verify_access",
        elements: 0,
        run: |p| drop(black_box(p.tokens.verify(black_box(&p.token), TokenType::Access))),
    },
    Op {
        name: "jwt_verify_cached",
        group: "jwt",
        bench: "verify_access_cached",
        elements: 0,
        run: |p| drop(black_box(p.tokens.verify_access(black_box(&p.token)))),
    },
    Op {
        name: "route_get_task",
        group: "http",
        bench: "route_get_task",
        elements: 0,
        run: |p| {
            black_box(p.router.find(&hyper::Method::GET, black_box("/tasks/12345")));
        },
    },
    Op {
        name: "parse_list_query",
        group: "http",
        bench: "parse_list_query",
        elements: 0,
        run: |_| drop(black_box(ListQuery::parse(black_box(Some("limit=20&offset=40&completed=false"))))),
    },
    Op {
        name: "decode_new_task",
        group: "http",
        bench: "decode_new_task",
        elements: 0,
        run: |_| {
            drop(black_box(serde_json::from_slice::<NewTaskBody>(black_box(NEW_TASK_BODY)).map(NewTaskBody::validate)))
        },
    },
    Op {
        name: "encode_tasks_20",
        group: "http",
        bench: "encode_tasks/20",
        elements: 20,
        run: |p| drop(black_box(serde_json::to_vec(black_box(&p.tasks_20)))),
    },
    Op {
        name: "encode_tasks_100",
        group: "http",
        bench: "encode_tasks/100",
        elements: 100,
        run: |p| drop(black_box(serde_json::to_vec(black_box(&p.tasks_100)))),
    },
    Op {
        name: "revocation_decide",
        group: "revocation",
        bench: "decide_from_redis_reply",
        elements: 0,
        run: |_| {
            let (blocked, min) = parse_nbf(black_box(b"1234567:a"));
            black_box(is_revoked(black_box(2_000_000), blocked, min, false));
        },
    },
];
