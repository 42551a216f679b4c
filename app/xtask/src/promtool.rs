//! A second opinion from Prometheus's own parser: every dashboard query (as Grafana would send it) and every
//! runbook block, written as recording rules to a temporary file and checked with `promtool check rules`. The
//! rule files themselves are checked by promtool in monitoring/check.sh.

use std::path::Path;
use std::process::Command;

use crate::finding::Findings;
use crate::grafana::Builtins;
use crate::repo::Repo;
use crate::uses::{self, Kind, Use};

/// The expressions promtool is asked about: everything but the rules.
pub fn expressions(repo: &Repo) -> Vec<Use> {
    let builtins = Builtins::default();
    uses::all(repo, &builtins)
        .into_iter()
        .filter(|u| u.kind != Kind::Rule)
        .collect()
}

/// The rule file promtool checks: one recording rule `query:<n>` per expression.
pub fn rule_file(exprs: &[Use]) -> String {
    let mut text = String::from("groups:\n  - name: dashboard-and-runbook-queries\n    rules:\n");
    for (i, u) in exprs.iter().enumerate() {
        let quoted = serde_json::to_string(&u.expr).expect("a string serializes");
        text.push_str(&format!("      - record: query:{i}\n        expr: {quoted}\n"));
    }
    text
}

pub fn check(repo: &Repo, promtool: &Path) -> Findings {
    let mut out = Findings::default();
    let exprs = expressions(repo);
    let file = std::env::temp_dir().join(format!("xtask-promtool-{}.yml", std::process::id()));
    if let Err(e) = std::fs::write(&file, rule_file(&exprs)) {
        out.add(file.display().to_string(), format!("cannot write: {e}"));
        return out;
    }
    let run = Command::new(promtool).arg("check").arg("rules").arg(&file).output();
    let _ = std::fs::remove_file(&file);
    match run {
        Err(e) => out.add("promtool", format!("cannot run {}: {e}", promtool.display())),
        Ok(r) if !r.status.success() => {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&r.stdout),
                String::from_utf8_lossy(&r.stderr)
            );
            let mut named = false;
            for (i, u) in exprs.iter().enumerate() {
                // promtool names the rule it rejects, e.g. `rule 3: … record: query:3`; match whole numbers.
                if text.contains(&format!("query:{i}\n"))
                    || text.contains(&format!("query:{i} "))
                    || text.contains(&format!("query:{i}\""))
                {
                    out.add(&u.place, format!("promtool cannot parse: {}", u.expr));
                    named = true;
                }
            }
            if !named {
                out.add(
                    "promtool check rules",
                    text.trim().lines().last().unwrap_or("failed").to_owned(),
                );
            }
        }
        Ok(_) => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::tests::real;

    fn promtool() -> Option<std::path::PathBuf> {
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path)
            .map(|d| d.join("promtool"))
            .find(|p| p.is_file())
    }

    #[test]
    fn the_rule_file_quotes_every_expression() {
        let exprs = vec![Use {
            kind: Kind::Runbook,
            place: "p".into(),
            expr: "sum(x{a=\"b\"})\n  / 2".into(),
        }];
        let file = rule_file(&exprs);
        let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&file).unwrap();
        assert_eq!(
            doc["groups"][0]["rules"][0]["expr"].as_str(),
            Some("sum(x{a=\"b\"})\n  / 2")
        );
    }

    /// Needs promtool on PATH (Debian's prometheus package); skipped, with a note, without it.
    #[test]
    fn promtool_accepts_the_real_queries_and_names_a_broken_one() {
        let Some(promtool) = promtool() else {
            eprintln!("promtool not on PATH: skipped");
            return;
        };
        let mut repo = real();
        let found = check(&repo, &promtool);
        assert!(found.0.is_empty(), "{:#?}", found.0);
        repo.runbooks[0].text.push_str("\n```promql\nsum by (job (up)\n```\n");
        assert!(check(&repo, &promtool).mention("promql block: promtool cannot parse"));
    }
}
