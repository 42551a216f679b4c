//! What Grafana does to a dashboard's queries before Prometheus sees them: the panels (rows' nested ones
//! included), the template variables' saved values, and the expansion of `$var`, `${var}`, `${var:fmt}` and the
//! built-ins (`$__rate_interval`, `$__interval`, `$__range` and their `_ms`/`_s` forms).

use std::collections::BTreeMap;
use std::sync::LazyLock;
use std::time::Duration;

use regex::{Captures, Regex};
use serde_json::Value;

use crate::promql::parse_duration;

static VARIABLE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\$(?:\{(?P<braced>\w+)(?::\w+)?\}|(?P<plain>\w+))").unwrap());

/// Every panel of a dashboard, rows' nested panels included (collapsed rows keep theirs in `panels`).
pub fn panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(panels: Option<&'a Value>, out: &mut Vec<&'a Value>) {
        for p in panels.and_then(Value::as_array).into_iter().flatten() {
            out.push(p);
            walk(p.get("panels"), out);
        }
    }
    let mut out = Vec::new();
    walk(dashboard.get("panels"), &mut out);
    out
}

/// One query of a panel.
#[derive(Debug, Clone)]
pub struct Query<'a> {
    pub panel: &'a Value,
    pub target: &'a Value,
    /// The expression as written.
    pub expr: &'a str,
}

impl Query<'_> {
    pub fn panel_id(&self) -> String {
        self.panel.get("id").map_or("?".into(), Value::to_string)
    }
    pub fn ref_id(&self) -> &str {
        self.target.get("refId").and_then(Value::as_str).unwrap_or("?")
    }
    pub fn hidden(&self) -> bool {
        self.target.get("hide").and_then(Value::as_bool).unwrap_or(false)
    }
}

/// Every query with a non-empty `expr`.
pub fn queries(dashboard: &Value) -> Vec<Query<'_>> {
    let mut out = Vec::new();
    for panel in panels(dashboard) {
        for target in panel.get("targets").and_then(Value::as_array).into_iter().flatten() {
            if let Some(expr) = target
                .get("expr")
                .and_then(Value::as_str)
                .filter(|e| !e.trim().is_empty())
            {
                out.push(Query { panel, target, expr });
            }
        }
    }
    out
}

/// The value Grafana substitutes for each template variable: its saved value (several become a regex
/// alternation, "All" the variable's allValue or `.*`), or `.*` when nothing is saved. Datasource variables map
/// to `None`: they pick where a query goes, not what it says.
pub fn template_values(dashboard: &Value) -> BTreeMap<String, Option<String>> {
    let mut values = BTreeMap::new();
    let list = dashboard.pointer("/templating/list").and_then(Value::as_array);
    for var in list.into_iter().flatten() {
        let Some(name) = var.get("name").and_then(Value::as_str) else {
            continue;
        };
        if var.get("type").and_then(Value::as_str) == Some("datasource") {
            values.insert(name.to_owned(), None);
            continue;
        }
        let all = || {
            var.get("allValue")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .unwrap_or(".*")
                .to_owned()
        };
        let value = match var.pointer("/current/value") {
            None | Some(Value::Null) => ".*".to_owned(),
            Some(Value::String(s)) if s.is_empty() => ".*".to_owned(),
            Some(Value::String(s)) if s == "$__all" => all(),
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(a)) if a.is_empty() => ".*".to_owned(),
            Some(Value::Array(a)) if a.len() == 1 && a[0] == "$__all" => all(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| v.as_str().map_or(v.to_string(), str::to_owned))
                .collect::<Vec<_>>()
                .join("|"),
            Some(other) => other.to_string(),
        };
        values.insert(name.to_owned(), Some(value));
    }
    values
}

/// The values of Grafana's built-in variables.
#[derive(Debug, Clone)]
pub struct Builtins {
    pub rate_interval: String,
    pub interval: String,
    pub range: String,
}

/// What the live check sends by default, and what the static checks expand: a 1 m rate window, 15 s steps, the
/// last 5 minutes.
impl Default for Builtins {
    fn default() -> Self {
        Builtins {
            rate_interval: "1m".into(),
            interval: "15s".into(),
            range: "5m".into(),
        }
    }
}

impl Builtins {
    /// Built-ins of the given values; `Err` names the one that is not a PromQL duration.
    pub fn live(rate_interval: &str, interval: &str, range: &str) -> Result<Builtins, String> {
        for d in [rate_interval, interval, range] {
            parse_duration(d).map_err(|e| format!("{d:?} is not a duration: {e}"))?;
        }
        Ok(Builtins {
            rate_interval: rate_interval.into(),
            interval: interval.into(),
            range: range.into(),
        })
    }

    /// A duration already validated by [`Builtins::live`] (zero for anything else).
    pub fn duration(d: &str) -> Duration {
        parse_duration(d).unwrap_or_default()
    }
}

/// `expr` as Grafana would send it. An unknown variable becomes `.*`, as a multi-value "All" would.
pub fn substitute(expr: &str, template: &BTreeMap<String, Option<String>>, b: &Builtins) -> String {
    let ms = |d: &str| Builtins::duration(d).as_millis().to_string();
    VARIABLE
        .replace_all(expr, |c: &Captures| {
            let name = c.name("braced").or(c.name("plain")).map_or("", |m| m.as_str());
            match name {
                "__rate_interval" => b.rate_interval.clone(),
                "__rate_interval_ms" => ms(&b.rate_interval),
                "__interval" => b.interval.clone(),
                "__interval_ms" => ms(&b.interval),
                "__range" => b.range.clone(),
                "__range_s" => Builtins::duration(&b.range).as_secs().to_string(),
                "__range_ms" => ms(&b.range),
                _ => match template.get(name) {
                    Some(Some(v)) => v.clone(),
                    Some(None) => c[0].to_owned(),
                    None => ".*".to_owned(),
                },
            }
        })
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn variables_expand_as_grafana_expands_them() {
        let d = json!({"templating": {"list": [
            {"name": "datasource", "type": "datasource"},
            {"name": "job", "type": "custom", "current": {"value": ["app", "redis"]}},
            {"name": "pool", "type": "query", "current": {"value": "$__all"}, "allValue": "p.*"},
            {"name": "empty", "type": "query"}
        ]}});
        let t = template_values(&d);
        let b = Builtins::live("1m", "15s", "5m").unwrap();
        assert_eq!(
            substitute(
                r#"rate(x{job=~"$job",pool=~"${pool}",e=~"$empty",u=~"$nope"}[$__rate_interval]) * $__range_s"#,
                &t,
                &b
            ),
            r#"rate(x{job=~"app|redis",pool=~"p.*",e=~".*",u=~".*"}[1m]) * 300"#
        );
        assert_eq!(substitute("${__interval_ms} $datasource", &t, &b), "15000 $datasource");
    }

    #[test]
    fn nested_panels_are_found() {
        let d = json!({"panels": [{"id": 1, "type": "row", "panels": [{"id": 2, "targets": [{"expr": "up"}]}]}]});
        assert_eq!(panels(&d).len(), 2);
        assert_eq!(queries(&d)[0].panel_id(), "2");
    }
}
