//! The alert and SLO tables of README.md and runbooks/README.md, generated from the rule files (`alerts/*.yml`)
//! and the routing (`monitoring/alertmanager/alertmanager.yml`), so that no document restates a severity, a
//! receiver or a `for` by hand.
//!
//! - runbooks/README.md, region `alerts`: every alerting rule with its severity, the receivers its labels reach,
//!   `for`, summary, rule file and runbook.
//! - README.md, region `alerts`: the same alerts grouped by receiver and severity; region `slos`: each SLO's
//!   objective and the burn-rate alerts that guard it.

mod rules;
mod slo;

use std::path::Path;

use crate::generated::{replace_region_in, Error, Output};
use rules::Rule;
use stack::alertmanager::{self as routing, Routing};

pub const README: &str = "README.md";
pub const RUNBOOK_INDEX: &str = "runbooks/README.md";

pub fn generate(root: &Path) -> Result<Vec<Output>, Error> {
    let rules = rules::read(root)?;
    let routing_path = root.join(routing::FILE);
    let routing_text = std::fs::read_to_string(&routing_path).map_err(|source| Error::Io {
        path: routing_path,
        source,
    })?;
    let routing = Routing::parse(&routing_text).map_err(|e| Error::Source(format!("{}: {e}", routing::FILE)))?;
    let slos = slo::slos(&rules).map_err(Error::Source)?;
    if slos.is_empty() {
        return Err(Error::Source(format!(
            "{}: no SLO: no error-budget recording rule (`<prefix>:<slo>_error_budget:remaining`)",
            rules::DIR
        )));
    }
    let alerts = alert_rows(&rules, &routing);

    let readme = read(root, README)?;
    let readme = replace_region_in(&readme, README, "alerts", &grouped_table(&alerts, &routing))?;
    let readme = replace_region_in(&readme, README, "slos", &slo_table(&slos, &routing))?;
    let index = read(root, RUNBOOK_INDEX)?;
    let index = replace_region_in(&index, RUNBOOK_INDEX, "alerts", &full_table(&alerts, ""))?;
    Ok(vec![
        Output {
            path: README.into(),
            contents: readme,
        },
        Output {
            path: RUNBOOK_INDEX.into(),
            contents: index,
        },
    ])
}

fn read(root: &Path, path: &str) -> Result<String, Error> {
    let full = root.join(path);
    std::fs::read_to_string(&full).map_err(|source| Error::Io { path: full, source })
}

/// One alerting rule and where Alertmanager sends it.
struct AlertRow<'a> {
    rule: &'a Rule,
    name: &'a str,
    severity: &'a str,
    receivers: Vec<String>,
}

fn alert_rows<'a>(rules: &'a [Rule], routing: &Routing) -> Vec<AlertRow<'a>> {
    rules
        .iter()
        .filter_map(|rule| {
            Some(AlertRow {
                rule,
                name: rule.alert.as_deref()?,
                severity: rule.labels.get("severity").map_or("—", String::as_str),
                receivers: routing.receivers_of(&rule.alert_labels()),
            })
        })
        .collect()
}

/// runbooks/README.md's table: one row per alerting rule, in rule-file order.
fn full_table(alerts: &[AlertRow], runbook_dir: &str) -> String {
    let mut out = String::from(
        "| alert | severity | receiver | `for` | summary | rule file | runbook |\n|---|---|---|---|---|---|---|\n",
    );
    for a in alerts {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | `{}` | {} |\n",
            a.name,
            a.severity,
            a.receivers.join(", "),
            a.rule.for_.as_deref().unwrap_or("none"),
            cell(a.rule.annotations.get("summary").map_or("", String::as_str)),
            a.rule.file,
            runbook_link(a.rule, runbook_dir, true),
        ));
    }
    out
}

/// README.md's table: per receiver (in the order alertmanager.yml declares them) and severity, the alerts that
/// reach it.
fn grouped_table(alerts: &[AlertRow], routing: &Routing) -> String {
    let mut groups: Vec<(String, &str, Vec<&AlertRow>)> = Vec::new();
    for a in alerts {
        for receiver in &a.receivers {
            match groups.iter_mut().find(|(r, s, _)| r == receiver && *s == a.severity) {
                Some((_, _, members)) => {
                    if !members.iter().any(|m| m.name == a.name) {
                        members.push(a);
                    }
                }
                None => groups.push((receiver.clone(), a.severity, vec![a])),
            }
        }
    }
    let rank = |receiver: &str| {
        routing
            .receivers
            .iter()
            .position(|(name, _)| name == receiver)
            .unwrap_or(usize::MAX)
    };
    groups.sort_by_key(|(receiver, _, _)| rank(receiver));
    let mut out = String::from("| receiver | severity | count | alerts |\n|---|---|---|---|\n");
    for (receiver, severity, members) in groups {
        let nobody = if routing.notifies(&receiver) {
            ""
        } else {
            " (notifies nobody)"
        };
        let names: Vec<String> = members
            .iter()
            .map(|m| match runbook_link(m.rule, "runbooks/", false) {
                link if link.is_empty() => m.name.to_owned(),
                link => format!("[{}]({link})", m.name),
            })
            .collect();
        out.push_str(&format!(
            "| {receiver}{nobody} | {severity} | {} | {} |\n",
            members.len(),
            names.join(", ")
        ));
    }
    out
}

