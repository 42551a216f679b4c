//! Conventions of the alert rules that promtool does not check, and the coverage of their tests and of the
//! routing table:
//! - every alerting rule: a CamelCase name with a component prefix (or `Watchdog`); `severity` from the fixed set
//!   (`none` only for Watchdog) and `service` labels; exactly the four annotations, a static summary, a templated
//!   description, `runbook_url` at the inbox's `/runbooks/<Alert>.md`, `dashboard_url` at a panel of a dashboard;
//! - every rule file has a test file of the same name; every alert has a test case where it fires (asserting
//!   `severity`, `service` and the four annotations) and, but Watchdog (`vector(1)`), one where it must not; no
//!   test names an alert that does not exist; every recording rule is evaluated by a `promql_expr_test`;
//! - `routes.tsv` has a row for each (alert, severity): monitoring/check.sh proves with amtool that the row's
//!   receiver is where alertmanager.yml sends it, so every alert's routing is tested.

use std::collections::BTreeSet;

use regex::Regex;

use crate::finding::Findings;
use crate::promql;
use crate::repo::{Repo, ROUTES, TESTS_DIR};

pub const SEVERITIES: &[&str] = &["critical", "warning", "info", "none"];
pub const SERVICES: &[&str] = &["app", "redis", "postgres", "etcd", "monitoring"];
pub const ANNOTATIONS: &[&str] = &["dashboard_url", "description", "runbook_url", "summary"];
/// Where the on-call inbox serves the runbooks; alerts link there.
pub const RUNBOOK_BASE: &str = "http://localhost:8082/runbooks/";

pub fn check(repo: &Repo) -> Findings {
    let mut out = Findings::default();
    conventions(repo, &mut out);
    test_coverage(repo, &mut out);
    routing(repo, &mut out);
    out
}

fn conventions(repo: &Repo, out: &mut Findings) {
    let name_re =
        Regex::new(r"^(App|Redis|Postgres|Patroni|Etcd|Prometheus|Alertmanager|HAProxy)[A-Z][A-Za-z0-9]*$|^Watchdog$")
            .unwrap();
    let dashboard_re = Regex::new(r"^http://localhost:3000/d/[a-z0-9-]+/\?viewPanel=\d+$").unwrap();
    if repo.alerts().is_empty() {
        out.add("alerts/", "no alerting rules found");
    }
    for (path, rule) in repo.all_rules() {
        let Some(name) = rule.alert.as_deref() else { continue };
        let (labels, ann) = (&rule.labels, &rule.annotations);
        let severity = labels.get("severity").map(String::as_str).unwrap_or("");
        if !name_re.is_match(name) {
            out.add(path, format!("{name}: not CamelCase with a component prefix"));
        }
        if !SEVERITIES.contains(&severity) || (severity == "none") != (name == "Watchdog") {
            out.add(
                path,
                format!("{name}: severity {severity:?} (critical|warning|info; none only for Watchdog)"),
            );
        }
        let service = labels.get("service").map(String::as_str).unwrap_or("");
        if !SERVICES.contains(&service) {
            out.add(path, format!("{name}: service {service:?} not one of {SERVICES:?}"));
        }
        let keys: Vec<&str> = ann.keys().map(String::as_str).collect();
        if keys != ANNOTATIONS {
            out.add(path, format!("{name}: annotations {keys:?}, expected {ANNOTATIONS:?}"));
        }
        for key in ANNOTATIONS {
            if ann.get(*key).is_some_and(|v| v.trim().is_empty()) {
                out.add(path, format!("{name}: annotation {key} is empty"));
            }
        }
        let get = |k: &str| ann.get(k).map(String::as_str).unwrap_or("");
        if get("summary").contains("{{") {
            out.add(path, format!("{name}: summary must be static (no template)"));
        }
        if !get("description").contains("{{") {
            out.add(path, format!("{name}: description must be templated"));
        }
        if get("runbook_url") != format!("{RUNBOOK_BASE}{name}.md") {
            out.add(
                path,
                format!(
                    "{name}: runbook_url {:?} is not {RUNBOOK_BASE}{name}.md",
                    get("runbook_url")
                ),
            );
        }
        if !dashboard_re.is_match(get("dashboard_url")) {
            out.add(path, format!("{name}: dashboard_url {:?}", get("dashboard_url")));
        }
    }
}

