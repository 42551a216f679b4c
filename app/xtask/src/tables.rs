//! The alert tables of the docs say what the rules and the routing say. A table whose header starts
//! `| alert | severity | receiver | for |` is an alert reference table: it has one row per alert, and each row
//! gives that alert's severities, the receivers they route to and its `for`. Game day inventories (tables with a
//! `scenario` column) list what was measured and are checked by the game day itself.

use std::collections::BTreeSet;
use std::sync::LazyLock;

use regex::Regex;

use crate::finding::Findings;
use crate::repo::{Repo, Text, TABLE_DOCS};
use crate::rules::{receiver_of, SEVERITIES};

const RECEIVERS: &[&str] = &["pager", "ticket", "heartbeat", "blackhole"];
static WORD: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"[a-z]+").unwrap());
static DURATION: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\b\d+[smhd]\b").unwrap());

fn cells(line: &str) -> Vec<String> {
    line.trim()
        .trim_matches('|')
        .split('|')
        .map(|c| c.trim().to_owned())
        .collect()
}

fn plain(cell: &str) -> String {
    cell.chars()
        .filter(|c| !"[]`*".contains(*c))
        .collect::<String>()
        .trim()
        .to_owned()
}

fn words<'a>(cell: &'a str, set: &[&str]) -> BTreeSet<&'a str> {
    WORD.find_iter(cell)
        .map(|m| m.as_str())
        .filter(|w| set.contains(w))
        .collect()
}

pub fn check(repo: &Repo) -> Findings {
    let mut out = Findings::default();
    let tables: usize = repo.docs.iter().map(|doc| check_doc(repo, doc, &mut out)).sum();
    if tables == 0 {
        out.add(
            TABLE_DOCS.join(", "),
            "no alert reference table (`| alert | severity | receiver | for |`)",
        );
    }
    out
}

/// Checks the alert reference tables of one document; returns how many it has.
fn check_doc(repo: &Repo, doc: &Text, out: &mut Findings) -> usize {
    let alerts = repo.alerts();
    let mut tables = 0;
    let mut in_table: Option<BTreeSet<String>> = None; // alerts seen in the current reference table
    let lines: Vec<&str> = doc.text.lines().chain(std::iter::once("")).collect();
    let mut previous_was_table = false;
    for line in lines {
        let is_row = line.starts_with('|');
        if !is_row {
            if let Some(seen) = in_table.take() {
                for name in alerts.keys().filter(|n| !seen.contains(**n)) {
                    out.add(&doc.path, format!("the alert table has no row for {name}"));
                }
            }
            previous_was_table = false;
            continue;
        }
        let c = cells(line);
        if !previous_was_table {
            previous_was_table = true;
            let head: Vec<String> = c.iter().map(|x| plain(x).to_lowercase()).collect();
            if head.len() >= 4
                && head[..4] == ["alert", "severity", "receiver", "for"]
                && !head.contains(&"scenario".into())
            {
                tables += 1;
                in_table = Some(BTreeSet::new());
            }
            continue;
        }
        let Some(seen) = in_table.as_mut() else { continue };
        if c.iter().all(|x| x.chars().all(|ch| "-: ".contains(ch))) {
            continue; // the separator row
        }
        let name = plain(&c[0]);
        let Some(rules) = alerts.get(name.as_str()) else {
            out.add(
                &doc.path,
                format!("alert table row for {name:?}, which is not an alert"),
            );
            continue;
        };
        seen.insert(name.clone());
        let cell = |i: usize| c.get(i).map_or("", String::as_str);
        let severities: BTreeSet<&str> = rules
            .iter()
            .filter_map(|(_, r)| r.labels.get("severity").map(String::as_str))
            .collect();
        let receivers: BTreeSet<&str> = severities.iter().filter_map(|s| receiver_of(s)).collect();
        let durations: BTreeSet<&str> = rules.iter().filter_map(|(_, r)| r.for_.as_deref()).collect();
        let said = words(cell(1), SEVERITIES);
        if said != severities {
            out.add(
                &doc.path,
                format!("{name}: severity column says {said:?}, the rules {severities:?}"),
            );
        }
        let said = words(cell(2), RECEIVERS);
        if said != receivers {
            out.add(
                &doc.path,
                format!("{name}: receiver column says {said:?}, the routing {receivers:?}"),
            );
        }
        let stated: BTreeSet<&str> = DURATION.find_iter(cell(3)).map(|m| m.as_str()).collect();
        if stated != durations || (durations.is_empty() && !cell(3).contains("none")) {
            out.add(
                &doc.path,
                format!("{name}: `for` column says {:?}, the rules {durations:?}", cell(3)),
            );
        }
    }
    tables
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::tests::real;

    fn with_table(f: impl Fn(&str) -> String) -> Findings {
        let mut repo = real();
        for doc in &mut repo.docs {
            doc.text = f(&doc.text);
        }
        check(&repo)
    }

    #[test]
    fn the_real_tables_agree_with_the_rules() {
        let found = check(&real());
        assert!(found.0.is_empty(), "{:#?}", found.0);
    }

    #[test]
    fn a_wrong_severity_receiver_or_for_is_caught() {
        assert!(with_table(|t| t.replace(
            "| RedisDown | critical | pager | 1m |",
            "| RedisDown | warning | pager | 1m |"
        ))
        .mention("RedisDown: severity column says {\"warning\"}"));
        assert!(with_table(|t| t.replace(
            "| RedisDown | critical | pager | 1m |",
            "| RedisDown | critical | ticket | 1m |"
        ))
        .mention("RedisDown: receiver column says {\"ticket\"}"));
        assert!(with_table(|t| t.replace(
            "| RedisDown | critical | pager | 1m |",
            "| RedisDown | critical | pager | 5m |"
        ))
        .mention("RedisDown: `for` column says \"5m\""));
    }

    #[test]
    fn a_missing_row_and_a_row_for_no_alert_are_caught() {
        let found = with_table(|t| t.replace("| RedisDown |", "| RedisGone |"));
        assert!(found.mention("the alert table has no row for RedisDown"));
        assert!(found.mention("row for \"RedisGone\", which is not an alert"));
    }

    #[test]
    fn game_day_inventories_are_not_reference_tables_and_no_table_at_all_is_caught() {
        let doc = "| alert | severity | receiver | `for` | scenario |\n|---|---|---|---|---|\n| RedisDown | x | y | 9m | z |\n";
        let mut repo = real();
        repo.docs = vec![Text {
            path: "docs/gameday.md".into(),
            text: doc.into(),
        }];
        let found = check(&repo);
        assert_eq!(found.0.len(), 1, "{:#?}", found.0);
        assert!(found.mention("no alert reference table"));
    }
}
