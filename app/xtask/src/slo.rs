//! alerts/slo.yml from monitoring/slos.yml: the SLI recording rules (one per SLO and window), the error budgets left,
//! and one multiwindow multi-burn-rate alert per SLO and severity (Google SRE workbook, "Alerting on SLOs").
//!
//! The YAML is formatted here rather than serialized, so the output keeps block scalars for the expressions, folded
//! descriptions and the comments that explain the rules, and is byte-for-byte the same from one run to the next.

use std::fmt::Write as _;
use std::path::Path;

use stack::slo::{Pair, Sli, Slo, Spec, Tier, Window};

use crate::generated::{Error, Output};

/// The generated rule file.
pub const OUTPUT: &str = "alerts/slo.yml";

/// Reads the spec under `root` (not the embedded copy: the checkout being generated is the source).
pub fn generate(root: &Path) -> Result<Vec<Output>, Error> {
    let path = root.join(stack::slo::PATH);
    let text = std::fs::read_to_string(&path).map_err(|source| Error::Io { path, source })?;
    let spec = Spec::parse(&text).map_err(|e| Error::Source(format!("{}: {e}", stack::slo::PATH)))?;
    Ok(vec![Output {
        path: OUTPUT.into(),
        contents: render(&spec),
    }])
}

/// The whole rule file for `spec`.
pub fn render(spec: &Spec) -> String {
    let mut out = String::new();
    header(&mut out, spec);
    out.push_str("\ngroups:\n");
    let (short, long): (Vec<&Window>, Vec<&Window>) =
        spec.windows().into_iter().partition(|w| **w < spec.rules.long_from);

    out.push_str(&format!(
        "  # Windows under {}, evaluated every cycle: they decide how fast a page fires and how fast an alert clears.\n",
        spec.rules.long_from
    ));
    group(&mut out, &spec.rules.short_group, None);
    record(
        &mut out,
        &spec.requests_record(),
        Some("Requests per second that count towards the SLOs; 0 when idle."),
        &format!("sum(rate({}[{}]))", spec.select(&spec.requests.total), short[0]),
    );
    for slo in &spec.slos {
        for window in &short {
            record(
                &mut out,
                &slo.ratio_record(spec, window),
                None,
                &ratio(spec, slo, window),
            );
        }
    }

    out.push('\n');
    out.push_str(&format!(
        "  # Windows from {} on: rates over days read many samples, so they are evaluated every {}; neither the pairs\n  \
         # that use them nor the {} budget need a finer resolution.\n",
        spec.rules.long_from, spec.rules.long_interval, period(spec)
    ));
    group(&mut out, &spec.rules.long_group, Some(&spec.rules.long_interval));
    for slo in &spec.slos {
        for window in &long {
            record(
                &mut out,
                &slo.ratio_record(spec, window),
                None,
                &ratio(spec, slo, window),
            );
        }
    }
    out.push_str(&format!(
        "      # Fraction of the {} error budget left: 1 = untouched, 0 = spent, below 0 = overspent.\n      \
         # Defined even with no traffic at all (then nothing was spent).\n",
        period(spec)
    ));
    for slo in &spec.slos {
        record(
            &mut out,
            &slo.budget_record(spec),
            None,
            &format!(
                "1 - ({} or vector(0)) / {}",
                slo.ratio_record(spec, &spec.period),
                number(slo.error_budget())
            ),
        );
    }

    out.push('\n');
    out.push_str(
        "  # Burn rate = error ratio / error budget. Both windows of a pair must exceed the factor: the long window proves\n  \
         # that a significant part of the budget is gone, the short one that it is still going (so the alert clears within\n  \
         # the short window once the failure stops). One rule per severity; the alert's value is the long-window burn rate\n  \
         # of the first pair that matches.\n",
    );
    group(&mut out, &spec.rules.alert_group, None);
    for slo in &spec.slos {
        for tier in &spec.alerts {
            alert(&mut out, spec, slo, tier);
        }
    }
    out
}

fn header(out: &mut String, spec: &Spec) {
    out.push_str(&format!(
        "# GENERATED from {} by `make generate`: do not edit, edit the spec and run it again.\n#\n",
        stack::slo::PATH
    ));
    out.push_str(
        "# SLOs of the app, as recording rules for the SLIs and error budgets, and multiwindow multi-burn-rate alerts\n\
         # (Google SRE workbook, \"Alerting on SLOs\", recommendation 6):\n",
    );
    for slo in &spec.slos {
        out.push_str(&format!(
            "#   {} ({}): {}% good requests, {} error budget {}\n",
            slo.name,
            slo.alert,
            number(slo.objective * 100.0),
            period(spec),
            number(slo.error_budget())
        ));
    }
    out.push_str(&format!(
        "# The requests counted: {}.\n",
        spec.select(&spec.requests.total)
    ));
    out.push_str(
        "#\n\
         # No traffic, no ratio: every ratio divides by `(requests/s > 0)`, so an idle window yields no series rather than\n\
         # NaN, and no alert. An error counter falls back to 0 (`or vector(0)`) because its series only exist once an\n\
         # error has been served. The budget-remaining series always exist: an idle period spent none of the budget.\n",
    );
}

