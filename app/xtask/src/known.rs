//! Which metric names exist, without a running stack: the app's declared contract (read from the service's
//! metrics module, where every name is declared once), the recording rules, the series Prometheus writes itself,
//! and the exporters' families by prefix (their names only exist on the live stack; `xtask live` checks those).

use std::collections::{BTreeMap, BTreeSet};

use regex::Regex;

use crate::repo::Repo;

/// Prefixes of the exporters' and of Prometheus's and Alertmanager's own metrics: HAProxy's built-in exporter
/// (`haproxy_`), the blackbox exporter's probe results (`probe_`, on its /probe endpoint), Patroni's REST API
/// `/metrics` (`patroni_`) and etcd's metrics listener (`etcd_`).
pub const EXPORTER_PREFIXES: &[&str] = &[
    "redis_",
    "pg_",
    "namedprocess_namegroup_",
    "node_",
    "prometheus_",
    "alertmanager_",
    "haproxy_",
    "probe_",
    "patroni_",
    "etcd_",
];
/// Series Prometheus makes: per-target scrape results and the alert state of its rules.
pub const SYNTHETIC: &[&str] = &[
    "up",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
    "scrape_series_added",
    "ALERTS",
    "ALERTS_FOR_STATE",
];

/// The names the app exposes, from the `CONTRACT` of its metrics module: each `pub const X: &str = "name";`
/// that the contract lists, a histogram (`histogram_spec(X, …)`) as its `_bucket`, `_sum` and `_count` series.
/// `Err` when the module no longer has the shape this reads, so a refactoring cannot silently empty the list.
pub fn app_metrics(source: &str) -> Result<BTreeSet<String>, String> {
    let consts: BTreeMap<&str, &str> = Regex::new(r#"pub const ([A-Z0-9_]+): &str = "([a-z0-9_:]+)";"#)
        .unwrap()
        .captures_iter(source)
        .map(|c| (c.get(1).unwrap().as_str(), c.get(2).unwrap().as_str()))
        .collect();
    let contract = source
        .split_once("pub const CONTRACT: &[MetricSpec] = &[")
        .and_then(|(_, rest)| rest.split_once("\n];"))
        .map(|(body, _)| body)
        .ok_or("no `pub const CONTRACT: &[MetricSpec] = &[ … ];` in the app's metrics module")?;
    let mut names = BTreeSet::new();
    for c in Regex::new(r"\b(histogram_spec|spec|collected)\(\s*([A-Z0-9_]+),")
        .unwrap()
        .captures_iter(contract)
    {
        let constant = c.get(2).unwrap().as_str();
        let name = consts
            .get(constant)
            .ok_or(format!("the contract names {constant}, which is not a `pub const`"))?;
        if &c[1] == "histogram_spec" {
            names.extend(["_bucket", "_sum", "_count"].map(|s| format!("{name}{s}")));
        } else {
            names.insert((*name).to_owned());
        }
    }
    if names.is_empty() {
        return Err("the app's CONTRACT lists no metric".into());
    }
    Ok(names)
}

/// What the static check accepts as an existing metric name.
#[derive(Debug, Clone)]
pub struct Known {
    pub app: BTreeSet<String>,
    pub records: BTreeSet<String>,
}

impl Known {
    pub fn from_repo(repo: &Repo) -> Result<Known, String> {
        let source = repo.app_metrics.as_ref().ok_or("the app's metrics module is missing")?;
        Ok(Known {
            app: app_metrics(&source.text)?,
            records: repo.records().keys().map(|s| (*s).to_owned()).collect(),
        })
    }

    pub fn contains(&self, name: &str) -> bool {
        self.app.contains(name)
            || self.records.contains(name)
            || SYNTHETIC.contains(&name)
            || EXPORTER_PREFIXES.iter().any(|p| name.starts_with(p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::tests::real;

    #[test]
    fn the_real_contract_lists_the_apps_metrics_with_histogram_series() {
        let known = Known::from_repo(&real()).unwrap();
        for name in [
            "http_server_request_duration_seconds_bucket",
            "cache_requests_total",
            "process_open_fds",
        ] {
            assert!(known.app.contains(name), "{name} missing from {:?}", known.app);
        }
        assert!(!known.app.contains("http_server_request_duration_seconds"));
        assert!(known.contains("redis_up") && known.contains("ALERTS") && !known.contains("http_requests_total"));
    }

    #[test]
    fn a_contract_naming_an_undeclared_constant_is_an_error() {
        let src = "pub const A: &str = \"a_total\";\npub const CONTRACT: &[MetricSpec] = &[\n    spec(\n        B,\n    ),\n];\n";
        assert!(app_metrics(src).unwrap_err().contains("B"));
        assert!(app_metrics("pub const A: &str = \"a\";").is_err());
    }
}
