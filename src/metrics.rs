//! Every metric veto exports, defined once; names and labels are part of the contract
//! (SPEC §6). Prometheus text format on `GET /metrics`.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::decision::{Decision, Reason};
use crate::revocation::Source;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CheckLabels {
    /// `allow`, `deny` or `unavailable`.
    pub decision: &'static str,
    /// A SPEC §4 reason for denials, `ok` for allowed checks, `unavailable` when undecidable.
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    pub source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IssuerLabels {
    pub issuer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IssuerResultLabels {
    pub issuer: String,
    pub result: &'static str,
}

/// The metrics, shared by every component that records one.
pub struct Metrics {
    registry: Registry,
    /// Check counters are resolved from their family once, up front: the request path
    /// then only increments an atomic, never takes the family's lock.
    allowed: Counter,
    denied: [Counter; Reason::ALL.len()],
    unavailable: Counter,
    check_duration: CheckDuration,
    rules: Family<SourceLabels, Gauge>,
    snapshot_version: Gauge,
    snapshot_reloads: Family<ResultLabels, Counter>,
    keys: Family<IssuerLabels, Gauge>,
    key_reloads: Family<IssuerResultLabels, Counter>,
    jwks_fetches: Family<IssuerResultLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let checks = Family::<CheckLabels, Counter>::default();
        let check_duration = CheckDuration::default();
        let rules = Family::<SourceLabels, Gauge>::default();
        let snapshot_version = Gauge::default();
        let snapshot_reloads = Family::<ResultLabels, Counter>::default();
        let keys = Family::<IssuerLabels, Gauge>::default();
        let key_reloads = Family::<IssuerResultLabels, Counter>::default();
        let jwks_fetches = Family::<IssuerResultLabels, Counter>::default();
        // prometheus-client appends `_total` to counters.
        registry.register(
            "veto_checks",
            "Checks answered, by decision and reason",
            checks.clone(),
        );
        registry.register(
            "veto_check_duration_seconds",
            "Time to decide one Check",
            check_duration.clone(),
        );
        registry.register(
            "veto_rules",
            "Revocation rules in force, by source",
            rules.clone(),
        );
        registry.register(
            "veto_snapshot_version",
            "Version of the published revocation snapshot",
            snapshot_version.clone(),
        );
        registry.register(
            "veto_snapshot_reloads",
            "Rules file reloads, by result",
            snapshot_reloads.clone(),
        );
        registry.register(
            "veto_keys",
            "Verification keys loaded, by issuer",
            keys.clone(),
        );
        registry.register(
            "veto_key_reloads",
            "Key file reloads, by issuer and result",
            key_reloads.clone(),
        );
        registry.register(
            "veto_jwks_fetches",
            "Key fetches from jwks_uri or discovery, by issuer and result",
            jwks_fetches.clone(),
        );
        // Zero-valued series exist from the start, so alerts on rates work before the
        // first event and the acceptance suite can read them.
        for result in ["ok", "error"] {
            let _ = snapshot_reloads.get_or_create(&ResultLabels { result });
        }
        for source in [Source::File, Source::Pushed] {
            let _ = rules.get_or_create(&SourceLabels {
                source: source.as_str(),
            });
        }
        let counter = |decision, reason| {
            checks
                .get_or_create(&CheckLabels { decision, reason })
                .clone()
        };
        Metrics {
            allowed: counter("allow", "ok"),
            denied: Reason::ALL.map(|r| counter("deny", r.as_str())),
            unavailable: counter("unavailable", "unavailable"),
            registry,
            check_duration,
            rules,
            snapshot_version,
            snapshot_reloads,
            keys,
            key_reloads,
            jwks_fetches,
        }
    }

    /// Counts one answered Check and how long it took.
    pub fn check(&self, decision: &Decision, took: Duration) {
        match decision {
            Decision::Allow { .. } => self.allowed.inc(),
            Decision::Deny(r) => self.denied[*r as usize].inc(),
            Decision::Unavailable(_) => self.unavailable.inc(),
        };
        self.check_duration.observe(took);
    }

    pub fn snapshot_published(&self, version: u64, file_rules: usize, pushed_rules: usize) {
        self.snapshot_version
            .set(i64::try_from(version).unwrap_or(i64::MAX));
        for (source, n) in [(Source::File, file_rules), (Source::Pushed, pushed_rules)] {
            self.rules
                .get_or_create(&SourceLabels {
                    source: source.as_str(),
                })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    pub fn rules_reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.snapshot_reloads
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    pub fn keys_loaded(&self, issuer: &str, count: usize) {
        self.keys
            .get_or_create(&IssuerLabels {
                issuer: issuer.to_owned(),
            })
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    pub fn keys_reload(&self, issuer: &str, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.key_reloads
            .get_or_create(&IssuerResultLabels {
                issuer: issuer.to_owned(),
                result,
            })
            .inc();
    }

    pub fn jwks_fetch(&self, issuer: &str, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.jwks_fetches
            .get_or_create(&IssuerResultLabels {
                issuer: issuer.to_owned(),
                result,
            })
            .inc();
    }

    /// The exposition in `format`.
    pub fn encode(&self, format: Exposition) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode_registry(&mut out, &self.registry);
        match format {
            Exposition::OpenMetrics => {
                let _ = prometheus_client::encoding::text::encode_eof(&mut out);
                out
            }
            Exposition::Classic => openmetrics_to_classic(&out),
        }
    }
}

/// The two text formats a scraper may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exposition {
    /// OpenMetrics 1.0 (`application/openmetrics-text`), what Prometheus asks for first.
    OpenMetrics,
    /// The classic Prometheus text format 0.0.4 (`text/plain`), for anything else.
    Classic,
}

impl Exposition {
    pub fn content_type(self) -> &'static str {
        match self {
            Exposition::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Exposition::Classic => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// prometheus-client writes only OpenMetrics text. The classic format differs, for the
/// metrics veto has, in three ways: no `# EOF` line, no `# UNIT` line, and a counter's
/// `# HELP`/`# TYPE` name its samples' full name (`veto_checks_total`), where OpenMetrics
/// names the family (`veto_checks`). Samples, labels and histograms read the same in both.
fn openmetrics_to_classic(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + 16 * counters.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let descriptor = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| Some((p, line.strip_prefix(p)?)));
        match descriptor {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                out.push_str(prefix);
                out.push_str(name);
                if counters.contains(name) {
                    out.push_str("_total");
                }
                out.push(' ');
                out.push_str(match tail {
                    "unknown" if prefix == "# TYPE " => "untyped",
                    other => other,
                });
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// Upper bounds of `veto_check_duration_seconds`, in nanoseconds: 25 µs doubling to about
/// 100 ms. A Check takes tens of microseconds; a slow one a few milliseconds.
const DURATION_BOUNDS_NS: [u64; 13] = {
    let mut b = [0u64; 13];
    let mut i = 0;
    while i < 13 {
        b[i] = 25_000 << i;
        i += 1;
    }
    b
};

/// The Check-duration histogram, lock-free: every Check records into it, and the
/// `prometheus-client` histogram takes a write lock per observation. Atomic counters per
/// bucket, summed at scrape time.
#[derive(Clone, Debug, Default)]
struct CheckDuration(Arc<DurationCells>);

#[derive(Debug, Default)]
struct DurationCells {
    /// Per bucket (not cumulative), plus the +Inf bucket last.
    buckets: [AtomicU64; DURATION_BOUNDS_NS.len() + 1],
    sum_ns: AtomicU64,
    count: AtomicU64,
}

impl CheckDuration {
    fn observe(&self, took: Duration) {
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let i = DURATION_BOUNDS_NS
            .iter()
            .position(|b| ns <= *b)
            .unwrap_or(DURATION_BOUNDS_NS.len());
        let cells = &self.0;
        if let Some(b) = cells.buckets.get(i) {
            b.fetch_add(1, Ordering::Relaxed);
        }
        cells.sum_ns.fetch_add(ns, Ordering::Relaxed);
        cells.count.fetch_add(1, Ordering::Relaxed);
    }
}

impl TypedMetric for CheckDuration {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for CheckDuration {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let cells = &self.0;
        let bounds = DURATION_BOUNDS_NS
            .iter()
            .map(|ns| *ns as f64 / 1e9)
            .chain(std::iter::once(f64::MAX));
        let buckets: Vec<(f64, u64)> = bounds
            .zip(cells.buckets.iter().map(|b| b.load(Ordering::Relaxed)))
            .collect();
        let sum = cells.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        let count = cells.count.load(Ordering::Relaxed);
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_uses_the_spec_names() {
        let m = Metrics::new();
        m.check(&Decision::Deny(Reason::Revoked), Duration::from_micros(40));
        m.snapshot_published(7, 3, 1);
        m.rules_reload(false);
        m.keys_loaded("https://a", 2);
        let text = m.encode(Exposition::OpenMetrics);
        for needle in [
            r#"veto_checks_total{decision="deny",reason="revoked"} 1"#,
            "veto_check_duration_seconds_bucket",
            r#"veto_rules{source="file"} 3"#,
            r#"veto_rules{source="pushed"} 1"#,
            "veto_snapshot_version 7",
            r#"veto_snapshot_reloads_total{result="error"} 1"#,
            r#"veto_keys{issuer="https://a"} 2"#,
            // 40 µs falls in the 50 µs bucket and every later one (buckets are cumulative).
            r#"veto_check_duration_seconds_bucket{le="0.000025"} 0"#,
            r#"veto_check_duration_seconds_bucket{le="0.00005"} 1"#,
            r#"veto_check_duration_seconds_bucket{le="+Inf"} 1"#,
            "veto_check_duration_seconds_count 1",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
    }

    #[test]
    fn the_classic_format_names_counters_by_their_samples_and_has_no_eof() {
        let m = Metrics::new();
        m.check(&Decision::Deny(Reason::Revoked), Duration::from_micros(40));
        let openmetrics = m.encode(Exposition::OpenMetrics);
        assert!(openmetrics.ends_with("# EOF\n"), "{openmetrics}");
        assert!(
            openmetrics.contains("# TYPE veto_checks counter\n"),
            "{openmetrics}"
        );

        let classic = m.encode(Exposition::Classic);
        assert!(!classic.contains("# EOF"), "{classic}");
        for needle in [
            "# HELP veto_checks_total Checks answered, by decision and reason",
            "# TYPE veto_checks_total counter\n",
            "# TYPE veto_rules gauge\n",
            "# TYPE veto_check_duration_seconds histogram\n",
            r#"veto_checks_total{decision="deny",reason="revoked"} 1"#,
            r#"veto_check_duration_seconds_bucket{le="+Inf"} 1"#,
        ] {
            assert!(classic.contains(needle), "missing {needle} in\n{classic}");
        }
        // Every sample line is the same in both formats.
        let samples = |text: &str| -> Vec<String> {
            text.lines()
                .filter(|l| !l.starts_with('#'))
                .map(str::to_owned)
                .collect()
        };
        assert_eq!(samples(&classic), samples(&openmetrics));
    }
}