fn group(out: &mut String, name: &str, interval: Option<&Window>) {
    out.push_str(&format!("  - name: {}\n", scalar(name)));
    if let Some(interval) = interval {
        out.push_str(&format!("    interval: {}\n", scalar(interval.as_str())));
    }
    out.push_str("    rules:\n");
}

/// One recording rule; a multi-line expression becomes a literal block.
fn record(out: &mut String, name: &str, comment: Option<&str>, expr: &str) {
    out.push_str(&format!("      - record: {}\n", scalar(name)));
    if let Some(comment) = comment {
        out.push_str(&format!("        # {comment}\n"));
    }
    expression(out, expr);
}

fn expression(out: &mut String, expr: &str) {
    if expr.contains('\n') {
        out.push_str("        expr: |\n");
        for line in expr.lines() {
            out.push_str(&format!("          {line}\n"));
        }
    } else {
        out.push_str(&format!("        expr: {}\n", scalar(expr)));
    }
}

/// The bad-request ratio of `slo` over `window`, absent when the window saw no request.
fn ratio(spec: &Spec, slo: &Slo, window: &Window) -> String {
    let total = format!("sum(rate({}[{window}]))", spec.select(&spec.requests.total));
    match slo.sli() {
        Sli::Errors(errors) => format!(
            "(\n  sum(rate({}[{window}]))\n  or vector(0)\n)\n/\n({total} > 0)",
            spec.select(errors)
        ),
        // total - good can come out slightly negative (two rates, extrapolated separately): clamped at 0.
        Sli::Good(good) => format!(
            "clamp_min(\n  (\n    {total}\n    - sum(rate({}[{window}]))\n  )\n  /\n  ({total} > 0),\n  0\n)",
            spec.select(good)
        ),
    }
}

fn alert(out: &mut String, spec: &Spec, slo: &Slo, tier: &Tier) {
    out.push_str(&format!("      - alert: {}\n", scalar(&slo.alert)));
    let budget = number(slo.error_budget());
    let legs: Vec<String> = tier
        .pairs
        .iter()
        .map(|pair| {
            let burn = |w: &Window| format!("{} / {budget} > {}", slo.ratio_record(spec, w), number(pair.factor));
            format!("(\n  {}\n  and\n  {}\n)", burn(&pair.long), burn(&pair.short))
        })
        .collect();
    expression(out, &legs.join("\nor\n"));
    out.push_str(&format!("        for: {}\n", scalar(tier.for_.as_str())));
    out.push_str("        labels:\n");
    out.push_str(&format!("          severity: {}\n", scalar(&tier.severity)));
    out.push_str(&format!("          service: {}\n", scalar(&spec.service)));
    out.push_str("        annotations:\n");
    let summary = tier
        .summary
        .replace("{service}", &spec.service)
        .replace("{slo}", &slo.name);
    out.push_str(&format!("          summary: {}\n", scalar(&summary)));
    out.push_str("          description: >-\n");
    for line in wrap(&description(spec, slo, tier), 120 - 12) {
        out.push_str(&format!("            {line}\n"));
    }
    // The runbook first, as in every other rule file; then the rest by name.
    let mut extra: Vec<(&String, &String)> = slo.annotations.iter().collect();
    extra.sort_by_key(|(key, _)| (key.as_str() != "runbook_url", key.as_str()));
    for (key, value) in extra {
        out.push_str(&format!("          {key}: {}\n", scalar(value)));
    }
}

/// The period as an adjective: `30-day`, or the window as written when it is not whole days.
fn period(spec: &Spec) -> String {
    if spec.period.seconds().is_multiple_of(86_400) {
        format!("{}-day", spec.period.seconds() / 86_400)
    } else {
        spec.period.to_string()
    }
}

fn description(spec: &Spec, slo: &Slo, tier: &Tier) -> String {
    let period = period(spec);
    let pairs: Vec<String> = tier.pairs.iter().map(pair_text).collect();
    format!(
        "{} spends the {period} error budget of the {}% {} SLO {{{{ printf \"%.1f\" $value }}}}x faster than \
         sustainable (burn rate over the longer window; this alert {} at {}).",
        slo.describes,
        number(slo.objective * 100.0),
        slo.name,
        tier.action,
        pairs.join(", or ")
    )
}

