//! The contract's rules on a Redis Cluster (`REDIS_CLUSTER_URLS`): three
//! primaries and three replicas of the test's own, started by
//! scripts/redis-cluster.sh. Failover and slot migration under load are in
//! `scripts/faults.sh cluster`.

use crate::helpers::*;
use std::process::Command;
use std::time::Duration;

/// A throwaway cluster, stopped when dropped.
struct Cluster {
    dir: String,
    urls: String,
}

impl Cluster {
    fn start() -> Self {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/redis-cluster.sh");
        let out = Command::new("bash").arg(script).arg("start").output().expect("scripts/redis-cluster.sh runs");
        assert!(out.status.success(), "cluster start: {}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let value = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("export {name}='")))
                .and_then(|v| v.strip_suffix('\''))
                .unwrap_or_else(|| panic!("{name} in {text}"))
                .to_owned()
        };
        Self { dir: value("REDIS_CLUSTER_DIR"), urls: value("REDIS_CLUSTER_URLS") }
    }

    fn ports(&self) -> Vec<String> {
        std::fs::read_to_string(format!("{}/ports", self.dir))
            .expect("ports")
            .split_whitespace()
            .map(String::from)
            .collect()
    }
}

/// The port of the primary holding `slot`, and how many slots it holds,
/// from `CLUSTER NODES` (`id ip:port@bus flags master ... connected 0-5460`).
fn primary_of(ports: &[String], slot: u16) -> (String, usize) {
    let out = Command::new("redis-cli").args(["-p", &ports[0], "cluster", "nodes"]).output().expect("redis-cli");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 9 || !fields[2].contains("master") || fields[2].contains("fail") {
            continue;
        }
        let ranges: Vec<(u16, u16)> = fields[8..]
            .iter()
            .filter(|r| !r.starts_with('['))
            .map(|r| match r.split_once('-') {
                Some((a, b)) => (a.parse().expect("slot"), b.parse().expect("slot")),
                None => (r.parse().expect("slot"), r.parse().expect("slot")),
            })
            .collect();
        if ranges.iter().any(|&(a, b)| (a..=b).contains(&slot)) {
            let port = fields[1].split(['@', ':']).nth(1).expect("ip:port@bus").to_owned();
            let count = ranges.iter().map(|&(a, b)| usize::from(b - a) + 1).sum();
            return (port, count);
        }
    }
    panic!("no primary holds slot {slot}: {text}");
}

/// The slot of a user's keys (hash tag `{u:ID}`).
fn slot_of_user(uid: i64) -> u16 {
    tollgate::kv::slot_of_tag(&format!("u:{uid}"))
}

/// FLUSHALL on every primary of the cluster on `ports` (replicas refuse
/// it, and follow their primary).
fn flush_primaries(ports: &[String]) {
    for p in ports {
        let _ = Command::new("redis-cli").args(["-p", p, "flushall"]).output();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/redis-cluster.sh");
        let _ = Command::new("bash").arg(script).args(["stop", &self.dir]).output();
    }
}

const FROM_REDIS: &str = r#"revocation_checks_total{result="allowed",source="redis"}"#;
const REBUILT_SLOTS: &str = "redis_rebuilt_slots_total";
const HIT: &str = r#"cache_requests_total{cache="tasks",result="hit"}"#;
const MISS: &str = r#"cache_requests_total{cache="tasks",result="miss"}"#;

