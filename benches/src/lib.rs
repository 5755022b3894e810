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
use tollgate::auth::external::KeySet;
use tollgate::auth::revocation::{is_revoked, parse_nbf};
use tollgate::auth::token::{Principal, Role, TokenType, Tokens};
use tollgate::config::OidcConfig;
use tollgate::http::router::Router;
use tollgate::metrics::Metrics;
use tollgate::tasks::model::{ListQuery, NewTaskBody, Task};

/// The configuration the server would run with in this environment
/// (defaults, then the environment), for the examples that serve or hash as
/// it does; every bad value is in the error.
pub fn config_from_env() -> anyhow::Result<tollgate::Config> {
    tollgate::Config::from_source(&tollgate::config::Env).map_err(|errors| {
        let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
        anyhow::anyhow!("invalid configuration: {}", errors.join("; "))
    })
}

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

/// The load harness's test identity provider: its public keys, and its
/// private ones to sign with (public by design; see
/// loadtest/fixtures/oidc/README.md).
pub mod provider_keys {
    /// Its JWKS document.
    pub const JWKS: &str = include_str!("../../loadtest/fixtures/oidc/jwks.json");
    /// The RS256 key (PKCS#1 DER), `kid` `loadtest-rs256`.
    pub const RS256_DER: &[u8] = include_bytes!("../../loadtest/fixtures/oidc/rs256.der");
    /// The ES256 key (PKCS#8 DER), `kid` `loadtest-es256`.
    pub const ES256_DER: &[u8] = include_bytes!("../../loadtest/fixtures/oidc/es256.der");
}

/// A provider's access token in Entra ID's shape, signed with `alg`
/// (RS256 or ES256) by the test keys; `iat` is `now`, valid for an hour.
pub fn provider_token(alg: jsonwebtoken::Algorithm, issuer: &str, audience: &str, now: i64) -> String {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    let (key, kid) = match alg {
        Algorithm::ES256 => (EncodingKey::from_ec_der(provider_keys::ES256_DER), "loadtest-es256"),
        _ => (EncodingKey::from_rsa_der(provider_keys::RS256_DER), "loadtest-rs256"),
    };
    let mut header = Header::new(alg);
    header.kid = Some(kid.into());
    let claims = serde_json::json!({"iss": issuer, "sub": "bench-subject", "aud": audience, "iat": now,
        "exp": now + 3600, "tid": "bench-tenant", "ver": "2.0", "jti": "bench-jti"});
    jsonwebtoken::encode(&header, &claims, &key).unwrap_or_default()
}

/// `iat` of [`PROVIDER_RS256`] and [`PROVIDER_ES256`]; they expire an hour
/// later, in 2033, and are verified as at this second.
pub const PROVIDER_TOKENS_IAT: i64 = 1_999_990_000;

/// A provider token signed RS256 by the test key, at [`PROVIDER_TOKENS_IAT`].
/// Stored, not signed at start: RSA and ECDSA signing are randomised, and
/// their varying cost would drown the instruction counts of the small
/// operations (`print_provider_tokens` makes new ones).
pub const PROVIDER_RS256: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiIsImtpZCI6ImxvYWR0ZXN0LXJzMjU2In0.eyJhdWQiOiJhcGk6Ly90b2xsZ2F0ZSIsImV4cCI6MTk5OTk5MzYwMCwiaWF0IjoxOTk5OTkwMDAwLCJpc3MiOiJodHRwczovL2xvZ2luLmV4YW1wbGUvdGVuYW50L3YyLjAiLCJqdGkiOiJiZW5jaC1qdGkiLCJzdWIiOiJiZW5jaC1zdWJqZWN0IiwidGlkIjoiYmVuY2gtdGVuYW50IiwidmVyIjoiMi4wIn0.AS71xF8b-gbN3hGy3gHpALHeh4ZJeymvb6zn5Lo8fxSxH9GiV6bB6Y3BYeoE4D_GODSGpN3yG_EGrUzcR8eeqL5ZjsPRHXInN0fgPY8GfPzfhyXLu4LtWrBUqKWXayzloSfctnEfv4lqG6oZxndxTQULNmOzw5UC2yIQXgJrOhuX_kC9QKfPK-5VD5wZdmERXzJQQJtmNpRbuQ-mcYrLl8_Op3iL1oyoobVMEsXjE57I7cLpwzreOkmY-t4SmaQ9Q16yXCEuamXuR5X2lA1FpvCa_r2uEauPLUQ9tcyegmc_GYoOZlRiLBSQMD0Mo5_1xK89ojPIl4LbwbbK110l2w";
/// The same claims signed ES256.
pub const PROVIDER_ES256: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJFUzI1NiIsImtpZCI6ImxvYWR0ZXN0LWVzMjU2In0.eyJhdWQiOiJhcGk6Ly90b2xsZ2F0ZSIsImV4cCI6MTk5OTk5MzYwMCwiaWF0IjoxOTk5OTkwMDAwLCJpc3MiOiJodHRwczovL2xvZ2luLmV4YW1wbGUvdGVuYW50L3YyLjAiLCJqdGkiOiJiZW5jaC1qdGkiLCJzdWIiOiJiZW5jaC1zdWJqZWN0IiwidGlkIjoiYmVuY2gtdGVuYW50IiwidmVyIjoiMi4wIn0.qXQw77eUPlHXumruq8svsxtr4f9prS5krLdRkFqr1f3FD9tL_z5Cgvy0v2ChUP25Ygft2tdpVuILGK2J6QN9Ag";

