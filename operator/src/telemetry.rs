//! Logging (tracing) set-up and the Prometheus metrics every module reports to.

use clap::ValueEnum;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Libraries whose debug lines carry secrets (the engine client logs create requests with their
/// environment values; hyper, h2 and hyper-util log headers and bodies): kept at `info` at any `-v`, and
/// under a `RUST_LOG` that does not name them.
const QUIET_LIBRARIES: [&str; 4] = ["bollard", "hyper", "h2", "hyper_util"];

/// Installs the tracing subscriber on stderr. `RUST_LOG` overrides the level from `-v`.
pub fn init_logging(format: LogFormat, verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let rust_log = std::env::var("RUST_LOG").ok();
    let directives = filter_directives(verbose, rust_log.as_deref());
    let filter = EnvFilter::try_new(&directives)
        .unwrap_or_else(|_| EnvFilter::new(filter_directives(verbose, None)));
    // Colours only when stderr is a terminal (never in a journal, a file or a pipe).
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.with_target(false).try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// The log filter: `RUST_LOG` when set (and not blank), else the level of `-v`; then `LIB=info` for each
/// of `QUIET_LIBRARIES` that `RUST_LOG` does not name.
pub fn filter_directives(verbose: u8, rust_log: Option<&str>) -> String {
    let rust_log = rust_log.map(str::trim).filter(|s| !s.is_empty());
    let mut out = rust_log
        .unwrap_or(match verbose {
            0 => "warn,dockop=info",
            1 => "info",
            2 => "debug",
            _ => "trace",
        })
        .to_owned();
    for lib in QUIET_LIBRARIES {
        if !rust_log.is_some_and(|r| names_target(r, lib)) {
            out.push_str(&format!(",{lib}=info"));
        }
    }
    out
}

/// True when a directive of `filter` (`target[span{field}]=level`, comma-separated) is for `lib` or one of
/// its modules.
fn names_target(filter: &str, lib: &str) -> bool {
    filter.split(',').any(|directive| {
        let target = directive
            .split(['=', '['])
            .next()
            .unwrap_or_default()
            .trim();
        target == lib
            || target
                .strip_prefix(lib)
                .is_some_and(|rest| rest.starts_with("::"))
    })
}

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Label set of a metric: `(name, value)` pairs.
pub type Labels = Vec<(&'static str, String)>;
type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;

/// Every metric dockop exports (prefix `dockop_`), registered once in [`metrics`].
#[derive(Debug)]
pub struct Metrics {
    /// The registry `/metrics` encodes.
    pub registry: Registry,
    /// `reconcile_total{name,result}`.
    pub reconcile_total: Family<Labels, Counter>,
    /// `reconcile_duration_seconds{name}`.
    pub reconcile_duration_seconds: HistogramFamily,
    /// `drift_detected_total{name,kind}`.
    pub drift_detected_total: Family<Labels, Counter>,
    /// `updates_total{name,result}`.
    pub updates_total: Family<Labels, Counter>,
    /// `rollbacks_total{name,reason}`.
    pub rollbacks_total: Family<Labels, Counter>,
    /// `health_probe_failures_total{name}`.
    pub health_probe_failures_total: Family<Labels, Counter>,
    /// `ready{name}`.
    pub ready: Family<Labels, Gauge>,
    /// `object_info{name,image,digest,app_version}`.
    pub object_info: Family<Labels, Gauge>,
    /// `registry_checks_total{result}`.
    pub registry_checks_total: Family<Labels, Counter>,
    /// `engine_requests_total{op,result}`.
    pub engine_requests_total: Family<Labels, Counter>,
    /// `engine_request_duration_seconds{op}`.
    pub engine_request_duration_seconds: HistogramFamily,
    /// `last_successful_reconcile_timestamp_seconds{name}`.
    pub last_successful_reconcile: Family<Labels, Gauge<f64, AtomicU64>>,
    /// `source_revision_info{source,revision}`.
    pub source_revision_info: Family<Labels, Gauge>,
    /// `spec_invalid_total{source}`: source revisions refused by validation.
    pub spec_invalid_total: Family<Labels, Counter>,
    /// `http_requests_total{path,code}`: requests the HTTP server answered (path is the route, never the
    /// raw URI).
    pub http_requests_total: Family<Labels, Counter>,
    /// `notifications_total{service,result}`: notifications sent, retried, dropped or filtered out.
    pub notifications_total: Family<Labels, Counter>,
    /// The label set `object_info` currently carries per object, so a change replaces the old series.
    object_info_current: Mutex<BTreeMap<String, Labels>>,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.5, 12))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every family (the front end builds one; tests build their own).
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("dockop");
        let m = Metrics {
            reconcile_total: Family::default(),
            reconcile_duration_seconds: Family::new_with_constructor(latency_histogram),
            drift_detected_total: Family::default(),
            updates_total: Family::default(),
            rollbacks_total: Family::default(),
            health_probe_failures_total: Family::default(),
            ready: Family::default(),
            object_info: Family::default(),
            registry_checks_total: Family::default(),
            engine_requests_total: Family::default(),
            engine_request_duration_seconds: Family::new_with_constructor(latency_histogram),
            last_successful_reconcile: Family::default(),
            source_revision_info: Family::default(),
            spec_invalid_total: Family::default(),
            http_requests_total: Family::default(),
            notifications_total: Family::default(),
            object_info_current: Mutex::new(BTreeMap::new()),
            registry: Registry::default(),
        };
        registry.register(
            "notifications",
            "Notifications per service and result (sent, retried, dropped, filtered)",
            m.notifications_total.clone(),
        );
        registry.register(
            "reconcile",
            "Reconcile passes per object and result (converged, changed, rolled_back, rejected_preflight, failed, blocked, error)",
            m.reconcile_total.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Duration of one reconcile pass per object",
            m.reconcile_duration_seconds.clone(),
        );
        registry.register(
            "drift_detected",
            "Drift found per object and kind (digest, spec, missing, stopped, users)",
            m.drift_detected_total.clone(),
        );
        registry.register(
            "updates",
            "Updates per object and result (succeeded, rolled_back, failed, rejected_preflight)",
            m.updates_total.clone(),
        );
        registry.register(
            "rollbacks",
            "Rollbacks per object and reason",
            m.rollbacks_total.clone(),
        );
        registry.register(
            "health_probe_failures",
            "Failed health probes per object",
            m.health_probe_failures_total.clone(),
        );
        registry.register(
            "ready",
            "1 when the object is Ready, else 0",
            m.ready.clone(),
        );
        registry.register(
            "object_info",
            "Image, digest and app version of each object (value 1)",
            m.object_info.clone(),
        );
        registry.register(
            "registry_checks",
            "Registry digest checks by result",
            m.registry_checks_total.clone(),
        );
        registry.register(
            "engine_requests",
            "Docker engine calls by operation and result",
            m.engine_requests_total.clone(),
        );
        registry.register(
            "engine_request_duration_seconds",
            "Docker engine call duration by operation",
            m.engine_request_duration_seconds.clone(),
        );
        registry.register(
            "last_successful_reconcile_timestamp_seconds",
            "Unix time of the last successful reconcile per object",
            m.last_successful_reconcile.clone(),
        );
        registry.register(
            "source_revision_info",
            "Revision of the desired-state source currently applied (value 1)",
            m.source_revision_info.clone(),
        );
        registry.register(
            "spec_invalid",
            "Source revisions refused because a file failed validation",
            m.spec_invalid_total.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests answered by route and status code",
            m.http_requests_total.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Sets `object_info{name,image,digest,app_version}` to 1 for `labels` (which must carry `name`),
    /// removing the series of the same object with other labels, so a new digest or app version never
    /// leaves a stale series behind.
    pub fn set_object_info(&self, labels: &Labels) {
        let Some(name) = labels
            .iter()
            .find(|(k, _)| *k == "name")
            .map(|(_, v)| v.clone())
        else {
            return;
        };
        let mut current = match self.object_info_current.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(old) = current.get(&name)
            && old != labels
        {
            self.object_info.remove(old);
        }
        self.object_info.get_or_create(labels).set(1);
        current.insert(name, labels.clone());
    }

    /// Forgets the per-object gauges of an object that left the desired state (`ready`, `object_info`,
    /// `last_successful_reconcile_timestamp_seconds`). Counters are kept: they only ever go up.
    pub fn forget_object(&self, name: &str) {
        let by_name: Labels = vec![("name", name.to_owned())];
        self.ready.remove(&by_name);
        self.last_successful_reconcile.remove(&by_name);
        let mut current = match self.object_info_current.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(old) = current.remove(name) {
            self.object_info.remove(&old);
        }
    }

    /// Sets `ready{name}` to 0 or 1.
    pub fn set_ready(&self, name: &str, ready: bool) {
        self.ready
            .get_or_create(&vec![("name", name.to_owned())])
            .set(i64::from(ready));
    }

    /// Records one engine call.
    pub fn engine_call(&self, op: &'static str, ok: bool, elapsed: Duration) {
        let result = if ok { "success" } else { "failure" };
        self.engine_requests_total
            .get_or_create(&vec![("op", op.to_owned()), ("result", result.to_owned())])
            .inc();
        self.engine_request_duration_seconds
            .get_or_create(&vec![("op", op.to_owned())])
            .observe(elapsed.as_secs_f64());
    }

    /// Increments `family{name=object, key=value}`.
    pub fn inc(family: &Family<Labels, Counter>, object: &str, key: &'static str, value: &str) {
        family
            .get_or_create(&vec![("name", object.to_owned()), (key, value.to_owned())])
            .inc();
    }

    /// Increments `family{name=object}`.
    pub fn inc_name(family: &Family<Labels, Counter>, object: &str) {
        family
            .get_or_create(&vec![("name", object.to_owned())])
            .inc();
    }

    /// OpenMetrics text exposition of every metric (served as [`OPENMETRICS_CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Content type of [`Metrics::encode`]: prometheus-client writes OpenMetrics 1.0 text (ending in `# EOF`),
/// which Prometheus negotiates and parses.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    /// A registry where every family has one series (families without a series are not encoded).
    fn with_a_series_each() -> Metrics {
        let m = Metrics::new();
        let l: Labels = vec![("name", "x".to_owned())];
        for c in [
            &m.reconcile_total,
            &m.drift_detected_total,
            &m.updates_total,
            &m.rollbacks_total,
            &m.health_probe_failures_total,
            &m.registry_checks_total,
            &m.engine_requests_total,
            &m.spec_invalid_total,
            &m.http_requests_total,
            &m.notifications_total,
        ] {
            c.get_or_create(&l).inc();
        }
        for g in [&m.ready, &m.object_info, &m.source_revision_info] {
            g.get_or_create(&l).set(1);
        }
        m.last_successful_reconcile.get_or_create(&l).set(1.0);
        m.reconcile_duration_seconds.get_or_create(&l).observe(0.1);
        m.engine_call("inspect", true, Duration::from_millis(3));
        m
    }

    /// Every `dockop_*` metric named in the docs, the alert rules and the dashboard is one this registry
    /// serves (with the suffixes its type adds: `_total`, `_bucket`, `_sum`, `_count`).
    #[test]
    fn documented_metrics_are_registered() {
        let m = with_a_series_each();
        let mut served = std::collections::BTreeSet::new();
        // `dockop proxy` serves its own registry (dockop_proxy_*).
        let text = format!("{}{}", m.encode(), crate::proxy::metrics_for_tests());
        for line in text.lines() {
            let mut parts = line
                .strip_prefix("# TYPE ")
                .unwrap_or("")
                .split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            served.insert(name.to_owned());
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                _ => &[],
            };
            served.extend(suffixes.iter().map(|s| format!("{name}{s}")));
        }
        assert!(served.contains("dockop_reconcile_total"), "{served:?}");
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(root.join("docs"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "md"))
            .collect();
        for f in [
            "README.md",
            "deploy/systemd/README",
            "deploy/prometheus/rules.yaml",
            "deploy/grafana/dashboard.json",
        ] {
            files.push(root.join(f));
        }
        let mut missing = Vec::new();
        let mut seen = 0;
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for (n, line) in text.lines().enumerate() {
                for (at, _) in line.match_indices("dockop_") {
                    let prev = line[..at].chars().next_back().unwrap_or(' ');
                    if prev.is_ascii_alphanumeric() || matches!(prev, '_' | '/' | '.' | '-') {
                        continue;
                    }
                    let name: String = line[at..]
                        .chars()
                        .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                        .collect();
                    // A prefix in prose (`dockop_*`) is not a name.
                    if name.ends_with('_') {
                        continue;
                    }
                    seen += 1;
                    if !served.contains(&name) {
                        missing.push(format!("{}:{}: {name}", file.display(), n + 1));
                    }
                }
            }
        }
        assert!(seen > 20, "only {seen} metric mentions found");
        assert!(
            missing.is_empty(),
            "documented metrics that are not registered:\n{}",
            missing.join("\n")
        );
    }

    fn info(digest: &str, version: &str) -> Labels {
        vec![
            ("name", "web".to_owned()),
            ("image", "127.0.0.1:5000/web:v1".to_owned()),
            ("digest", digest.to_owned()),
            ("app_version", version.to_owned()),
        ]
    }

    #[test]
    fn secret_carrying_libraries_stay_at_info() {
        let quiet = ",bollard=info,hyper=info,h2=info,hyper_util=info";
        assert_eq!(
            filter_directives(0, None),
            format!("warn,dockop=info{quiet}")
        );
        assert_eq!(filter_directives(3, None), format!("trace{quiet}"));
        assert_eq!(filter_directives(3, Some("  ")), format!("trace{quiet}"));
        assert_eq!(filter_directives(0, Some("debug")), format!("debug{quiet}"));
        // Named in RUST_LOG: as asked.
        assert_eq!(
            filter_directives(3, Some("debug,bollard=trace,hyper::proto=debug")),
            "debug,bollard=trace,hyper::proto=debug,h2=info,hyper_util=info"
        );
        // A prefix of another name does not count as naming it.
        assert_eq!(
            filter_directives(0, Some("hyperx=debug,h2o=debug")),
            format!("hyperx=debug,h2o=debug{quiet}")
        );
        // The directives parse, and the library directive beats the global level.
        let filter =
            tracing_subscriber::EnvFilter::try_new(filter_directives(3, None)).expect("parses");
        let shown = filter.to_string();
        assert!(
            shown.contains("bollard=info") && shown.contains("trace"),
            "{shown}"
        );
    }

    #[test]
    fn object_info_replaces_the_old_series() {
        let m = Metrics::new();
        m.set_object_info(&info("sha256:aa", "1"));
        m.set_object_info(&info("sha256:aa", "1"));
        m.set_object_info(&info("sha256:bb", "2"));
        let text = m.encode();
        assert!(!text.contains("sha256:aa"), "{text}");
        assert_eq!(text.matches("dockop_object_info{").count(), 1, "{text}");
        assert!(
            text.contains(r#"digest="sha256:bb",app_version="2"} 1"#),
            "{text}"
        );
        m.forget_object("web");
        assert!(!m.encode().contains("dockop_object_info{"));
    }

    #[test]
    fn every_metric_has_help() {
        let m = with_a_series_each();
        let text = m.encode();
        for name in [
            "reconcile",
            "reconcile_duration_seconds",
            "drift_detected",
            "updates",
            "rollbacks",
            "health_probe_failures",
            "ready",
            "object_info",
            "registry_checks",
            "engine_requests",
            "engine_request_duration_seconds",
            "last_successful_reconcile_timestamp_seconds",
            "source_revision_info",
        ] {
            assert!(
                text.contains(&format!("# HELP dockop_{name} ")),
                "no HELP for {name}: {text}"
            );
        }
        assert!(text.ends_with("# EOF\n"));
    }
}