/// README.md's SLO table: one row per burn alert of each SLO, then the series to query.
fn slo_table(slos: &[slo::Slo], routing: &Routing) -> String {
    let mut out = String::from(
        "| SLO | objective | alert | severity → receiver | fires when the burn rate exceeds, over both windows | `for` |\n\
         |---|---|---|---|---|---|\n",
    );
    for s in slos {
        let within = s
            .latency_threshold
            .as_ref()
            .map_or(String::new(), |le| format!(" within {le} s"));
        let objective = format!(
            "{}%{within} over {} (budget {}%)",
            percent(1.0 - s.budget),
            s.window,
            percent(s.budget)
        );
        for alert in &s.alerts {
            let conditions: Vec<String> = alert
                .conditions
                .iter()
                .map(|(factor, windows)| format!("{factor}× over {}", windows.join(" and ")))
                .collect();
            out.push_str(&format!(
                "| {} | {objective} | {} | {} → {} | {} | {} |\n",
                s.name,
                alert.rule.alert.as_deref().unwrap_or_default(),
                alert.rule.labels.get("severity").map_or("—", String::as_str),
                routing.receivers_of(&alert.rule.alert_labels()).join(", "),
                conditions.join(", or "),
                alert.rule.for_.as_deref().unwrap_or("none"),
            ));
        }
    }
    let series: Vec<String> = slos.iter().map(|s| format!("`{}<window>`", s.sli)).collect();
    let budgets: Vec<String> = slos.iter().map(|s| format!("`{}`", s.budget_series)).collect();
    out.push_str(&format!(
        "\nSLI ratios: {}; error budget left (1 = untouched): {}.\n",
        series.join(", "),
        budgets.join(", ")
    ));
    out
}

/// A link to the alert's runbook: the file its `runbook_url` names, under `dir`.
fn runbook_link(rule: &Rule, dir: &str, as_markdown: bool) -> String {
    let file = rule
        .annotations
        .get("runbook_url")
        .and_then(|url| url.rsplit('/').next())
        .filter(|f| f.ends_with(".md"));
    match (file, as_markdown) {
        (Some(f), true) => format!("[{f}]({dir}{f})"),
        (Some(f), false) => format!("{dir}{f}"),
        (None, true) => "—".to_owned(),
        (None, false) => String::new(),
    }
}

