//! The SLO numbers of dashboards/sre-slo.json, from monitoring/slos.yml: each SLI panel's objective line, each
//! burn-rate panel's divisor (the error budget) and its dashed lines (the alert factors), and the numbers their
//! descriptions quote. The rest of the dashboard is hand-written and kept as it is.
//!
//! A panel belongs to the SLO whose ratio rules its queries read (`app:latency_slow:...`): an SLI panel plots
//! `1 - <ratio>`, a burn-rate panel `<ratio> / <budget>`.

use std::path::Path;

use serde_json::Value;
use stack::slo::{Slo, Spec};

use crate::generated::{Error, Output};

pub const OUTPUT: &str = "dashboards/sre-slo.json";

pub fn generate(root: &Path) -> Result<Vec<Output>, Error> {
    let read = |path: &str| {
        let full = root.join(path);
        std::fs::read_to_string(&full).map_err(|source| Error::Io { path: full, source })
    };
    let spec =
        Spec::parse(&read(stack::slo::PATH)?).map_err(|e| Error::Source(format!("{}: {e}", stack::slo::PATH)))?;
    let contents = render(&spec, &read(OUTPUT)?).map_err(|e| Error::Source(format!("{OUTPUT}: {e}")))?;
    Ok(vec![Output {
        path: OUTPUT.into(),
        contents,
    }])
}

/// The dashboard `text` with its SLO numbers set from `spec`, formatted as it is committed (2-space JSON).
pub fn render(spec: &Spec, text: &str) -> Result<String, String> {
    let mut dashboard: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    dashboard["description"] = Value::String(description(spec));
    let panels = dashboard
        .get_mut("panels")
        .and_then(Value::as_array_mut)
        .ok_or("no `panels` list")?;
    let mut factors: Vec<f64> = spec
        .alerts
        .iter()
        .flat_map(|t| t.pairs.iter().map(|p| p.factor))
        .collect();
    factors.sort_by(f64::total_cmp);
    factors.dedup();
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or("?").to_owned();
        let exprs: Vec<String> = panel["targets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["expr"].as_str().map(str::to_owned))
            .collect();
        let Some(slo) = spec
            .slos
            .iter()
            .find(|slo| exprs.iter().any(|e| e.contains(&ratio_prefix(spec, slo))))
        else {
            continue;
        };
        let at = |what: &str| format!("panel `{title}`: {what}");
        if exprs.iter().all(|e| e.starts_with("1 - ")) {
            // An SLI panel: the last threshold step is the objective.
            let steps = steps(panel).ok_or_else(|| at("no threshold steps"))?;
            let last = steps.last_mut().ok_or_else(|| at("no threshold steps"))?;
            last["value"] = json_number(slo.objective);
            quote(panel, "the objective (", "%)", &number(slo.objective * 100.0)).map_err(|e| at(&e))?;
        } else if exprs.iter().all(|e| e.contains(" / ")) {
            // A burn-rate panel: every query divides a ratio by the budget, the dashed lines are the factors.
            for target in panel["targets"].as_array_mut().into_iter().flatten() {
                let expr = target["expr"].as_str().unwrap_or_default();
                let (ratio, _) = expr.split_once(" / ").expect("checked above");
                target["expr"] = Value::String(format!("{ratio} / {}", number(slo.error_budget())));
            }
            let steps = steps(panel).ok_or_else(|| at("no threshold steps"))?;
            let colors: Vec<Value> = steps.iter().skip(1).map(|s| s["color"].clone()).collect();
            steps.truncate(1);
            for (i, factor) in factors.iter().enumerate() {
                // The existing colours in order while they last; a tier added later is drawn red.
                let color = colors.get(i).cloned().unwrap_or_else(|| Value::String("red".into()));
                steps.push(serde_json::json!({ "color": color, "value": json_number(*factor) }));
            }
            let list: Vec<String> = factors.iter().map(|f| number(*f)).collect();
            let list = match list.split_last() {
                Some((last, [])) => last.clone(),
                Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
                None => String::new(),
            };
            quote(panel, "Dashed lines: ", ", the alert factors.", &list).map_err(|e| at(&e))?;
        }
    }
    let mut out = serde_json::to_string_pretty(&dashboard).map_err(|e| e.to_string())?;
    out.push('\n');
    Ok(out)
}

/// The dashboard's description: the SLOs and when their alerts fire.
fn description(spec: &Spec) -> String {
    let slos: Vec<String> = spec
        .slos
        .iter()
        .map(|slo| format!("{} {}%", slo.name, number(slo.objective * 100.0)))
        .collect();
    let tiers: Vec<String> = spec
        .alerts
        .iter()
        .map(|tier| {
            let pairs: Vec<String> = tier
                .pairs
                .iter()
                .map(|p| format!("{}/{} exceed {}", p.long, p.short, number(p.factor)))
                .collect();
            format!(
                "the {} alert {} when both windows of {}",
                tier.severity,
                tier.action,
                pairs.join(" or ")
            )
        })
        .collect();
    format!(
        "The app's SLOs over {}, declared in {} and recorded by alerts/slo.yml: {}. Burn rate = error ratio / error \
         budget; {}.",
        spec.period,
        stack::slo::PATH,
        slos.join(", "),
        tiers.join("; ")
    )
}