#[tokio::test]
async fn revocation_and_read_your_writes_hold_on_a_cluster_and_a_flush_or_failed_write_rebuilds_only_what_it_lost() {
    let cluster = tokio::task::spawn_blocking(Cluster::start).await.expect("join");
    let app = spawn_with(Options::default().env("REDIS_CLUSTER_URLS", &cluster.urls)).await;
    let admin = app.admin().await;
    let victim = app.new_user().await;
    let writer = app.new_user().await;
    let (logged_out, _) = app.tokens(&writer.email, PASSWORD).await;

    // Served from the cluster: one Lua call per request on the user's node.
    let served = eventually(Duration::from_secs(10), || async {
        app.get("/me", &victim.access).await.status() == 200 && app.metric(FROM_REDIS).await > 0.0
    })
    .await;
    assert!(served, "revocation checks answered by the cluster");
    app.create_task(&writer.access, "one").await;
    assert_eq!(app.list(&writer.access, "").await.len(), 1);
    assert_eq!(app.list(&writer.access, "").await.len(), 1, "from the cache");
    app.create_task(&writer.access, "two").await;
    assert_eq!(app.list(&writer.access, "").await.len(), 2, "read-your-writes");

    assert_eq!(app.set_status(&admin, victim.id, "banned").await.status(), 200);
    assert_eq!(app.post_empty("/auth/logout", &logged_out).await.status(), 204);
    assert_eq!(app.get("/tasks", &victim.access).await.status(), 401);
    assert_eq!(app.get("/tasks", &logged_out).await.status(), 401);
    assert_eq!(app.get("/tasks", &writer.access).await.status(), 200, "the other session lives");

    // One primary flushed: only its slots are void. Their users' checks go
    // to PostgreSQL until a rebuild restores those slots alone; a user on
    // another primary keeps its epoch and its cached page.
    let ports = cluster.ports();
    let (victim_node, victim_slots) = primary_of(&ports, slot_of_user(victim.id));
    let mut bystander = None;
    for _ in 0..12 {
        let u = app.new_user().await;
        if primary_of(&ports, slot_of_user(u.id)).0 != victim_node {
            bystander = Some(u);
            break;
        }
    }
    let bystander = bystander.expect("a user on another primary among 12");
    app.create_task(&bystander.access, "kept").await;
    assert_eq!(app.list(&bystander.access, "").await.len(), 1);
    assert_eq!(app.list(&bystander.access, "").await.len(), 1, "cached");
    let slots_before = app.metric(REBUILT_SLOTS).await;
    let (hits, misses) = (app.metric(HIT).await, app.metric(MISS).await);
    let flushed = victim_node.clone();
    tokio::task::spawn_blocking(move || flush_primaries(&[flushed])).await.expect("join");
    let rebuilt = eventually(Duration::from_secs(20), || async {
        assert_eq!(app.get("/tasks", &victim.access).await.status(), 401, "banned, whoever answers");
        app.metric(REBUILT_SLOTS).await > slots_before
    })
    .await;
    assert!(rebuilt, "the flushed primary's slots are rebuilt");
    // A second, wider rebuild right after would show in the count below.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        app.metric(REBUILT_SLOTS).await - slots_before,
        victim_slots as f64,
        "exactly the slots of the flushed primary ({victim_node}) were rebuilt"
    );
    assert_eq!(app.list(&bystander.access, "").await.len(), 1);
    assert_eq!(
        (app.metric(HIT).await - hits, app.metric(MISS).await - misses),
        (1.0, 0.0),
        "another primary's user kept its epoch and cached page"
    );
    let before = app.metric(FROM_REDIS).await;
    assert_eq!(app.get("/me", &victim.access).await.status(), 401);
    assert_eq!(app.get("/me", &bystander.access).await.status(), 200);
    assert!(app.metric(FROM_REDIS).await > before, "the cluster answers again");

    // A write that cannot be mirrored: the victim's primary pauses writes
    // for longer than the server waits. This instance stops trusting that
    // one slot, voids its epoch once the primary takes writes again, and
    // the rebuild restores that slot alone.
    let slots_before = app.metric(REBUILT_SLOTS).await;
    let node = victim_node.clone();
    let paused = tokio::task::spawn_blocking(move || {
        Command::new("redis-cli").args(["-p", &node, "client", "pause", "3000", "write"]).output()
    });
    assert!(paused.await.expect("join").expect("redis-cli").status.success());
    assert_eq!(app.set_status(&admin, victim.id, "active").await.status(), 200, "committed; the mirror times out");
    assert_eq!(app.get("/me", &victim.access).await.status(), 401, "re-activation resurrects nothing");
    let rebuilt = eventually(Duration::from_secs(20), || async {
        assert_eq!(app.get("/me", &victim.access).await.status(), 401);
        app.metric(REBUILT_SLOTS).await > slots_before
    })
    .await;
    assert!(rebuilt, "the slot the write fell behind in is voided and rebuilt");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(app.metric(REBUILT_SLOTS).await - slots_before, 1.0, "only the victim's slot was voided and rebuilt");
    assert_eq!(app.set_status(&admin, victim.id, "banned").await.status(), 200);

    let slots_before = app.metric(REBUILT_SLOTS).await;
    tokio::task::spawn_blocking(move || flush_primaries(&ports)).await.expect("join");
    // Every slot's epoch is gone: PostgreSQL answers, the cluster is
    // rebuilt, and then the cluster answers again, with both revocations.
    let before = app.metric(FROM_REDIS).await;
    let rebuilt = eventually(Duration::from_secs(20), || async {
        assert_eq!(app.get("/tasks", &victim.access).await.status(), 401, "banned, whoever answers");
        assert_eq!(app.get("/tasks", &logged_out).await.status(), 401, "logged out, whoever answers");
        assert_eq!(app.list(&writer.access, "").await.len(), 2, "no stale or lost list");
        // Counted once the last slot is done; checks on the slots done
        // first are answered by Redis before that.
        app.metric(REBUILT_SLOTS).await - slots_before >= f64::from(tollgate::kv::SLOTS)
            && app.metric(FROM_REDIS).await > before
    })
    .await;
    assert!(rebuilt, "every slot is rebuilt from PostgreSQL and the cluster trusted again");
    let refused = r#"revocation_checks_total{result="revoked",source="redis"}"#;
    let n = app.metric(refused).await;
    assert_eq!(app.get("/tasks", &victim.access).await.status(), 401);
    assert_eq!(app.get("/tasks", &logged_out).await.status(), 401);
    assert_eq!(app.metric(refused).await, n + 2.0, "the rebuilt cluster refused both");
    drop(cluster);
}