/// What the operations of [`OPS`] run on, made once.
pub struct Pieces {
    tokens: Tokens,
    token: String,
    provider: OidcConfig,
    provider_keys: KeySet,
    rs256: String,
    es256: String,
    now: i64,
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
        let provider = OidcConfig {
            issuer: "https://login.example/tenant/v2.0".into(),
            audience: "api://tollgate".into(),
            jwks_url: None,
            required_claims: Vec::new(),
            admin_group: None,
        };
        let provider_keys =
            KeySet::from_jwks(&serde_json::from_str(provider_keys::JWKS).unwrap_or(serde_json::Value::Null));
        let now = PROVIDER_TOKENS_IAT + 1;
        let (rs256, es256) = (PROVIDER_RS256.to_owned(), PROVIDER_ES256.to_owned());
        // The verified-token cache holds provider tokens as it does ours.
        let principal = Principal {
            user_id: 42,
            session_id: now,
            role: Role::User,
            jti: "bench-jti".into(),
            exp: now + 3600,
            external: Some("0123456789abcdef0123456789abcdef".into()),
        };
        tokens.remember(&rs256, std::sync::Arc::new(principal));
        Self {
            tokens,
            token,
            provider,
            provider_keys,
            rs256,
            es256,
            now,
            router,
            tasks_20: sample_tasks(20),
            tasks_100: sample_tasks(100),
            _metrics: metrics,
        }
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
        name: "provider_verify_rs256",
        group: "jwt",
        bench: "verify_provider_rs256",
        elements: 0,
        run: |p| drop(black_box(p.provider_keys.verify(&p.provider, black_box(&p.rs256), p.now))),
    },
    Op {
        name: "provider_verify_es256",
        group: "jwt",
        bench: "verify_provider_es256",
        elements: 0,
        run: |p| drop(black_box(p.provider_keys.verify(&p.provider, black_box(&p.es256), p.now))),
    },
    Op {
        name: "provider_verify_cached",
        group: "jwt",
        bench: "verify_provider_cached",
        elements: 0,
        run: |p| drop(black_box(p.tokens.remembered(black_box(&p.rs256)))),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A bench of a failing verification would time the error path.
    #[test]
    #[ignore = "prints fresh fixture tokens"]
    fn print_provider_tokens() {
        let (iss, aud) = ("https://login.example/tenant/v2.0", "api://tollgate");
        for alg in [jsonwebtoken::Algorithm::RS256, jsonwebtoken::Algorithm::ES256] {
            println!("{alg:?} {}", provider_token(alg, iss, aud, PROVIDER_TOKENS_IAT));
        }
    }

    #[test]
    fn the_provider_benches_verify_real_tokens() {
        let p = Pieces::new();
        for token in [&p.rs256, &p.es256] {
            let t = p.provider_keys.verify(&p.provider, token, p.now).expect("the test provider's token verifies");
            assert_eq!(t.subject, "bench-subject");
        }
        assert_eq!(p.provider_keys.len(), 2);
        assert!(matches!(p.tokens.remembered(&p.rs256), Some(Ok(_))), "the cached case is a hit");
        assert!(p.tokens.verify(&p.token, TokenType::Access).is_ok());
    }
}
