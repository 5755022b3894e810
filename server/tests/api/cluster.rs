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

#[tokio::test]
async fn revocation_and_read_your_writes_hold_on_a_cluster_and_survive_flushing_every_primary() {
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

    let ports = cluster.ports();
    tokio::task::spawn_blocking(move || flush_primaries(&ports)).await.expect("join");
    // Every slot's epoch is gone: PostgreSQL answers, the cluster is
    // rebuilt, and then the cluster answers again, with both revocations.
    let before = app.metric(FROM_REDIS).await;
    let rebuilt = eventually(Duration::from_secs(20), || async {
        assert_eq!(app.get("/tasks", &victim.access).await.status(), 401, "banned, whoever answers");
        assert_eq!(app.get("/tasks", &logged_out).await.status(), 401, "logged out, whoever answers");
        assert_eq!(app.list(&writer.access, "").await.len(), 2, "no stale or lost list");
        app.metric(FROM_REDIS).await > before
    })
    .await;
    assert!(rebuilt, "the cluster is rebuilt from PostgreSQL and trusted again");
    let refused = r#"revocation_checks_total{result="revoked",source="redis"}"#;
    let n = app.metric(refused).await;
    assert_eq!(app.get("/tasks", &victim.access).await.status(), 401);
    assert_eq!(app.get("/tasks", &logged_out).await.status(), 401);
    assert_eq!(app.metric(refused).await, n + 2.0, "the rebuilt cluster refused both");
    drop(cluster);
}
