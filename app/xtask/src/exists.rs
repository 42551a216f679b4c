//! Every metric a rule, a dashboard query or a runbook's PromQL uses exists, and every one of those expressions
//! parses. Statically, "exists" means declared (`known`); live, it means Prometheus has scraped or recorded it
//! (`live`, which reuses [`unknown_metrics`]).

use std::collections::BTreeSet;

use crate::finding::Findings;
use crate::grafana::Builtins;
use crate::known::Known;
use crate::promql;
use crate::repo::Repo;
use crate::uses;

/// For each use, the metric names it reads that `exists` rejects; expressions that do not parse are findings.
pub fn unknown_metrics(repo: &Repo, exists: impl Fn(&str) -> bool, why: &str) -> Findings {
    let mut out = Findings::default();
    let builtins = Builtins::default();
    for u in uses::all(repo, &builtins) {
        match promql::analyze(&u.expr) {
            Err(e) => out.add(&u.place, format!("does not parse: {e}")),
            Ok(a) => {
                for name in a.metrics.iter().filter(|n| !exists(n)) {
                    let short: String = u
                        .expr
                        .split_whitespace()
                        .collect::<Vec<_>>()
                        .join(" ")
                        .chars()
                        .take(120)
                        .collect();
                    out.add(&u.place, format!("metric {name:?} {why} (used in: {short})"));
                }
            }
        }
    }
    out
}

/// The static check: names the app declares, recording rules, Prometheus's own series and the exporters'
/// families.
pub fn check(repo: &Repo) -> Findings {
    match Known::from_repo(repo) {
        Err(e) => {
            let mut out = Findings::default();
            out.add(crate::repo::APP_METRICS, e);
            out
        }
        Ok(known) => unknown_metrics(
            repo,
            |n| known.contains(n),
            "is neither an app contract metric, a recording rule, an exporter's nor a Prometheus/Alertmanager metric",
        ),
    }
}

/// Every metric name the repository's expressions read (for the live check's summary).
pub fn used_metrics(repo: &Repo) -> BTreeSet<String> {
    let builtins = Builtins::default();
    uses::all(repo, &builtins)
        .iter()
        .filter_map(|u| promql::analyze(&u.expr).ok())
        .flat_map(|a| a.metrics)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::tests::real;

    #[test]
    fn every_metric_the_real_repository_uses_is_declared() {
        let found = check(&real());
        assert!(found.0.is_empty(), "{:#?}", found.0);
    }

    #[test]
    fn an_undeclared_metric_in_a_rule_a_dashboard_or_a_runbook_is_caught() {
        let mut repo = real();
        repo.rules[0].groups[0].rules[0].expr = "sum(rate(http_requests_total[5m]))".into();
        let panel = repo.dashboards[0].json["panels"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .find(|p| p.get("targets").is_some());
        panel.unwrap()["targets"][0]["expr"] = "redis_up + app_requests_total".into();
        repo.runbooks[0]
            .text
            .push_str("\n```promql\nsum(cache_hits_total)\n```\n");
        let found = check(&repo);
        for name in ["http_requests_total", "app_requests_total", "cache_hits_total"] {
            assert!(found.mention(&format!("metric \"{name}\"")), "{name}: {:#?}", found.0);
        }
        assert!(!found.mention("\"redis_up\""));
    }

    #[test]
    fn a_runbook_block_that_does_not_parse_is_caught() {
        let mut repo = real();
        repo.runbooks[0].text.push_str("\n```promql\nsum(rate(x[5m])\n```\n");
        assert!(check(&repo).mention("promql block: does not parse"));
    }
}
