//! What a JSON Schema cannot say about the dashboards:
//! - file named `<uid>.json`; uids unique and hand-chosen (lowercase words joined by `-`, at most 40
//!   characters); the contract's dashboards present;
//! - no export leftovers at the top level, a schemaVersion Grafana 10.4 to 12 loads without a lossy migration,
//!   read-only (`editable: false`: they are provisioned), a title;
//! - a `datasource` template variable of type datasource for Prometheus, used by every panel and query;
//! - panel ids unique, the contract's ids present (alerts and runbooks link to them), other ids ≥ 20; panels
//!   inside the 24-column grid and not overlapping;
//! - every panel but rows has a title, a description, a unit and queries with unique refIds;
//! - every query parses, and every `rate`, `irate` and `increase` takes `[$__rate_interval]`.
//!
//! The metric names of the queries are checked with the rules' and runbooks' (`exists`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;

use regex::Regex;
use serde_json::Value;

use crate::finding::Findings;
use crate::grafana::{self, Builtins};
use crate::promql;
use crate::repo::{Dashboard, Repo, DASHBOARDS_DIR};

/// Dashboard uid → the panel ids that alerts' dashboard_url and runbooks link to (the shared contract).
pub const CONTRACT: &[(&str, u64)] = &[
    ("sre-overview", 17),
    ("sre-slo", 7),
    ("sre-redis", 10),
    ("sre-postgres", 12),
    ("sre-stack", 8),
    ("sre-ha", 9),
];
pub const FIRST_FREE_ID: u64 = 20;
/// Grafana 10.4 and 11.0–11.2 write 39, 11.3–11.6 40–41, 12.x 41–42; newer Grafanas migrate older ones up.
pub const SCHEMA_VERSIONS: std::ops::RangeInclusive<u64> = 39..=42;
pub const LEFTOVERS: &[&str] = &[
    "id",
    "version",
    "gnetId",
    "iteration",
    "__inputs",
    "__requires",
    "__elements",
];
pub const DATASOURCE_REF: &str = "${datasource}";
/// Stands in for `$__rate_interval` while linting: a duration no one writes by hand, so a range equal to it can
/// only come from the variable.
pub const RATE_INTERVAL_SENTINEL: &str = "1y1w1d1h1m1s1ms";

static UID: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[a-z][a-z0-9]*(?:-[a-z0-9]+)*$").unwrap());

pub fn check(repo: &Repo) -> Findings {
    let mut out = Findings::default();
    let mut uids: BTreeMap<String, String> = BTreeMap::new();
    for d in &repo.dashboards {
        dashboard(d, &mut uids, &mut out);
    }
    for (uid, _) in CONTRACT {
        if !uids.contains_key(*uid) {
            out.add(
                format!("{DASHBOARDS_DIR}/"),
                format!("dashboard {uid:?} ({uid}.json) is missing"),
            );
        }
    }
    out
}

