//! The rules of `alerts/*.yml`, read as Prometheus reads them: every group's alerting and recording rules, with
//! their labels, `for` and annotations. A YAML file there without `groups` is not a rule file and is skipped.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde_yaml_ng::Value;

use crate::generated::Error;

/// The folder of rule files, relative to the repository root.
pub const DIR: &str = "alerts";

/// One rule of a rule file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The file it is in, relative to the repository root (`alerts/app.yml`).
    pub file: String,
    /// The alert's name; `None` for a recording rule.
    pub alert: Option<String>,
    /// The recorded series' name; `None` for an alerting rule.
    pub record: Option<String>,
    pub expr: String,
    /// `for`, as written (`2m`); `None` when the alert fires at once.
    pub for_: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

impl Rule {
    /// The labels Alertmanager sees from the rule itself: its own labels and `alertname`. Labels that come from
    /// the expression's series (job, instance) are not known before it fires.
    pub fn alert_labels(&self) -> BTreeMap<String, String> {
        let mut labels = self.labels.clone();
        if let Some(name) = &self.alert {
            labels.insert("alertname".to_owned(), name.clone());
        }
        labels
    }
}

#[derive(Deserialize)]
struct File {
    groups: Vec<Group>,
}

#[derive(Deserialize)]
struct Group {
    #[serde(default)]
    rules: Vec<RawRule>,
}

#[derive(Deserialize)]
struct RawRule {
    alert: Option<String>,
    record: Option<String>,
    expr: Value,
    #[serde(rename = "for")]
    for_: Option<Value>,
    #[serde(default)]
    labels: BTreeMap<String, Value>,
    #[serde(default)]
    annotations: BTreeMap<String, Value>,
}

/// Every rule of every `*.yml` directly in `alerts/` (not its `tests/`), files in name order, rules in file order.
pub fn read(root: &Path) -> Result<Vec<Rule>, Error> {
    let dir = root.join(DIR);
    let entries = std::fs::read_dir(&dir).map_err(|source| Error::Io {
        path: dir.clone(),
        source,
    })?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| Error::Io {
            path: dir.clone(),
            source,
        })?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".yml") || name.ends_with(".yaml") {
            names.push(name);
        }
    }
    names.sort();
    let mut rules = Vec::new();
    for name in names {
        let path = dir.join(&name);
        let text = std::fs::read_to_string(&path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        rules.extend(parse(&format!("{DIR}/{name}"), &text)?.unwrap_or_default());
    }
    Ok(rules)
}

/// The rules of one file's text; `None` when it is YAML but not a rule file (no top-level `groups`).
pub fn parse(file: &str, text: &str) -> Result<Option<Vec<Rule>>, Error> {
    let invalid = |e: serde_yaml_ng::Error| Error::Source(format!("{file}: {e}"));
    let value: Value = serde_yaml_ng::from_str(text).map_err(invalid)?;
    if value.get("groups").is_none() {
        return Ok(None);
    }
    let parsed: File = serde_yaml_ng::from_value(value).map_err(invalid)?;
    let mut rules = Vec::new();
    for raw in parsed.groups.into_iter().flat_map(|g| g.rules) {
        if raw.alert.is_some() == raw.record.is_some() {
            return Err(Error::Source(format!(
                "{file}: a rule needs exactly one of `alert` and `record` (expr {})",
                scalar(&raw.expr)
            )));
        }
        rules.push(Rule {
            file: file.to_owned(),
            alert: raw.alert,
            record: raw.record,
            expr: scalar(&raw.expr),
            for_: raw.for_.as_ref().map(scalar),
            labels: raw.labels.iter().map(|(k, v)| (k.clone(), scalar(v))).collect(),
            annotations: raw.annotations.iter().map(|(k, v)| (k.clone(), scalar(v))).collect(),
        });
    }
    Ok(Some(rules))
}

/// A scalar as Prometheus reads it into a string (`expr: 1`, `severity: 2` are strings to it).
fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => String::new(),
        other => serde_yaml_ng::to_string(other)
            .unwrap_or_default()
            .trim_end()
            .to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alerting_and_recording_rules_are_read_with_their_labels_and_for() {
        let text = "groups:\n  - name: g\n    rules:\n      - record: a:b\n        expr: sum(x)\n      - alert: A\n        expr: up == 0\n        for: 1m\n        labels: {severity: critical, tier: 1}\n        annotations: {summary: S.}\n";
        let rules = parse("alerts/a.yml", text).unwrap().unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0].record.as_deref(), Some("a:b"));
        assert_eq!(rules[1].alert.as_deref(), Some("A"));
        assert_eq!(rules[1].for_.as_deref(), Some("1m"));
        assert_eq!(rules[1].labels["tier"], "1");
        assert_eq!(rules[1].alert_labels()["alertname"], "A");
        assert_eq!(rules[1].annotations["summary"], "S.");
    }

    #[test]
    fn yaml_without_groups_is_not_a_rule_file() {
        assert_eq!(parse("alerts/other.yml", "rule_files: []\n").unwrap(), None);
    }

    #[test]
    fn a_rule_that_is_neither_alert_nor_record_is_an_error_naming_its_file() {
        let err = parse("alerts/bad.yml", "groups:\n  - name: g\n    rules:\n      - expr: up\n").unwrap_err();
        assert!(err.to_string().starts_with("alerts/bad.yml: "), "{err}");
    }
}