fn pair_text(pair: &Pair) -> String {
    format!("{}x over {} and {}", number(pair.factor), pair.long, pair.short)
}

/// Words joined into lines of at most `width` characters (a longer word gets a line of its own). In a folded
/// scalar, a line break between words reads back as one space.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in words(text) {
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(&word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// The words of `text`, a Go template action (`{{ printf "%.1f" $value }}`) counting as one so that it stays on
/// one line and reads as a unit.
fn words(text: &str) -> Vec<String> {
    let mut words: Vec<String> = Vec::new();
    let mut open = false;
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        match words.last_mut() {
            Some(last) if open => {
                last.push(' ');
                last.push_str(word);
            }
            _ => words.push(word.to_owned()),
        }
        let last = words.last().expect("just pushed");
        open = last.rfind("{{").is_some_and(|start| !last[start..].contains("}}"));
    }
    words
}

/// A decimal as people write it: 0.001 rather than 1 - 0.999's 0.0010000000000000009, 6 rather than 6.0.
pub(crate) fn number(x: f64) -> String {
    let mut s = String::new();
    let _ = write!(s, "{x:.12}");
    let trimmed = s.trim_end_matches('0').trim_end_matches('.');
    trimmed.to_owned()
}

/// A single-line YAML scalar: plain where serde_yaml_ng leaves it plain, quoted where it would not read back as the
/// same string. Prometheus reads YAML 1.1, where `yes`, `on` and the like are booleans: those are quoted too.
fn scalar(s: &str) -> String {
    let emitted = serde_yaml_ng::to_string(s).expect("a string serializes");
    let emitted = emitted.trim_end_matches('\n');
    const YAML11_BOOLS: [&str; 10] = ["y", "n", "yes", "no", "on", "off", "true", "false", "~", "null"];
    if emitted == s && YAML11_BOOLS.contains(&s.to_ascii_lowercase().as_str()) {
        format!("'{s}'")
    } else {
        emitted.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: &str = r#"
service: app
period: 30d
requests:
  selector: 'job="app"'
  total: t
rules:
  short_group: short
  long_group: long
  long_from: 1d
  long_interval: 1m
  alert_group: burn
slos:
  - name: availability
    objective: 0.999
    describes: The rate of errors
    errors: 'e{code="5xx"}'
    record: errors
    alert: AppAvailabilityBudgetBurn
    annotations:
      runbook_url: http://runbooks/AppAvailabilityBudgetBurn.md
alerts:
  - severity: critical
    action: pages
    summary: The {service} is burning its {slo} error budget fast.
    for: 2m
    pairs:
      - { long: 1h, short: 5m, factor: 14.4 }
"#;

    /// Everything after the header: the rules themselves.
    fn rules(spec: &str) -> String {
        let out = render(&Spec::parse(spec).unwrap());
        out[out.find("\ngroups:\n").unwrap() + 1..].to_string()
    }

    #[test]
    fn one_slo_with_one_tier_gives_exactly_these_rules() {
        let expected = r#"groups:
  # Windows under 1d, evaluated every cycle: they decide how fast a page fires and how fast an alert clears.
  - name: short
    rules:
      - record: app:requests:rate5m
        # Requests per second that count towards the SLOs; 0 when idle.
        expr: sum(rate(t{job="app"}[5m]))
      - record: app:errors:ratio_rate5m
        expr: |
          (
            sum(rate(e{job="app", code="5xx"}[5m]))
            or vector(0)
          )
          /
          (sum(rate(t{job="app"}[5m])) > 0)
      - record: app:errors:ratio_rate1h
        expr: |
          (
            sum(rate(e{job="app", code="5xx"}[1h]))
            or vector(0)
          )
          /
          (sum(rate(t{job="app"}[1h])) > 0)

  # Windows from 1d on: rates over days read many samples, so they are evaluated every 1m; neither the pairs
  # that use them nor the 30-day budget need a finer resolution.
  - name: long
    interval: 1m
    rules:
      - record: app:errors:ratio_rate30d
        expr: |
          (
            sum(rate(e{job="app", code="5xx"}[30d]))
            or vector(0)
          )
          /
          (sum(rate(t{job="app"}[30d])) > 0)
      # Fraction of the 30-day error budget left: 1 = untouched, 0 = spent, below 0 = overspent.
      # Defined even with no traffic at all (then nothing was spent).
      - record: app:availability_error_budget:remaining
        expr: 1 - (app:errors:ratio_rate30d or vector(0)) / 0.001

  # Burn rate = error ratio / error budget. Both windows of a pair must exceed the factor: the long window proves
  # that a significant part of the budget is gone, the short one that it is still going (so the alert clears within
  # the short window once the failure stops). One rule per severity; the alert's value is the long-window burn rate
  # of the first pair that matches.
  - name: burn
    rules:
      - alert: AppAvailabilityBudgetBurn
        expr: |
          (
            app:errors:ratio_rate1h / 0.001 > 14.4
            and
            app:errors:ratio_rate5m / 0.001 > 14.4
          )
        for: 2m
        labels:
          severity: critical
          service: app
        annotations:
          summary: The app is burning its availability error budget fast.
          description: >-
            The rate of errors spends the 30-day error budget of the 99.9% availability SLO {{ printf "%.1f" $value }}x
            faster than sustainable (burn rate over the longer window; this alert pages at 14.4x over 1h and 5m).
          runbook_url: http://runbooks/AppAvailabilityBudgetBurn.md
"#;
        assert_eq!(rules(SMALL), expected);
    }

    #[test]
    fn a_good_events_sli_is_total_minus_good_clamped_at_zero() {
        let spec = SMALL.replace(r#"errors: 'e{code="5xx"}'"#, r#"good: 'b{le="0.25"}'"#);
        let out = rules(&spec);
        assert!(out.contains(
            r#"      - record: app:errors:ratio_rate5m
        expr: |
          clamp_min(
            (
              sum(rate(t{job="app"}[5m]))
              - sum(rate(b{job="app", le="0.25"}[5m]))
            )
            /
            (sum(rate(t{job="app"}[5m])) > 0),
            0
          )
"#
        ));
    }

    #[test]
    fn the_output_is_the_same_from_one_run_to_the_next_and_states_its_source() {
        let spec = Spec::parse(SMALL).unwrap();
        let out = render(&spec);
        assert_eq!(out, render(&spec));
        assert!(out.starts_with("# GENERATED from monitoring/slos.yml by `make generate`"));
    }

    #[test]
    fn an_objective_change_moves_the_budget_in_every_rule_and_annotation() {
        let out = rules(&SMALL.replace("objective: 0.999", "objective: 0.995"));
        assert!(out.contains("/ 0.005 > 14.4"));
        assert!(out.contains("/ 0.005\n"));
        assert!(out.contains("the 99.5% availability SLO"));
        assert!(!out.contains("0.001"));
    }

    #[test]
    fn numbers_are_written_as_people_write_them() {
        assert_eq!(number(1.0 - 0.999), "0.001");
        assert_eq!(number(0.999 * 100.0), "99.9");
        assert_eq!(number(6.0), "6");
        assert_eq!(number(14.4), "14.4");
    }

    #[test]
    fn scalars_that_would_not_read_back_as_strings_are_quoted() {
        assert_eq!(scalar("critical"), "critical");
        assert_eq!(scalar("on"), "'on'");
        assert_eq!(scalar("10"), "'10'");
        assert_eq!(scalar("a: b"), "'a: b'");
    }

    #[test]
    fn long_descriptions_wrap_between_words_within_the_width() {
        let lines = wrap("aa bb cc dd", 5);
        assert_eq!(lines, ["aa bb", "cc dd"]);
        assert_eq!(wrap("toolongword x", 5), ["toolongword", "x"]);
        assert_eq!(
            wrap(r#"a {{ printf "%.1f" $value }}x b"#, 8),
            ["a", r#"{{ printf "%.1f" $value }}x"#, "b"]
        );
    }
}

/// Checks of the rest of the repository against the spec.
#[cfg(test)]
mod stack_tests {
    use stack::slo::Window;

    /// A rate over a window reads only the samples Prometheus kept: with its default retention (15 days), the 30-day
    /// SLIs and budgets would silently cover 15 days.
    #[test]
    fn every_prometheus_of_the_stack_keeps_samples_for_the_whole_slo_period() {
        let root = stack::repo_root();
        let period = &stack::slo::spec().period;
        for file in ["native/supervisord.conf", "compose/docker-compose.yml"] {
            let text = std::fs::read_to_string(root.join(file)).unwrap();
            let retention = text
                .split(|c: char| c.is_whitespace())
                .find_map(|word| word.strip_prefix("--storage.tsdb.retention.time="))
                .unwrap_or_else(|| {
                    panic!("{file}: Prometheus runs with the default retention (15d), under the SLO period {period}")
                });
            let retention: Window = retention.parse().unwrap();
            assert!(
                retention >= *period,
                "{file}: Prometheus keeps {retention}, under the SLO period {period}"
            );
        }
    }
}