/// Panel ids of each dashboard by uid: where alerts and runbooks may link.
pub fn panel_ids(repo: &Repo) -> BTreeMap<String, BTreeSet<u64>> {
    repo.dashboards
        .iter()
        .filter_map(|d| {
            let uid = d.json.get("uid")?.as_str()?.to_owned();
            let ids = grafana::panels(&d.json)
                .iter()
                .filter_map(|p| p.get("id")?.as_u64())
                .collect();
            Some((uid, ids))
        })
        .collect()
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

fn dashboard(d: &Dashboard, uids: &mut BTreeMap<String, String>, out: &mut Findings) {
    let (name, j) = (d.path.as_str(), &d.json);
    let uid = j.get("uid").and_then(Value::as_str);
    match uid {
        Some(u) if UID.is_match(u) && u.len() <= 40 => {
            if let Some(other) = uids.get(u) {
                out.add(name, format!("uid {u:?} is also used by {other}"));
            } else {
                uids.insert(u.to_owned(), name.to_owned());
            }
            if !name.ends_with(&format!("/{u}.json")) {
                out.add(name, format!("file should be named {u}.json after its uid"));
            }
        }
        _ => out.add(
            name,
            format!("uid {uid:?} is not a hand-chosen uid (lowercase words joined by '-', at most 40 chars)"),
        ),
    }
    for key in LEFTOVERS {
        if j.get(*key).is_some() {
            out.add(name, format!("export leftover at the top level: {key:?}"));
        }
    }
    let schema = j.get("schemaVersion").and_then(Value::as_u64);
    if !schema.is_some_and(|v| SCHEMA_VERSIONS.contains(&v)) {
        out.add(
            name,
            format!("schemaVersion {schema:?} is not one of {SCHEMA_VERSIONS:?}"),
        );
    }
    if j.get("editable") != Some(&Value::Bool(false)) {
        out.add(
            name,
            "editable must be false: the dashboard is provisioned read-only from the repository",
        );
    }
    if str_at(j, "/title").is_none_or(str::is_empty) {
        out.add(name, "no title");
    }
    let vars = j.pointer("/templating/list").and_then(Value::as_array);
    let ds = vars
        .into_iter()
        .flatten()
        .find(|v| v.get("name").and_then(Value::as_str) == Some("datasource"));
    if !ds.is_some_and(|v| str_at(v, "/type") == Some("datasource") && str_at(v, "/query") == Some("prometheus")) {
        out.add(
            name,
            "needs a template variable `datasource` of type datasource with query `prometheus`",
        );
    }
    panels(d, uid, out);
}

fn grid(p: &Value) -> Option<[i64; 4]> {
    let g = p.get("gridPos")?;
    let n = |k: &str| g.get(k).and_then(Value::as_i64);
    Some([n("x")?, n("y")?, n("w")?, n("h")?])
}

fn panels(d: &Dashboard, uid: Option<&str>, out: &mut Findings) {
    let name = d.path.as_str();
    let template = grafana::template_values(&d.json);
    let lint_builtins = Builtins {
        rate_interval: RATE_INTERVAL_SENTINEL.into(),
        interval: "15s".into(),
        range: "5m".into(),
    };
    let sentinel = promql::parse_duration(RATE_INTERVAL_SENTINEL).ok();
    let mut ids: BTreeMap<u64, String> = BTreeMap::new();
    let mut placed = Vec::new();
    for p in grafana::panels(&d.json) {
        let id = p.get("id").and_then(Value::as_u64);
        let title = str_at(p, "/title").unwrap_or("");
        let place = format!("{name} panel {} ({title})", id.map_or("?".into(), |i| i.to_string()));
        match id {
            None => out.add(&place, "panel without an integer id"),
            Some(i) => {
                if let Some(other) = ids.get(&i) {
                    out.add(&place, format!("id {i} is also used by panel {other:?}"));
                } else {
                    ids.insert(i, title.to_owned());
                }
            }
        }
        match grid(p) {
            Some([x, _, w, _]) if x >= 0 && w > 0 && x + w <= 24 => placed.push((id, grid(p).unwrap())),
            _ => out.add(
                &place,
                format!("gridPos {:?} is not inside the 24-column grid", p.get("gridPos")),
            ),
        }
        if str_at(p, "/type") == Some("row") {
            continue;
        }
        if title.is_empty() {
            out.add(&place, "no title");
        }
        if str_at(p, "/description").is_none_or(str::is_empty) {
            out.add(
                &place,
                "no description (say what the panel shows and which alert, if any, it explains)",
            );
        }
        if str_at(p, "/fieldConfig/defaults/unit").is_none_or(str::is_empty) {
            out.add(&place, "no unit in fieldConfig.defaults.unit");
        }
        if str_at(p, "/datasource/uid") != Some(DATASOURCE_REF) {
            out.add(
                &place,
                format!("panel datasource must be {{\"uid\": \"{DATASOURCE_REF}\"}}"),
            );
        }
        let targets = p.get("targets").and_then(Value::as_array).cloned().unwrap_or_default();
        if targets.is_empty() {
            out.add(&place, "no queries");
        }
        let refs: Vec<Option<&str>> = targets.iter().map(|t| t.get("refId").and_then(Value::as_str)).collect();
        if refs.contains(&None) || refs.iter().collect::<BTreeSet<_>>().len() != refs.len() {
            out.add(&place, format!("refIds must be present and unique, got {refs:?}"));
        }
        for t in &targets {
            let tplace = format!(
                "{place} query {}",
                t.get("refId").and_then(Value::as_str).unwrap_or("?")
            );
            let Some(expr) = t.get("expr").and_then(Value::as_str).filter(|e| !e.trim().is_empty()) else {
                out.add(&tplace, "no expr");
                continue;
            };
            if str_at(t, "/datasource/uid") != Some(DATASOURCE_REF) {
                out.add(
                    &tplace,
                    format!("query datasource must be {{\"uid\": \"{DATASOURCE_REF}\"}}"),
                );
            }
            match promql::analyze(&grafana::substitute(expr, &template, &lint_builtins)) {
                Err(e) => out.add(&tplace, format!("does not parse: {e}")),
                Ok(a) => {
                    for call in a.rate_calls.iter().filter(|c| c.range != sentinel) {
                        out.add(
                            &tplace,
                            format!("{}() must take [$__rate_interval]: {expr}", call.function),
                        );
                    }
                }
            }
        }
    }
    for (i, (ia, a)) in placed.iter().enumerate() {
        for (ib, b) in &placed[i + 1..] {
            if a[0] < b[0] + b[2] && b[0] < a[0] + a[2] && a[1] < b[1] + b[3] && b[1] < a[1] + a[3] {
                out.add(name, format!("panels {} and {} overlap", fmt_id(*ia), fmt_id(*ib)));
            }
        }
    }
    if let Some((_, last)) = CONTRACT.iter().find(|(u, _)| Some(*u) == uid) {
        for id in 1..=*last {
            if !ids.contains_key(&id) {
                out.add(
                    name,
                    format!("contract panel id {id} is missing (alerts and runbooks link to it)"),
                );
            }
        }
        for id in ids.keys().filter(|i| (**i == 0 || **i > *last) && **i < FIRST_FREE_ID) {
            out.add(
                name,
                format!("panel id {id} is reserved for the contract; use ids >= {FIRST_FREE_ID}"),
            );
        }
    }
}

fn fmt_id(id: Option<u64>) -> String {
    id.map_or("?".into(), |i| i.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::tests::real;
    use serde_json::json;

    /// The real repository with the first dashboard changed by `f`.
    fn with_dashboard(f: impl FnOnce(&mut Value)) -> Findings {
        let mut repo = real();
        f(&mut repo.dashboards[0].json);
        check(&repo)
    }

    /// The first panel with a query of the first dashboard.
    fn first_panel(d: &mut Value) -> &mut Value {
        d["panels"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .find(|p| p.get("targets").is_some())
            .unwrap()
    }

    #[test]
    fn the_real_dashboards_pass() {
        let found = check(&real());
        assert!(found.0.is_empty(), "{:#?}", found.0);
    }

    #[test]
    fn a_uid_that_is_not_hand_chosen_or_not_the_file_name_is_caught() {
        assert!(with_dashboard(|d| d["uid"] = json!("Ab3_xZ")).mention("not a hand-chosen uid"));
        assert!(with_dashboard(|d| d["uid"] = json!("sre-other")).mention("should be named sre-other.json"));
    }

    #[test]
    fn a_duplicate_uid_and_a_missing_contract_dashboard_are_caught() {
        let mut repo = real();
        let first = repo.dashboards[0].json["uid"].clone();
        repo.dashboards[1].json["uid"] = first;
        let found = check(&repo);
        assert!(found.mention("is also used by"));
        assert!(found.mention("is missing"));
    }

    #[test]
    fn export_leftovers_schema_version_editable_and_title_are_caught() {
        let found = with_dashboard(|d| {
            d["id"] = json!(3);
            d["schemaVersion"] = json!(16);
            d["editable"] = json!(true);
            d["title"] = json!("");
        });
        for text in [
            "export leftover at the top level: \"id\"",
            "schemaVersion Some(16)",
            "editable must be false",
            "no title",
        ] {
            assert!(found.mention(text), "{text}: {:#?}", found.0);
        }
    }

    #[test]
    fn a_missing_datasource_variable_is_caught() {
        assert!(with_dashboard(|d| d["templating"]["list"] = json!([])).mention("template variable `datasource`"));
    }

    #[test]
    fn panel_id_grid_and_overlap_problems_are_caught() {
        let found = with_dashboard(|d| {
            let panels = d["panels"].as_array_mut().unwrap();
            let copy = panels[1].clone();
            panels.push(copy);
            panels[0]["gridPos"]["x"] = json!(20);
            panels[0]["gridPos"]["w"] = json!(10);
        });
        assert!(found.mention("is also used by panel"));
        assert!(found.mention("not inside the 24-column grid"));
        assert!(found.mention("overlap"));
    }

    #[test]
    fn missing_contract_ids_and_reserved_ids_are_caught() {
        let found = with_dashboard(|d| {
            let uid = d["uid"].as_str().unwrap().to_owned();
            let last = CONTRACT.iter().find(|(u, _)| *u == uid).unwrap().1;
            let p = d["panels"]
                .as_array_mut()
                .unwrap()
                .iter_mut()
                .find(|p| p["id"] == json!(1))
                .unwrap();
            p["id"] = json!(last + 1);
        });
        assert!(found.mention("contract panel id 1 is missing"));
        assert!(found.mention("is reserved for the contract"));
    }

    #[test]
    fn a_panel_without_title_description_unit_datasource_or_queries_is_caught() {
        let found = with_dashboard(|d| {
            let p = first_panel(d);
            p["title"] = json!("");
            p.as_object_mut().unwrap().remove("description");
            p["fieldConfig"]["defaults"]["unit"] = json!("");
            p["datasource"] = json!({"uid": "abc123"});
            p["targets"] = json!([]);
        });
        for text in [
            "no title",
            "no description",
            "no unit",
            "panel datasource must be",
            "no queries",
        ] {
            assert!(found.mention(text), "{text}: {:#?}", found.0);
        }
    }

    #[test]
    fn query_ref_ids_datasource_and_expr_are_checked() {
        let found = with_dashboard(|d| {
            let p = first_panel(d);
            let t = p["targets"][0].clone();
            let mut dup = t.clone();
            dup["datasource"] = json!({"uid": "prom-1"});
            let mut empty = t.clone();
            empty["refId"] = json!("Z");
            empty["expr"] = json!("");
            p["targets"] = json!([t, dup, empty]);
        });
        assert!(found.mention("refIds must be present and unique"));
        assert!(found.mention("query datasource must be"));
        assert!(found.mention("no expr"));
    }

    #[test]
    fn a_query_that_does_not_parse_is_caught() {
        let found = with_dashboard(|d| first_panel(d)["targets"][0]["expr"] = json!("sum(rate(up[$__rate_interval])"));
        assert!(found.mention("does not parse"));
    }

    #[test]
    fn a_rate_with_a_fixed_range_is_caught() {
        let found = with_dashboard(|d| {
            first_panel(d)["targets"][0]["expr"] = json!("sum(rate(up[5m])) + rate(up[$__rate_interval])")
        });
        assert!(found.mention("rate() must take [$__rate_interval]"));
        let found = with_dashboard(|d| first_panel(d)["targets"][0]["expr"] = json!("increase(up[$__range])"));
        assert!(found.mention("increase() must take [$__rate_interval]"));
    }

    #[test]
    fn a_panel_without_an_integer_id_is_caught() {
        assert!(with_dashboard(|d| first_panel(d)["id"] = json!("a")).mention("panel without an integer id"));
    }
}