fn ratio_prefix(spec: &Spec, slo: &Slo) -> String {
    format!("{}:{}:ratio_rate", spec.service, slo.record)
}

fn steps(panel: &mut Value) -> Option<&mut Vec<Value>> {
    panel
        .pointer_mut("/fieldConfig/defaults/thresholds/steps")
        .and_then(Value::as_array_mut)
}

/// Replaces what the panel's description says between `before` and `after`.
fn quote(panel: &mut Value, before: &str, after: &str, value: &str) -> Result<(), String> {
    let description = panel["description"].as_str().unwrap_or_default();
    let start = description
        .find(before)
        .map(|i| i + before.len())
        .ok_or_else(|| format!("the description does not say `{before}...{after}`"))?;
    let end = start
        + description[start..]
            .find(after)
            .ok_or_else(|| format!("the description does not say `{before}...{after}`"))?;
    let text = format!("{}{value}{}", &description[..start], &description[end..]);
    panel["description"] = Value::String(text);
    Ok(())
}

/// A JSON number as the dashboard writes it: `1`, not `1.0`; `0.001`, not 1 - 0.999's long tail.
fn json_number(x: f64) -> Value {
    serde_json::from_str(&number(x)).expect("a decimal is a JSON number")
}

fn number(x: f64) -> String {
    crate::slo::number(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = r#"
service: app
period: 30d
requests: { selector: 'job="app"', total: t }
rules: { short_group: s, long_group: l, long_from: 1d, long_interval: 1m, alert_group: b }
slos:
  - { name: availability, objective: 0.995, describes: d, errors: e, record: errors, alert: A }
alerts:
  - severity: critical
    action: pages
    summary: s
    for: 2m
    pairs: [{ long: 1h, short: 5m, factor: 10 }, { long: 6h, short: 30m, factor: 5 }]
"#;

    const DASHBOARD: &str = r#"{
  "panels": [
    {
      "description": "Good share. The dashed line is the objective (99.9%).",
      "fieldConfig": { "defaults": { "thresholds": { "steps": [
        { "color": "red", "value": null }, { "color": "green", "value": 0.999 } ] } } },
      "targets": [ { "expr": "1 - app:errors:ratio_rate5m" } ],
      "title": "SLI"
    },
    {
      "description": "Burn. Dashed lines: 1, 3, 6 and 14.4, the alert factors.",
      "fieldConfig": { "defaults": { "thresholds": { "steps": [
        { "color": "green", "value": null }, { "color": "yellow", "value": 1 }, { "color": "orange", "value": 3 },
        { "color": "dark-orange", "value": 6 }, { "color": "red", "value": 14.4 } ] } } },
      "targets": [ { "expr": "app:errors:ratio_rate5m / 0.001" }, { "expr": "app:errors:ratio_rate1h / 0.001" } ],
      "title": "Burn"
    },
    { "targets": [ { "expr": "up" } ], "title": "Other", "description": "objective (99.9%)" }
  ]
}"#;

    #[test]
    fn sli_and_burn_panels_take_the_objective_budget_and_factors_of_the_spec() {
        let out = render(&Spec::parse(SPEC).unwrap(), DASHBOARD).unwrap();
        let v: Value = serde_json::from_str(&out).unwrap();
        let sli = &v["panels"][0];
        assert_eq!(sli["fieldConfig"]["defaults"]["thresholds"]["steps"][1]["value"], 0.995);
        assert_eq!(
            sli["description"],
            "Good share. The dashed line is the objective (99.5%)."
        );
        let burn = &v["panels"][1];
        assert_eq!(burn["targets"][0]["expr"], "app:errors:ratio_rate5m / 0.005");
        assert_eq!(burn["targets"][1]["expr"], "app:errors:ratio_rate1h / 0.005");
        assert_eq!(
            burn["fieldConfig"]["defaults"]["thresholds"]["steps"],
            serde_json::json!([
                { "color": "green", "value": null }, { "color": "yellow", "value": 5 }, { "color": "orange", "value": 10 }
            ])
        );
        assert_eq!(burn["description"], "Burn. Dashed lines: 5 and 10, the alert factors.");
        assert_eq!(
            v["description"],
            "The app's SLOs over 30d, declared in monitoring/slos.yml and recorded by alerts/slo.yml: availability \
             99.5%. Burn rate = error ratio / error budget; the critical alert pages when both windows of 1h/5m \
             exceed 10 or 6h/30m exceed 5."
        );
        // A panel of no SLO is left alone.
        assert_eq!(v["panels"][2]["description"], "objective (99.9%)");
    }

    #[test]
    fn a_panel_whose_description_lost_its_number_is_an_error_naming_it() {
        let dashboard = DASHBOARD.replace("The dashed line is the objective (99.9%).", "");
        let err = render(&Spec::parse(SPEC).unwrap(), &dashboard).unwrap_err();
        assert!(err.contains("panel `SLI`"), "{err}");
    }
}
