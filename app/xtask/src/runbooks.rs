//! One runbook per alert, named exactly after it (`runbooks/<Alert>.md`, no runbook without an alert): it
//! starts with `# <Alert>`, has the Meaning, Impact, Diagnosis and Mitigation sections and no TODO-style
//! marker, and the index `runbooks/README.md` links it.

use std::collections::BTreeSet;
use std::sync::LazyLock;

use regex::Regex;

use crate::finding::Findings;
use crate::repo::{Repo, RUNBOOKS_DIR, RUNBOOK_INDEX};

pub const SECTIONS: &[&str] = &["Meaning", "Impact", "Diagnosis", "Mitigation"];
static HEADING: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?m)^## (.+?)\s*$").unwrap());
static MARKER: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\b(TODO|TBD|FIXME|XXX)\b").unwrap());

pub fn check(repo: &Repo) -> Findings {
    let mut out = Findings::default();
    let alerts = repo.alerts();
    let mut have = BTreeSet::new();
    for rb in &repo.runbooks {
        let name = rb
            .path
            .trim_start_matches(&format!("{RUNBOOKS_DIR}/"))
            .trim_end_matches(".md");
        have.insert(name.to_owned());
        if !alerts.contains_key(name) {
            out.add(&rb.path, "runbook for an alert that does not exist");
        }
        if !rb.text.starts_with(&format!("# {name}\n")) {
            out.add(&rb.path, format!("must start with '# {name}'"));
        }
        let headings: BTreeSet<&str> = HEADING
            .captures_iter(&rb.text)
            .map(|c| c.get(1).unwrap().as_str())
            .collect();
        for s in SECTIONS.iter().filter(|s| !headings.contains(*s)) {
            out.add(&rb.path, format!("missing section '## {s}'"));
        }
        if let Some(m) = MARKER.find(&rb.text) {
            out.add(&rb.path, format!("contains a {} marker", m.as_str()));
        }
    }
    let index = repo.runbook_index.as_ref().map_or("", |t| t.text.as_str());
    for name in alerts.keys() {
        if !have.contains(*name) {
            out.add(
                format!("{RUNBOOKS_DIR}/"),
                format!("alert {name} has no {RUNBOOKS_DIR}/{name}.md"),
            );
        }
        if !index.contains(&format!("{name}.md")) {
            out.add(RUNBOOK_INDEX, format!("does not link {name}.md"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::tests::real;

    #[test]
    fn the_real_runbooks_pass() {
        let found = check(&real());
        assert!(found.0.is_empty(), "{:#?}", found.0);
    }

    #[test]
    fn a_missing_runbook_and_an_orphan_runbook_are_caught() {
        let mut repo = real();
        let removed = repo.runbooks.remove(0);
        let mut orphan = removed.clone();
        orphan.path = format!("{RUNBOOKS_DIR}/AppGone.md");
        orphan.text = orphan
            .text
            .replacen(removed.text.lines().next().unwrap(), "# AppGone", 1);
        repo.runbooks.push(orphan);
        let found = check(&repo);
        assert!(found.mention("has no runbooks/"));
        assert!(found.mention("AppGone.md: runbook for an alert that does not exist"));
    }

    #[test]
    fn a_wrong_title_a_missing_section_and_a_todo_are_caught() {
        let mut repo = real();
        let rb = &mut repo.runbooks[0];
        rb.text = rb.text.replacen("# ", "# The ", 1).replace("## Impact", "## Effects") + "\nTODO: write this\n";
        let found = check(&repo);
        assert!(found.mention("must start with"));
        assert!(found.mention("missing section '## Impact'"));
        assert!(found.mention("contains a TODO marker"));
    }

    #[test]
    fn an_index_that_does_not_link_an_alert_is_caught() {
        let mut repo = real();
        let name = repo.alerts().keys().next().unwrap().to_string();
        let index = repo.runbook_index.as_mut().unwrap();
        index.text = index.text.replace(&format!("{name}.md"), "");
        assert!(check(&repo).mention(&format!("does not link {name}.md")));
    }
}
