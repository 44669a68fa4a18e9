//! Every metric veto exports, defined once; names and labels are part of the contract
//! (SPEC §6). Prometheus text format on `GET /metrics`.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

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
    check_duration: Histogram,
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
        // 25 µs .. ~100 ms: a Check is tens of microseconds, a slow one a few milliseconds.
        let check_duration = Histogram::new(exponential_buckets(0.000_025, 2.0, 13));
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
        self.check_duration.observe(took.as_secs_f64());
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

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
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
        let text = m.encode();
        for needle in [
            r#"veto_checks_total{decision="deny",reason="revoked"} 1"#,
            "veto_check_duration_seconds_bucket",
            r#"veto_rules{source="file"} 3"#,
            r#"veto_rules{source="pushed"} 1"#,
            "veto_snapshot_version 7",
            r#"veto_snapshot_reloads_total{result="error"} 1"#,
            r#"veto_keys{issuer="https://a"} 2"#,
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
    }
}