fn test_coverage(repo: &Repo, out: &mut Findings) {
    let alerts = repo.alerts();
    let test_paths: BTreeSet<&str> = repo.rule_tests.iter().map(|t| t.path.as_str()).collect();
    for file in &repo.rules {
        let base = file.path.rsplit('/').next().unwrap_or(&file.path);
        if !test_paths.contains(format!("{TESTS_DIR}/{base}").as_str()) {
            out.add(&file.path, format!("no test file {TESTS_DIR}/{base}"));
        }
    }
    let (mut fires, mut silent, mut evaluated) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    for file in &repo.rule_tests {
        for group in &file.tests {
            for case in group.alert_rule_test.iter().flatten() {
                let name = case.alertname.as_str();
                if !alerts.contains_key(name) {
                    out.add(&file.path, format!("test of unknown alert {name:?}"));
                }
                let expected = case.exp_alerts.as_deref().unwrap_or_default();
                if expected.is_empty() {
                    silent.insert(name);
                }
                for a in expected {
                    let labels = a.exp_labels.clone().unwrap_or_default();
                    let ann: Vec<String> = a.exp_annotations.clone().unwrap_or_default().into_keys().collect();
                    if labels.contains_key("severity") && labels.contains_key("service") && ann == ANNOTATIONS {
                        fires.insert(name);
                    } else {
                        out.add(
                            &file.path,
                            format!("{name}: a firing case must assert severity, service and all annotations"),
                        );
                    }
                }
            }
            for case in group.promql_expr_test.iter().flatten() {
                match promql::analyze(&case.expr) {
                    Ok(a) => evaluated.extend(a.metrics),
                    Err(e) => out.add(
                        &file.path,
                        format!("promql_expr_test {:?} does not parse: {e}", case.expr),
                    ),
                }
            }
        }
    }
    for (name, rules) in &alerts {
        let path = rules[0].0;
        if !fires.contains(name) {
            out.add(path, format!("{name}: no test case where it fires"));
        }
        if !silent.contains(name) && *name != "Watchdog" {
            out.add(path, format!("{name}: no test case where it must not fire"));
        }
    }
    for (name, path) in repo.records() {
        if !evaluated.contains(name) {
            out.add(path, format!("recording rule {name}: no promql_expr_test"));
        }
    }
}

