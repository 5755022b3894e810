//! Benchmarks of Tollgate's paths: the fixtures the criterion benches and
//! the instruction counter share, and the two regression gates.
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
use std::time::Duration;
use tollgate::auth::token::{Role, Tokens};
use tollgate::tasks::model::Task;

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
