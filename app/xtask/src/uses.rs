//! Every PromQL expression the repository uses, with where it is: rule expressions, dashboard queries (as
//! Grafana would send them) and the ```promql blocks of runbooks. The static and live metric checks and the
//! promtool pass read this one list.

use std::sync::LazyLock;

use regex::Regex;

use crate::grafana::{self, Builtins};
use crate::repo::Repo;

static PROMQL_BLOCK: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?s)```promql\n(.*?)```").unwrap());

/// Where an expression comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Rule,
    Dashboard,
    Runbook,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Use {
    pub kind: Kind,
    pub place: String,
    pub expr: String,
}

/// Every expression, dashboard queries expanded with `builtins`.
pub fn all(repo: &Repo, builtins: &Builtins) -> Vec<Use> {
    let mut out = Vec::new();
    for (path, rule) in repo.all_rules() {
        let name = rule.alert.as_deref().or(rule.record.as_deref()).unwrap_or("?");
        out.push(Use {
            kind: Kind::Rule,
            place: format!("{path} rule {name}"),
            expr: rule.expr.clone(),
        });
    }
    out.extend(dashboard_queries(repo, builtins));
    for runbook in &repo.runbooks {
        for block in runbook_blocks(&runbook.text) {
            out.push(Use {
                kind: Kind::Runbook,
                place: format!("{} promql block", runbook.path),
                expr: block.to_owned(),
            });
        }
    }
    out
}

/// Every non-hidden dashboard query, as sent with `builtins`.
pub fn dashboard_queries(repo: &Repo, builtins: &Builtins) -> Vec<Use> {
    let mut out = Vec::new();
    for d in &repo.dashboards {
        let template = grafana::template_values(&d.json);
        for q in grafana::queries(&d.json).into_iter().filter(|q| !q.hidden()) {
            out.push(Use {
                kind: Kind::Dashboard,
                place: format!("{} panel {} query {}", d.path, q.panel_id(), q.ref_id()),
                expr: grafana::substitute(q.expr, &template, builtins),
            });
        }
    }
    out
}

/// The bodies of a Markdown text's ```promql fenced blocks.
pub fn runbook_blocks(text: &str) -> impl Iterator<Item = &str> {
    PROMQL_BLOCK
        .captures_iter(text)
        .map(|c| c.get(1).unwrap().as_str().trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::tests::real;

    #[test]
    fn rules_dashboards_and_runbooks_all_contribute() {
        let uses = all(&real(), &Builtins::default());
        for kind in [Kind::Rule, Kind::Dashboard, Kind::Runbook] {
            assert!(uses.iter().any(|u| u.kind == kind), "no use from {kind:?}");
        }
        assert!(uses.iter().all(|u| !u.expr.contains("$__")), "unexpanded built-in");
    }

    #[test]
    fn runbook_blocks_are_the_promql_fences_only() {
        let text = "a\n```promql\nup\n```\n```sh\nls\n```\n```promql\nsum(x)\n```\n";
        assert_eq!(runbook_blocks(text).collect::<Vec<_>>(), ["up", "sum(x)"]);
    }
}
