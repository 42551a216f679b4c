//! The window table of each SLO alert's runbook (runbooks/<alert>.md, the region `slo-windows`), from
//! monitoring/slos.yml: per pair, its windows, factor, the error ratio that trips it, the share of the budget spent
//! by then and how long the whole budget would last at that rate.

use std::path::Path;

use stack::slo::{Pair, Slo, Spec, Tier};

use crate::generated::{replace_region, Error, Output};

pub fn generate(root: &Path) -> Result<Vec<Output>, Error> {
    let full = root.join(stack::slo::PATH);
    let text = std::fs::read_to_string(&full).map_err(|source| Error::Io { path: full, source })?;
    let spec = Spec::parse(&text).map_err(|e| Error::Source(format!("{}: {e}", stack::slo::PATH)))?;
    spec.slos
        .iter()
        .map(|slo| {
            replace_region(
                root,
                &format!("runbooks/{}.md", slo.alert),
                "slo-windows",
                &rows(&spec, slo),
            )
        })
        .collect()
}

/// The table: a row per pair, in the spec's order.
pub fn rows(spec: &Spec, slo: &Slo) -> String {
    let mut out = String::from(
        "| severity | long window | short window | burn rate | bad-request ratio above | budget spent by the time it \
         fires | budget gone in |\n|---|---|---|---|---|---|---|\n",
    );
    for tier in &spec.alerts {
        for pair in &tier.pairs {
            out.push_str(&row(spec, slo, tier, pair));
            out.push('\n');
        }
    }
    out
}

fn row(spec: &Spec, slo: &Slo, tier: &Tier, pair: &Pair) -> String {
    let period = spec.period.seconds() as f64;
    let spent = pair.factor * pair.long.seconds() as f64 / period;
    format!(
        "| {} ({}) | {} | {} | {} | {}% | {}% in {} | {} |",
        tier.severity,
        tier.action,
        pair.long,
        pair.short,
        number(pair.factor),
        number(slo.threshold(pair) * 100.0),
        number(spent * 100.0),
        span(pair.long.seconds() as f64),
        span(period / pair.factor),
    )
}

/// A length in words: `1 hour`, `3 days`; `about 2 days` when it is not a whole number of its unit.
fn span(seconds: f64) -> String {
    let (unit, size) = if seconds >= 86_400.0 {
        ("day", 86_400.0)
    } else if seconds >= 3_600.0 {
        ("hour", 3_600.0)
    } else {
        ("minute", 60.0)
    };
    let n = seconds / size;
    let about = if (n - n.round()).abs() > 1e-9 { "about " } else { "" };
    let shown = number(n.round());
    let plural = if shown == "1" { "" } else { "s" };
    format!("{about}{shown} {unit}{plural}")
}

fn number(x: f64) -> String {
    crate::slo::number(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_pair_gets_its_threshold_budget_spent_and_time_to_exhaustion() {
        let spec = Spec::parse(
            r#"
service: app
period: 30d
requests: { selector: 'job="app"', total: t }
rules: { short_group: s, long_group: l, long_from: 1d, long_interval: 1m, alert_group: b }
slos:
  - { name: latency, objective: 0.99, describes: d, good: g, record: slow, alert: A }
alerts:
  - severity: critical
    action: pages
    summary: s
    for: 2m
    pairs: [{ long: 1h, short: 5m, factor: 14.4 }, { long: 6h, short: 30m, factor: 6 }]
  - severity: warning
    action: opens a ticket
    summary: s
    for: 2m
    pairs: [{ long: 3d, short: 6h, factor: 1 }]
"#,
        )
        .unwrap();
        let table = rows(&spec, &spec.slos[0]);
        let body = table.lines().skip(2).collect::<Vec<_>>().join("\n") + "\n";
        assert_eq!(
            body,
            "| critical (pages) | 1h | 5m | 14.4 | 14.4% | 2% in 1 hour | about 2 days |\n\
             | critical (pages) | 6h | 30m | 6 | 6% | 5% in 6 hours | 5 days |\n\
             | warning (opens a ticket) | 3d | 6h | 1 | 1% | 10% in 3 days | 30 days |\n"
        );
    }

    #[test]
    fn spans_read_as_words() {
        assert_eq!(span(3_600.0), "1 hour");
        assert_eq!(span(86_400.0 * 30.0 / 14.4), "about 2 days");
        assert_eq!(span(86_400.0 * 30.0), "30 days");
        assert_eq!(span(1_800.0), "30 minutes");
    }
}