/// Text safe inside a markdown table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// A ratio as a percentage without trailing zeros (0.999 → `99.9`).
fn percent(ratio: f64) -> String {
    let s = format!("{:.4}", ratio * 100.0);
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: &str = r#"
groups:
  - name: g
    rules:
      - alert: Watchdog
        expr: vector(1)
        labels: {severity: none}
        annotations: {summary: Always firing., runbook_url: "http://h/runbooks/Watchdog.md"}
      - alert: ThingDown
        expr: up == 0
        for: 1m
        labels: {severity: critical}
        annotations: {summary: The thing | is down., runbook_url: "http://h/runbooks/ThingDown.md"}
      - alert: ThingSlow
        expr: slow > 1
        for: 5m
        labels: {severity: page}
        annotations: {summary: The thing is slow.}
      - alert: ThingNoisy
        expr: noise > 1
        labels: {severity: info}
        annotations: {summary: Noise., runbook_url: "http://h/runbooks/ThingNoisy.md"}
"#;

    const ROUTING: &str = r#"
route:
  receiver: ticket
  routes:
    - matchers: ['alertname="Watchdog"']
      receiver: heartbeat
    - matchers: ['severity="critical"']
      receiver: pager
    - matchers: ['severity="info"']
      receiver: blackhole
receivers:
  - name: pager
    webhook_configs: [{url: "http://x/pager"}]
  - name: ticket
    webhook_configs: [{url: "http://x/ticket"}]
  - name: heartbeat
    webhook_configs: [{url: "http://x/heartbeat"}]
  - name: blackhole
"#;

    fn fixture() -> (Vec<Rule>, Routing) {
        let rules = rules::parse("alerts/t.yml", RULES).unwrap().unwrap();
        (rules, Routing::parse(ROUTING).unwrap())
    }

    #[test]
    fn the_full_table_states_each_rule_and_the_receiver_its_labels_reach() {
        let (rules, routing) = fixture();
        let alerts = alert_rows(&rules, &routing);
        assert_eq!(
            full_table(&alerts, ""),
            "| alert | severity | receiver | `for` | summary | rule file | runbook |\n\
             |---|---|---|---|---|---|---|\n\
             | Watchdog | none | heartbeat | none | Always firing. | `alerts/t.yml` | [Watchdog.md](Watchdog.md) |\n\
             | ThingDown | critical | pager | 1m | The thing \\| is down. | `alerts/t.yml` | [ThingDown.md](ThingDown.md) |\n\
             | ThingSlow | page | ticket | 5m | The thing is slow. | `alerts/t.yml` | — |\n\
             | ThingNoisy | info | blackhole | none | Noise. | `alerts/t.yml` | [ThingNoisy.md](ThingNoisy.md) |\n"
        );
    }

    #[test]
    fn the_grouped_table_follows_the_receivers_order_and_says_who_notifies_nobody() {
        let (rules, routing) = fixture();
        let alerts = alert_rows(&rules, &routing);
        assert_eq!(
            grouped_table(&alerts, &routing),
            "| receiver | severity | count | alerts |\n|---|---|---|---|\n\
             | pager | critical | 1 | [ThingDown](runbooks/ThingDown.md) |\n\
             | ticket | page | 1 | ThingSlow |\n\
             | heartbeat | none | 1 | [Watchdog](runbooks/Watchdog.md) |\n\
             | blackhole (notifies nobody) | info | 1 | [ThingNoisy](runbooks/ThingNoisy.md) |\n"
        );
    }

    #[test]
    fn the_slo_table_states_objective_burn_windows_and_receiver() {
        let rules = rules::parse("alerts/slo.yml", slo::tests::SLO_RULES).unwrap().unwrap();
        let (_, routing) = fixture();
        assert_eq!(
            slo_table(&slo::slos(&rules).unwrap(), &routing),
            "| SLO | objective | alert | severity → receiver | fires when the burn rate exceeds, over both windows | `for` |\n\
             |---|---|---|---|---|---|\n\
             | latency | 99% within 0.25 s over 30d (budget 1%) | LatencyBurn | critical → pager | 14.4× over 1h and 5m, or 6× over 6h and 30m | 2m |\n\
             \nSLI ratios: `app:latency_slow:ratio_rate<window>`; error budget left (1 = untouched): \
             `app:latency_error_budget:remaining`.\n"
        );
    }

    #[test]
    fn generate_fills_every_region_of_both_documents_and_keeps_the_rest() {
        let root = std::env::temp_dir().join(format!("xtask-alert-tables-{}", std::process::id()));
        let write = |path: &str, text: &str| {
            let path = root.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        write("alerts/t.yml", RULES);
        write("alerts/slo.yml", slo::tests::SLO_RULES);
        write("alerts/tests/t_test.yml", "rule_files: [../t.yml]\n");
        write("alerts/notes.yml", "owner: sre\n"); // YAML, but no rule file: skipped
        write(routing::FILE, ROUTING);
        let regions = "<!-- BEGIN generated:slos -->\nold\n<!-- END generated:slos -->\nkept\n\
                       <!-- BEGIN generated:alerts -->\nold\n<!-- END generated:alerts -->\n";
        write(README, &format!("# intro\n{regions}"));
        write(
            RUNBOOK_INDEX,
            "index\n<!-- BEGIN generated:alerts -->\n<!-- END generated:alerts -->\nend\n",
        );
        let outputs = generate(&root).unwrap();
        std::fs::remove_dir_all(&root).unwrap();
        let readme = &outputs[0].contents;
        assert!(
            readme.starts_with("# intro\n<!-- BEGIN generated:slos -->\n| SLO |"),
            "{readme}"
        );
        assert!(
            readme.contains("-->\nkept\n<!-- BEGIN generated:alerts -->\n| receiver |"),
            "{readme}"
        );
        assert!(!readme.contains("old"), "{readme}");
        let index = &outputs[1].contents;
        assert!(index.contains("| LatencyBurn | critical | pager | 2m |"), "{index}");
        assert!(index.ends_with("<!-- END generated:alerts -->\nend\n"), "{index}");
    }

    #[test]
    fn percentages_keep_only_the_digits_they_need() {
        assert_eq!(
            (percent(1.0 - 0.001), percent(0.001), percent(0.99)),
            ("99.9".into(), "0.1".into(), "99".into())
        );
    }
}
