//! The repository's monitoring sources, read and parsed once: rule files and their tests, the routing table,
//! dashboards, runbooks, the Markdown that carries alert tables, Grafana's provisioning and the app's metric
//! contract. The checks read this, never the disk, so a test can break one thing in a copy and see it caught.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::finding::Finding;

/// A text file, its path relative to the repository root.
#[derive(Debug, Clone)]
pub struct Text {
    pub path: String,
    pub text: String,
}

#[derive(Debug, Clone)]
pub struct RuleFile {
    pub path: String,
    pub groups: Vec<Group>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Group {
    #[serde(default)]
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Rule {
    pub alert: Option<String>,
    pub record: Option<String>,
    pub expr: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct RuleDoc {
    #[serde(default)]
    groups: Vec<Group>,
}

/// A promtool test file (`alerts/tests/*.yml`): only what the coverage checks read.
#[derive(Debug, Clone)]
pub struct TestFile {
    pub path: String,
    pub tests: Vec<TestGroup>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct TestDoc {
    #[serde(default)]
    tests: Vec<TestGroup>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct TestGroup {
    #[serde(default)]
    pub alert_rule_test: Option<Vec<AlertCase>>,
    #[serde(default)]
    pub promql_expr_test: Option<Vec<ExprCase>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct AlertCase {
    #[serde(default)]
    pub alertname: String,
    #[serde(default)]
    pub exp_alerts: Option<Vec<ExpAlert>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ExpAlert {
    #[serde(default)]
    pub exp_labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub exp_annotations: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ExprCase {
    #[serde(default)]
    pub expr: String,
}

/// A dashboard file and its JSON.
#[derive(Debug, Clone)]
pub struct Dashboard {
    pub path: String,
    pub json: serde_json::Value,
}

/// A YAML file kept as a generic value (provisioning, compose): the checks look at a few keys.
#[derive(Debug, Clone)]
pub struct Yaml {
    pub path: String,
    pub value: serde_yaml_ng::Value,
}

pub const RULES_DIR: &str = "alerts";
pub const TESTS_DIR: &str = "alerts/tests";
pub const ROUTES: &str = "monitoring/alertmanager/routes.tsv";
pub const DASHBOARDS_DIR: &str = "dashboards";
pub const RUNBOOKS_DIR: &str = "runbooks";
pub const RUNBOOK_INDEX: &str = "runbooks/README.md";
pub const APP_METRICS: &str = "app/service/src/telemetry/metrics.rs";
pub const PROVISIONING: &str = "monitoring/grafana/provisioning";
pub const COMPOSE: &str = "compose/docker-compose.yml";

#[derive(Debug, Clone, Default)]
pub struct Repo {
    pub rules: Vec<RuleFile>,
    pub rule_tests: Vec<TestFile>,
    pub routes: Option<Text>,
    pub dashboards: Vec<Dashboard>,
    /// `runbooks/*.md` but the index.
    pub runbooks: Vec<Text>,
    pub runbook_index: Option<Text>,
    pub app_metrics: Option<Text>,
    pub datasources: Vec<Yaml>,
    pub providers: Vec<Yaml>,
    pub compose: Option<Yaml>,
    /// Files that could not be read or parsed: findings of their own.
    pub unreadable: Vec<Finding>,
}

impl Repo {
    /// Reads every source under `root`. A file that does not parse becomes a finding, not an error: the other
    /// checks still run.
    pub fn load(root: &Path) -> Repo {
        let mut repo = Repo::default();
        for t in texts(root, RULES_DIR, "yml", &mut repo.unreadable) {
            match serde_yaml_ng::from_str::<Option<RuleDoc>>(&t.text) {
                Ok(doc) => repo.rules.push(RuleFile {
                    path: t.path,
                    groups: doc.unwrap_or_default().groups,
                }),
                Err(e) => repo
                    .unreadable
                    .push(Finding::new(t.path, format!("not a rule file: {e}"))),
            }
        }
        for t in texts(root, TESTS_DIR, "yml", &mut repo.unreadable) {
            match serde_yaml_ng::from_str::<Option<TestDoc>>(&t.text) {
                Ok(doc) => repo.rule_tests.push(TestFile {
                    path: t.path,
                    tests: doc.unwrap_or_default().tests,
                }),
                Err(e) => repo
                    .unreadable
                    .push(Finding::new(t.path, format!("not a promtool test file: {e}"))),
            }
        }
        repo.routes = text(root, ROUTES, &mut repo.unreadable);
        for t in texts(root, DASHBOARDS_DIR, "json", &mut repo.unreadable) {
            match serde_json::from_str(&t.text) {
                Ok(json) => repo.dashboards.push(Dashboard { path: t.path, json }),
                Err(e) => repo
                    .unreadable
                    .push(Finding::new(t.path, format!("not valid JSON: {e}"))),
            }
        }
        for t in texts(root, RUNBOOKS_DIR, "md", &mut repo.unreadable) {
            if t.path == RUNBOOK_INDEX {
                repo.runbook_index = Some(t);
            } else {
                repo.runbooks.push(t);
            }
        }
        repo.app_metrics = text(root, APP_METRICS, &mut repo.unreadable);
        repo.datasources = yamls(root, &format!("{PROVISIONING}/datasources"), &mut repo.unreadable);
        repo.providers = yamls(root, &format!("{PROVISIONING}/dashboards"), &mut repo.unreadable);
        repo.compose = yamls_of(
            text(root, COMPOSE, &mut repo.unreadable).into_iter().collect(),
            &mut repo.unreadable,
        )
        .pop();
        repo
    }

    /// Every rule with the file it is in.
    pub fn all_rules(&self) -> impl Iterator<Item = (&str, &Rule)> {
        self.rules.iter().flat_map(|f| {
            f.groups
                .iter()
                .flat_map(move |g| g.rules.iter().map(move |r| (f.path.as_str(), r)))
        })
    }

    /// Alerting rules by alert name (an alert may have several rules, one per severity), in name order.
    pub fn alerts(&self) -> BTreeMap<&str, Vec<(&str, &Rule)>> {
        let mut out: BTreeMap<&str, Vec<(&str, &Rule)>> = BTreeMap::new();
        for (path, rule) in self.all_rules() {
            if let Some(name) = &rule.alert {
                out.entry(name.as_str()).or_default().push((path, rule));
            }
        }
        out
    }

    /// Names recorded by recording rules, with the file of each.
    pub fn records(&self) -> BTreeMap<&str, &str> {
        self.all_rules()
            .filter_map(|(path, r)| r.record.as_deref().map(|name| (name, path)))
            .collect()
    }
}

/// The `*.EXT` files directly in `dir`, sorted by name; a missing folder is a finding.
fn texts(root: &Path, dir: &str, ext: &str, unreadable: &mut Vec<Finding>) -> Vec<Text> {
    let entries = match std::fs::read_dir(root.join(dir)) {
        Ok(entries) => entries,
        Err(e) => {
            unreadable.push(Finding::new(format!("{dir}/"), format!("cannot list: {e}")));
            return Vec::new();
        }
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.ends_with(&format!(".{ext}")))
        .collect();
    names.sort();
    names
        .into_iter()
        .filter_map(|n| text(root, &format!("{dir}/{n}"), unreadable))
        .collect()
}

fn text(root: &Path, path: &str, unreadable: &mut Vec<Finding>) -> Option<Text> {
    match std::fs::read_to_string(root.join(path)) {
        Ok(text) => Some(Text {
            path: path.to_owned(),
            text,
        }),
        Err(e) => {
            unreadable.push(Finding::new(path, format!("cannot read: {e}")));
            None
        }
    }
}

fn yamls(root: &Path, dir: &str, unreadable: &mut Vec<Finding>) -> Vec<Yaml> {
    let mut files = texts(root, dir, "yml", unreadable);
    files.extend(texts(root, dir, "yaml", unreadable));
    yamls_of(files, unreadable)
}

fn yamls_of(files: Vec<Text>, unreadable: &mut Vec<Finding>) -> Vec<Yaml> {
    files
        .into_iter()
        .filter_map(|t| match serde_yaml_ng::from_str(&t.text) {
            Ok(value) => Some(Yaml { path: t.path, value }),
            Err(e) => {
                unreadable.push(Finding::new(t.path, format!("not valid YAML: {e}")));
                None
            }
        })
        .collect()
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// The repository this test runs in.
    pub fn real() -> Repo {
        Repo::load(&stack::repo_root())
    }

    #[test]
    fn the_real_repository_loads_without_unreadable_files() {
        let repo = real();
        assert!(repo.unreadable.is_empty(), "{:?}", repo.unreadable);
        assert!(!repo.alerts().is_empty() && !repo.records().is_empty());
        assert!(!repo.dashboards.is_empty() && !repo.runbooks.is_empty() && !repo.rule_tests.is_empty());
    }

    #[test]
    fn a_file_that_does_not_parse_is_a_finding() {
        let dir = std::env::temp_dir().join(format!("xtask-repo-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("alerts")).unwrap();
        std::fs::write(dir.join("alerts/bad.yml"), "groups: [").unwrap();
        let repo = Repo::load(&dir);
        assert!(
            repo.unreadable.iter().any(|f| f.place == "alerts/bad.yml"),
            "{:?}",
            repo.unreadable
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
