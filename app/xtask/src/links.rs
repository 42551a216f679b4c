//! Every dashboard link, in an alert's `dashboard_url` or in a runbook, opens a panel that exists: the
//! dashboard's uid and the panel id (`http://host/d/<uid>/…?viewPanel=<id>`).

use std::sync::LazyLock;

use regex::Regex;

use crate::dashboards::panel_ids;
use crate::finding::Findings;
use crate::repo::Repo;

static LINK: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"https?://[^/\s]+/d/(?P<uid>[A-Za-z0-9_-]+)/[^\s)"']*?viewPanel=(?P<panel>\d+)"#).unwrap()
});
static ANY_LINK: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"https?://[^/\s]+/d/[^\s)>\]]+").unwrap());

pub fn check(repo: &Repo) -> Findings {
    let mut out = Findings::default();
    let ids = panel_ids(repo);
    let mut link = |place: &str, url: &str| match LINK.captures(url) {
        None => out.add(
            place,
            format!("dashboard link {url:?} is not of the form http://host/d/<uid>/?viewPanel=<id>"),
        ),
        Some(c) => match ids.get(&c["uid"]) {
            None => out.add(
                place,
                format!("dashboard link {url:?}: no dashboard with uid {:?}", &c["uid"]),
            ),
            Some(panels) if !c["panel"].parse().is_ok_and(|p: u64| panels.contains(&p)) => out.add(
                place,
                format!(
                    "dashboard link {url:?}: dashboard {:?} has no panel {}",
                    &c["uid"], &c["panel"]
                ),
            ),
            Some(_) => {}
        },
    };
    for (path, rule) in repo.all_rules() {
        if let (Some(name), Some(url)) = (&rule.alert, rule.annotations.get("dashboard_url")) {
            link(&format!("{path} {name}"), url);
        }
    }
    for runbook in &repo.runbooks {
        for m in ANY_LINK.find_iter(&runbook.text) {
            link(&runbook.path, m.as_str());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::tests::real;

    #[test]
    fn the_real_links_resolve() {
        let found = check(&real());
        assert!(found.0.is_empty(), "{:#?}", found.0);
    }

    #[test]
    fn a_link_to_a_missing_panel_or_dashboard_is_caught() {
        let mut repo = real();
        let rule = repo
            .rules
            .iter_mut()
            .flat_map(|f| f.groups.iter_mut())
            .flat_map(|g| g.rules.iter_mut());
        let rule = rule.into_iter().find(|r| r.alert.is_some()).unwrap();
        rule.annotations.insert(
            "dashboard_url".into(),
            "http://localhost:3000/d/sre-overview/?viewPanel=999".into(),
        );
        repo.runbooks[0]
            .text
            .push_str("\n[x](http://localhost:3000/d/no-such/?viewPanel=1)\n[y](http://localhost:3000/d/sre-slo/)\n");
        let found = check(&repo);
        assert!(found.mention("has no panel 999"));
        assert!(found.mention("no dashboard with uid \"no-such\""));
        assert!(found.mention("is not of the form"));
    }
}
