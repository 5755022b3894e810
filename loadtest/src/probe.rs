//! What the server itself saw during a scenario: its `/metrics` scraped
//! before and after (and once a second for the timeline), and the
//! difference of the contract's counters.
//!
//! The generator can only see statuses and latencies. Whether a fast
//! `GET /tasks` came from the cache or from PostgreSQL, whether revocation
//! was answered by Redis or fell back to the database, and whether a
//! dependency failed behind a 200 are the server's to say; its metric names
//! are part of the contract, so the harness reads them as any dashboard
//! does. A deployment of several instances behind a proxy answers `/metrics`
//! from one instance: the deltas then describe that instance.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One sample: a series (name and labels) and its value.
#[derive(Clone, Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// One scrape: every sample, counters and histogram buckets alike.
#[derive(Clone, Debug, Default)]
pub struct Scrape(Vec<Sample>);

impl Scrape {
    /// Parses the Prometheus text exposition format (comments skipped;
    /// label values may hold escaped quotes and backslashes). A line it
    /// cannot read is skipped: the scrape is a probe, not a validator.
    pub fn parse(text: &str) -> Self {
        Self(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .filter_map(parse_sample)
                .collect(),
        )
    }

    /// Every sample of `name`.
    fn of<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.0.iter().filter(move |s| s.name == name)
    }
}

/// `name{a="1",b="2"} 3`.
fn parse_sample(line: &str) -> Option<Sample> {
    let Some(open) = line.find('{') else {
        let mut words = line.split_whitespace();
        let (name, value) = (words.next()?, words.next()?.parse().ok()?);
        return Some(Sample { name: name.to_owned(), labels: BTreeMap::new(), value });
    };
    let mut labels = BTreeMap::new();
    let mut rest = &line[open + 1..];
    loop {
        rest = rest.trim_start_matches([',', ' ']);
        if let Some(after) = rest.strip_prefix('}') {
            rest = after;
            break;
        }
        let (key, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next()? {
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (i, '"') => break i,
                (_, c) => value.push(c),
            }
        };
        labels.insert(key.trim().to_owned(), value);
        rest = &after[end + 1..];
    }
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some(Sample { name: line[..open].to_owned(), labels, value })
}

/// `after - before` of every series of `name` (a counter that went
/// backwards was reset: its `after` is the delta).
fn delta(before: &Scrape, after: &Scrape, name: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    after
        .of(name)
        .map(|a| {
            let b = before.of(name).find(|b| b.labels == a.labels).map_or(0.0, |b| b.value);
            (a.labels.clone(), if a.value >= b { a.value - b } else { a.value })
        })
        .collect()
}

fn sum_by(rows: &[(BTreeMap<String, String>, f64)], keys: &[&str]) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for (labels, v) in rows {
        let k: Vec<&str> = keys.iter().map(|k| labels.get(*k).map_or("", String::as_str)).collect();
        *out.entry(k.join(" ")).or_insert(0) += v.round() as u64;
    }
    out.retain(|_, v| *v > 0);
    out
}

/// The quantile `q` of a histogram's bucket deltas, interpolated within
/// its bucket as Prometheus's `histogram_quantile` does; seconds.
fn quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut lo, mut below) = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return Some(lo);
            }
            let within = (count - below).max(f64::MIN_POSITIVE);
            return Some(lo + (le - lo) * ((rank - below) / within));
        }
        (lo, below) = (le, count);
    }
    Some(lo)
}

/// The server's own account of one scenario.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ServerStats {
    /// `cache_requests_total` by cache: (hits, misses).
    pub cache: BTreeMap<String, (u64, u64)>,
    /// Hits over hits and misses of every cache, when there were any.
    pub hit_ratio: Option<f64>,
    /// `revocation_checks_total` by `source result`.
    pub revocation: BTreeMap<String, u64>,
    /// Share of revocation checks answered by PostgreSQL (source `db`).
    pub db_check_share: Option<f64>,
    /// 5xx answers by `method route`.
    pub errors_5xx: BTreeMap<String, u64>,
    /// `dependency_errors_total` by `dependency op`.
    pub dependency_errors: BTreeMap<String, u64>,
    /// Password hashes during the scenario.
    pub hashes: u64,
    /// Their median duration, ms.
    pub hash_p50_ms: Option<f64>,
    /// Their 99th percentile, ms.
    pub hash_p99_ms: Option<f64>,
}