fn routing(repo: &Repo, out: &mut Findings) {
    let Some(table) = &repo.routes else { return };
    let mut rows = BTreeSet::new();
    for line in table.text.lines() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let (_receiver, labels) = line.split_once('\t').unwrap_or((line, ""));
        let label = |key: &str| {
            labels
                .split_whitespace()
                .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
                .map(str::to_owned)
        };
        rows.insert((label("alertname"), label("severity")));
    }
    for (name, rules) in repo.alerts() {
        for (_, rule) in rules {
            let severity = rule.labels.get("severity").cloned();
            if !rows.contains(&(Some(name.to_owned()), severity.clone())) {
                out.add(
                    ROUTES,
                    format!(
                        "no row routing {name} (severity {})",
                        severity.as_deref().unwrap_or("?")
                    ),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::tests::real;
    use crate::repo::Rule;

    /// The real repository with its first alerting rule changed by `f`.
    fn with_first_alert(f: impl FnOnce(&mut Rule)) -> Findings {
        let mut repo = real();
        let mut rules = repo
            .rules
            .iter_mut()
            .flat_map(|f| f.groups.iter_mut().flat_map(|g| g.rules.iter_mut()));
        f(rules
            .find(|r| r.alert.is_some() && r.alert.as_deref() != Some("Watchdog"))
            .unwrap());
        check(&repo)
    }

    #[test]
    fn the_real_rules_pass() {
        let found = check(&real());
        assert!(found.0.is_empty(), "{:#?}", found.0);
    }

    #[test]
    fn a_name_without_a_component_prefix_is_caught() {
        assert!(with_first_alert(|r| r.alert = Some("HighLatency".into())).mention("not CamelCase"));
        assert!(with_first_alert(|r| r.alert = Some("HaproxyDown".into())).mention("not CamelCase"));
    }

    #[test]
    fn a_severity_outside_the_set_is_caught_and_none_is_only_for_watchdog() {
        assert!(with_first_alert(|r| {
            r.labels.insert("severity".into(), "page".into());
        })
        .mention("severity \"page\""));
        assert!(with_first_alert(|r| {
            r.labels.insert("severity".into(), "none".into());
        })
        .mention("none only for Watchdog"));
    }

    #[test]
    fn a_missing_service_label_is_caught() {
        assert!(with_first_alert(|r| {
            r.labels.remove("service");
        })
        .mention("service \"\""));
    }

    #[test]
    fn a_missing_or_extra_annotation_is_caught() {
        assert!(with_first_alert(|r| {
            r.annotations.remove("dashboard_url");
        })
        .mention("annotations [\"description\", \"runbook_url\", \"summary\"]"));
        assert!(with_first_alert(|r| {
            r.annotations.insert("team".into(), "sre".into());
        })
        .mention("expected"));
        assert!(with_first_alert(|r| {
            r.annotations.insert("summary".into(), " ".into());
        })
        .mention("annotation summary is empty"));
    }

    #[test]
    fn a_templated_summary_and_a_static_description_are_caught() {
        assert!(with_first_alert(|r| {
            r.annotations.insert("summary".into(), "{{ $labels.job }} down".into());
        })
        .mention("summary must be static"));
        assert!(with_first_alert(|r| {
            r.annotations.insert("description".into(), "it broke".into());
        })
        .mention("description must be templated"));
    }

    #[test]
    fn a_runbook_url_not_named_after_the_alert_is_caught() {
        assert!(with_first_alert(|r| {
            r.annotations
                .insert("runbook_url".into(), format!("{RUNBOOK_BASE}Other.md"));
        })
        .mention("runbook_url"));
    }

    #[test]
    fn a_dashboard_url_that_is_not_a_panel_link_is_caught() {
        assert!(with_first_alert(|r| {
            r.annotations
                .insert("dashboard_url".into(), "http://localhost:3000/d/sre-overview/".into());
        })
        .mention("dashboard_url"));
    }

    #[test]
    fn a_rule_file_without_a_test_file_is_caught() {
        let mut repo = real();
        repo.rule_tests.remove(0);
        assert!(check(&repo).mention("no test file"));
    }

    #[test]
    fn an_alert_without_a_firing_or_a_silent_case_is_caught() {
        let found = with_first_alert(|r| r.alert = Some("AppUntested".into()));
        assert!(found.mention("AppUntested: no test case where it fires"));
        assert!(found.mention("AppUntested: no test case where it must not fire"));
    }

    #[test]
    fn a_test_of_an_unknown_alert_and_a_firing_case_missing_annotations_are_caught() {
        let mut repo = real();
        let case = repo.rule_tests[0].tests[0]
            .alert_rule_test
            .as_mut()
            .unwrap()
            .first_mut()
            .unwrap()
            .clone();
        let mut broken = case.clone();
        broken.alertname = "AppNoSuchAlert".into();
        broken.exp_alerts = Some(vec![crate::repo::ExpAlert::default()]);
        repo.rule_tests[0].tests[0]
            .alert_rule_test
            .as_mut()
            .unwrap()
            .push(broken);
        let found = check(&repo);
        assert!(found.mention("test of unknown alert \"AppNoSuchAlert\""));
        assert!(found.mention("AppNoSuchAlert: a firing case must assert severity, service and all annotations"));
    }

    #[test]
    fn a_recording_rule_without_an_expression_test_is_caught() {
        let mut repo = real();
        let group = &mut repo.rules[0].groups[0];
        group.rules.push(Rule {
            record: Some("job:untested:rate5m".into()),
            expr: "sum(rate(up[5m]))".into(),
            ..Rule::default()
        });
        assert!(check(&repo).mention("recording rule job:untested:rate5m: no promql_expr_test"));
    }

    #[test]
    fn an_alert_missing_from_the_routing_table_is_caught() {
        let mut repo = real();
        let routes = repo.routes.as_mut().unwrap();
        let name = repo
            .rules
            .iter()
            .flat_map(|f| &f.groups)
            .flat_map(|g| &g.rules)
            .find_map(|r| r.alert.clone());
        let needle = format!("alertname={}", name.unwrap());
        routes.text = routes
            .text
            .lines()
            .filter(|l| !l.contains(&needle))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(check(&repo).mention("no row routing"));
    }

    #[test]
    fn no_alerting_rule_at_all_is_caught() {
        let mut repo = real();
        for f in &mut repo.rules {
            for g in &mut f.groups {
                g.rules.retain(|r| r.alert.is_none());
            }
        }
        assert!(check(&repo).mention("no alerting rules found"));
    }

    #[test]
    fn an_expression_test_that_does_not_parse_is_caught() {
        let mut repo = real();
        let group = repo
            .rule_tests
            .iter_mut()
            .flat_map(|t| t.tests.iter_mut())
            .find(|g| g.promql_expr_test.is_some());
        let case = crate::repo::ExprCase {
            expr: "sum(job:x:rate5m".into(),
        };
        group.unwrap().promql_expr_test.as_mut().unwrap().push(case);
        assert!(check(&repo).mention("does not parse"));
    }
}