impl ServerStats {
    /// What happened between two scrapes.
    pub fn between(before: &Scrape, after: &Scrape) -> Self {
        let cache_rows = delta(before, after, "cache_requests_total");
        let mut cache: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for (labels, v) in &cache_rows {
            let e = cache.entry(labels.get("cache").cloned().unwrap_or_default()).or_default();
            match labels.get("result").map(String::as_str) {
                Some("hit") => e.0 += v.round() as u64,
                Some("miss") => e.1 += v.round() as u64,
                _ => {}
            }
        }
        cache.retain(|_, (h, m)| *h + *m > 0);
        let (hits, all) = cache.values().fold((0, 0), |(h, a), (hit, miss)| (h + hit, a + hit + miss));
        let revocation = sum_by(&delta(before, after, "revocation_checks_total"), &["source", "result"]);
        let checks: u64 = revocation.values().sum();
        let db: u64 = revocation.iter().filter(|(k, _)| k.starts_with("db ")).map(|(_, v)| v).sum();
        let status5 = delta(before, after, "http_requests_total")
            .into_iter()
            .filter(|(l, _)| l.get("status").is_some_and(|s| s.starts_with('5')))
            .collect::<Vec<_>>();
        let mut buckets: Vec<(f64, f64)> = delta(before, after, "password_hash_duration_seconds_bucket")
            .into_iter()
            .filter_map(|(l, v)| Some((l.get("le")?.parse::<f64>().ok()?, v)))
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        let hashes = buckets.last().map_or(0, |b| b.1.round() as u64);
        Self {
            hit_ratio: (all > 0).then(|| hits as f64 / all as f64),
            cache,
            db_check_share: (checks > 0).then(|| db as f64 / checks as f64),
            revocation,
            errors_5xx: sum_by(&status5, &["method", "route"]),
            dependency_errors: sum_by(&delta(before, after, "dependency_errors_total"), &["dependency", "op"]),
            hashes,
            hash_p50_ms: quantile(&buckets, 0.5).map(|s| s * 1000.0),
            hash_p99_ms: quantile(&buckets, 0.99).map(|s| s * 1000.0),
        }
    }
}

/// Scrapes `base/metrics` (a short timeout: a probe must not stall a run).
pub async fn scrape(client: &reqwest::Client, base: &str) -> anyhow::Result<Scrape> {
    let r = client.get(format!("{base}/metrics")).timeout(std::time::Duration::from_secs(5)).send().await?;
    anyhow::ensure!(r.status().is_success(), "GET {base}/metrics answered {}", r.status());
    Ok(Scrape::parse(&r.text().await?))
}

/// A limit on one of the server's numbers, for every scenario where it
/// applies or for one scenario by name.
#[derive(Clone, Debug, PartialEq)]
pub struct Gate {
    /// The scenario it applies to (None: every scenario with such traffic).
    pub scenario: Option<String>,
    /// The limit.
    pub limit: f64,
}

/// The gates of one option, as given on the command line.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Gates(pub Vec<Gate>);

/// `0.9` or `cached-read=0.9,graphql-read=0.8`: ratios from 0 to 1.
pub fn parse_gates(s: &str) -> Result<Gates, String> {
    s.split(',')
        .map(|part| {
            let (scenario, limit) = match part.split_once('=') {
                Some((n, l)) => (Some(n.trim().to_owned()), l),
                None => (None, part),
            };
            let limit: f64 = limit.trim().parse().map_err(|_| format!("{part:?}: takes a ratio, e.g. 0.9"))?;
            if !(0.0..=1.0).contains(&limit) {
                return Err(format!("{part:?}: a ratio is from 0 to 1"));
            }
            Ok(Gate { scenario, limit })
        })
        .collect::<Result<_, _>>()
        .map(Gates)
}

/// The gates on the server's own numbers (`--min-hit-ratio`,
/// `--max-db-check-share`). A gate whose scenario saw no such traffic
/// (no cached path, no revocation check) does not apply to it; a gate
/// that applies but could not be judged (no `/metrics`) fails.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServerGates {
    /// The cache hit ratio at least this.
    pub min_hit_ratio: Vec<Gate>,
    /// The share of revocation checks answered by PostgreSQL at most this.
    pub max_db_check_share: Vec<Gate>,
}

impl ServerGates {
    /// The gates scenario `name` failed, as sentences.
    pub fn judge(&self, name: &str, stats: Option<&ServerStats>) -> Vec<String> {
        let applies = |g: &&Gate| g.scenario.as_deref().is_none_or(|s| s == name);
        let mut failed = Vec::new();
        let named = |g: &Gate| g.scenario.is_some();
        for g in self.min_hit_ratio.iter().filter(applies) {
            match stats.map(|s| s.hit_ratio) {
                None => failed.push("--min-hit-ratio: the server's /metrics could not be read".to_owned()),
                Some(None) if named(g) => failed.push("--min-hit-ratio: no cached request in this scenario".to_owned()),
                Some(Some(r)) if r < g.limit => {
                    failed.push(format!("--min-hit-ratio {}: the server's cache hit ratio was {:.3}", g.limit, r))
                }
                Some(_) => {}
            }
        }
        for g in self.max_db_check_share.iter().filter(applies) {
            match stats.map(|s| s.db_check_share) {
                None => failed.push("--max-db-check-share: the server's /metrics could not be read".to_owned()),
                Some(None) if named(g) => {
                    failed.push("--max-db-check-share: no revocation check in this scenario".to_owned())
                }
                Some(Some(r)) if r > g.limit => failed.push(format!(
                    "--max-db-check-share {}: PostgreSQL answered {:.3} of the revocation checks",
                    g.limit, r
                )),
                Some(_) => {}
            }
        }
        failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = r#"# HELP cache_requests_total x
# TYPE cache_requests_total counter
cache_requests_total{cache="tasks",result="hit"} 10
cache_requests_total{cache="tasks",result="miss"} 5
revocation_checks_total{result="allowed",source="redis"} 100
http_requests_total{method="GET",route="/tasks",status="200"} 15
password_hash_duration_seconds_bucket{le="0.05"} 0
password_hash_duration_seconds_bucket{le="0.1"} 0
password_hash_duration_seconds_bucket{le="+Inf"} 0
"#;
    const AFTER: &str = r#"cache_requests_total{cache="tasks",result="hit"} 100
cache_requests_total{cache="tasks",result="miss"} 15
cache_requests_total{cache="posts",result="hit"} 0
revocation_checks_total{result="allowed",source="redis"} 190
revocation_checks_total{result="allowed",source="db"} 10
revocation_checks_total{result="revoked",source="db"} 0
http_requests_total{method="GET",route="/tasks",status="200"} 115
http_requests_total{method="GET",route="/tasks/{id}",status="503"} 2
dependency_errors_total{dependency="redis",op="mget \"x\""} 3
password_hash_duration_seconds_bucket{le="0.05"} 50
password_hash_duration_seconds_bucket{le="0.1"} 100
password_hash_duration_seconds_bucket{le="+Inf"} 100
"#;

    #[test]
    fn deltas_give_the_servers_view_of_a_scenario() {
        let s = ServerStats::between(&Scrape::parse(BEFORE), &Scrape::parse(AFTER));
        assert_eq!(s.cache.get("tasks"), Some(&(90, 10)));
        assert!(!s.cache.contains_key("posts"), "a cache without traffic is left out");
        assert_eq!(s.hit_ratio, Some(0.9));
        assert_eq!(s.revocation.get("redis allowed"), Some(&90));
        assert_eq!(s.db_check_share, Some(0.1));
        assert_eq!(s.errors_5xx.get("GET /tasks/{id}"), Some(&2));
        assert_eq!(s.errors_5xx.len(), 1);
        assert_eq!(s.dependency_errors.get("redis mget \"x\""), Some(&3));
        assert_eq!(s.hashes, 100);
        assert!((s.hash_p50_ms.expect("p50") - 50.0).abs() < 1e-9);
        assert!((s.hash_p99_ms.expect("p99") - 99.0).abs() < 1e-9);
    }

    #[test]
    fn server_gates_apply_where_there_is_such_traffic() {
        let s = ServerStats::between(&Scrape::parse(BEFORE), &Scrape::parse(AFTER));
        let gates = |hit: &str, db: &str| ServerGates {
            min_hit_ratio: parse_gates(hit).expect("parses").0,
            max_db_check_share: parse_gates(db).expect("parses").0,
        };
        assert!(gates("0.9", "0.1").judge("cached-read", Some(&s)).is_empty());
        let failed = gates("0.95", "0.05").judge("cached-read", Some(&s));
        assert_eq!(failed.len(), 2, "{failed:?}");
        assert!(failed[0].contains("hit ratio was 0.900"), "{failed:?}");
        assert!(gates("other=0.99", "1").judge("cached-read", Some(&s)).is_empty(), "another scenario's gate");
        let idle = ServerStats::between(&Scrape::parse(AFTER), &Scrape::parse(AFTER));
        assert!(gates("0.99", "0").judge("login", Some(&idle)).is_empty(), "no cached path: not judged");
        assert_eq!(gates("login=0.99", "1").judge("login", Some(&idle)).len(), 1, "named: must be judged");
        assert_eq!(gates("0.5", "1").judge("cached-read", None).len(), 2, "no /metrics: cannot pass");
        assert!(parse_gates("1.5").is_err() && parse_gates("x=y").is_err());
    }

    #[test]
    fn an_idle_server_has_no_ratios() {
        let s = ServerStats::between(&Scrape::parse(AFTER), &Scrape::parse(AFTER));
        assert_eq!((s.hit_ratio, s.db_check_share, s.hash_p50_ms), (None, None, None));
    }
}
