//! The app's SLOs (monitoring/slos.yml): objectives, SLI selectors, windows and burn-rate alert tiers. The generator
//! writes alerts/slo.yml from them; the game day reads its budgets and thresholds here, so neither repeats a number.

use std::fmt;
use std::str::FromStr;
use std::sync::LazyLock;

use serde::Deserialize;

/// The spec as this build embedded it.
pub const SOURCE: &str = include_str!("../../../monitoring/slos.yml");
/// Where the spec lives in the repository, for messages and the generator.
pub const PATH: &str = "monitoring/slos.yml";

static SPEC: LazyLock<Spec> = LazyLock::new(|| Spec::parse(SOURCE).unwrap_or_else(|e| panic!("{PATH}: {e}")));

/// The embedded spec. It is validated by this crate's tests, so a build whose spec is invalid fails them.
pub fn spec() -> &'static Spec {
    &SPEC
}

/// A spec that cannot be used, with the field at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Yaml(#[from] serde_yaml_ng::Error),
    #[error("{0}")]
    Invalid(String),
}

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// The `service` label of every alert and the prefix of every recording rule.
    pub service: String,
    /// The window the error budgets are counted over.
    pub period: Window,
    pub requests: Requests,
    pub rules: RuleGroups,
    pub slos: Vec<Slo>,
    /// The burn-rate alert tiers every SLO gets, most urgent first.
    pub alerts: Vec<Tier>,
}

/// The requests every SLO counts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Requests {
    /// Label matchers added to every SLI metric, e.g. `job="app", http_route!~"/healthcheck|/status"`.
    pub selector: String,
    /// The counter of all requests.
    pub total: String,
}

/// The rule groups of alerts/slo.yml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleGroups {
    pub short_group: String,
    pub long_group: String,
    /// SLI windows this long or longer go to the long group.
    pub long_from: Window,
    /// The long group's evaluation interval.
    pub long_interval: Window,
    pub alert_group: String,
}

/// One SLO.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Slo {
    pub name: String,
    /// The share of good requests over the period, in (0, 1).
    pub objective: f64,
    /// The start of the alert's description: what is being spent.
    pub describes: String,
    /// A counter of bad requests (with matchers of its own, the requests' selector is added).
    #[serde(default)]
    pub errors: Option<String>,
    /// A counter of good requests, when the SLI counts those (a histogram bucket).
    #[serde(default)]
    pub good: Option<String>,
    /// The middle of the recording rules' names: `<service>:<record>:ratio_rate<window>`.
    pub record: String,
    pub alert: String,
    /// Added to every alert of this SLO (runbook_url, dashboard_url).
    #[serde(default)]
    pub annotations: std::collections::BTreeMap<String, String>,
}

/// How an SLO's bad-request ratio is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sli<'a> {
    /// errors / total.
    Errors(&'a str),
    /// (total - good) / total.
    Good(&'a str),
}

/// One alert severity and the window pairs that trigger it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    pub severity: String,
    /// What the alert does, for its description ("pages", "opens a ticket").
    pub action: String,
    /// The summary annotation; `{service}` and `{slo}` are replaced.
    pub summary: String,
    #[serde(rename = "for")]
    pub for_: Window,
    pub pairs: Vec<Pair>,
}

/// Two windows whose burn rates must both exceed `factor`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pair {
    pub long: Window,
    pub short: Window,
    /// Burn rate: how many times faster than sustainable over the period the budget is spent.
    pub factor: f64,
}

/// A Prometheus duration of one unit (`5m`, `1h`, `30d`), kept as written for the rule names.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Window {
    text: String,
    seconds: u64,
}

impl Window {
    pub fn seconds(&self) -> u64 {
        self.seconds
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn duration(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.seconds)
    }
}

impl FromStr for Window {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (number, unit) = s.split_at(split);
        let unit_seconds = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            "w" => 604_800,
            _ => {
                return Err(format!(
                    "`{s}`: expected a number and one unit of s, m, h, d, w (like 5m or 30d)"
                ))
            }
        };
        let n: u64 = number
            .parse()
            .map_err(|_| format!("`{s}`: expected a number and one unit of s, m, h, d, w (like 5m or 30d)"))?;
        if n == 0 {
            return Err(format!("`{s}`: a window must be longer than 0"));
        }
        Ok(Window {
            text: s.to_owned(),
            seconds: n * unit_seconds,
        })
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl PartialOrd for Window {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Window {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.seconds
            .cmp(&other.seconds)
            .then_with(|| self.text.cmp(&other.text))
    }
}

impl TryFrom<String> for Window {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl Spec {
    /// Parses and validates a spec.
    pub fn parse(text: &str) -> Result<Spec, Error> {
        let spec: Spec = serde_yaml_ng::from_str(text)?;
        spec.validate().map_err(Error::Invalid)?;
        Ok(spec)
    }

    /// The SLO called `name`.
    pub fn slo(&self, name: &str) -> Option<&Slo> {
        self.slos.iter().find(|s| s.name == name)
    }

    /// The alert tier of `severity`.
    pub fn tier(&self, severity: &str) -> Option<&Tier> {
        self.alerts.iter().find(|t| t.severity == severity)
    }

    /// Every SLI window recorded, shortest first: each pair's two windows and the period.
    pub fn windows(&self) -> Vec<&Window> {
        let mut windows: Vec<&Window> = self
            .alerts
            .iter()
            .flat_map(|t| t.pairs.iter().flat_map(|p| [&p.long, &p.short]))
            .chain([&self.period])
            .collect();
        windows.sort();
        windows.dedup_by(|a, b| a.seconds == b.seconds);
        windows
    }

    /// The recording rule of the request rate over the shortest window (requests/s).
    pub fn requests_record(&self) -> String {
        format!("{}:requests:rate{}", self.service, self.windows()[0])
    }

    /// The counter of every request the SLOs count, with the selector: `metric{job="app", ...}`.
    pub fn total(&self) -> String {
        self.select(&self.requests.total)
    }

    /// `metric{matchers}` with the requests' selector put first among the matchers.
    pub fn select(&self, metric: &str) -> String {
        let selector = &self.requests.selector;
        match metric.split_once('{') {
            Some((name, rest)) => {
                let own = rest.trim_end().trim_end_matches('}').trim();
                if own.is_empty() {
                    format!("{name}{{{selector}}}")
                } else {
                    format!("{name}{{{selector}, {own}}}")
                }
            }
            None => format!("{metric}{{{selector}}}"),
        }
    }

    fn validate(&self) -> Result<(), String> {
        let name_ok = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !name_ok(&self.service) {
            return Err(format!("service `{}`: expected letters, digits and _", self.service));
        }
        if self.requests.selector.trim().is_empty() || self.requests.selector.contains(['{', '}']) {
            return Err("requests.selector: expected label matchers without braces".into());
        }
        if self.slos.is_empty() {
            return Err("slos: expected at least one SLO".into());
        }
        if self.alerts.is_empty() {
            return Err("alerts: expected at least one tier".into());
        }
        for (i, slo) in self.slos.iter().enumerate() {
            let at = format!("slos[{i}] ({})", slo.name);
            if !name_ok(&slo.name) || !name_ok(&slo.record) {
                return Err(format!("{at}: name and record: expected letters, digits and _"));
            }
            if self.slos[..i]
                .iter()
                .any(|s| s.name == slo.name || s.record == slo.record)
            {
                return Err(format!("{at}: name or record used twice"));
            }
            if !(slo.objective > 0.0 && slo.objective < 1.0) {
                return Err(format!(
                    "{at}: objective {}: expected a share in (0, 1), like 0.999",
                    slo.objective
                ));
            }
            // The rules write the budget with 12 decimals.
            if slo.error_budget() < 1e-9 {
                return Err(format!(
                    "{at}: objective {}: leaves no error budget to alert on",
                    slo.objective
                ));
            }
            if let Some(key) = slo.annotations.keys().find(|k| !name_ok(k)) {
                return Err(format!("{at}: annotation `{key}`: expected letters, digits and _"));
            }
            if slo.errors.is_some() == slo.good.is_some() {
                return Err(format!("{at}: expected exactly one of `errors` and `good`"));
            }
            if slo.alert.is_empty() {
                return Err(format!("{at}: alert: expected a name"));
            }
            for tier in &self.alerts {
                for pair in &tier.pairs {
                    let threshold = slo.threshold(pair);
                    if threshold >= 1.0 {
                        return Err(format!(
                            "{at}: the {} pair {}/{} at {}x needs an error ratio of {threshold}, which no service can \
                             exceed",
                            tier.severity, pair.long, pair.short, pair.factor
                        ));
                    }
                }
            }
        }
        // Rule names carry the window as written: `60m` and `1h` would name two rules of which one is recorded.
        let all: Vec<&Window> = self
            .alerts
            .iter()
            .flat_map(|t| t.pairs.iter().flat_map(|p| [&p.long, &p.short]))
            .chain([&self.period])
            .collect();
        for (a, b) in all.iter().flat_map(|a| all.iter().map(move |b| (a, b))) {
            if a.seconds == b.seconds && a.text != b.text {
                return Err(format!("windows `{a}` and `{b}` are the same length: write it one way"));
            }
        }
        for (i, tier) in self.alerts.iter().enumerate() {
            let at = format!("alerts[{i}] ({})", tier.severity);
            if tier.severity.is_empty() || self.alerts[..i].iter().any(|t| t.severity == tier.severity) {
                return Err(format!("{at}: expected a severity of its own"));
            }
            if tier.pairs.is_empty() {
                return Err(format!("{at}: expected at least one pair of windows"));
            }
            for pair in &tier.pairs {
                let which = format!("{at}: pair {}/{}", pair.long, pair.short);
                if !(pair.factor.is_finite() && pair.factor > 0.0) {
                    return Err(format!("{which}: factor {}: expected more than 0", pair.factor));
                }
                if pair.short >= pair.long {
                    return Err(format!("{which}: the short window must be shorter than the long one"));
                }
                if pair.long > self.period {
                    return Err(format!(
                        "{which}: the long window is longer than the period {}",
                        self.period
                    ));
                }
            }
        }
        Ok(())
    }
}

impl Slo {
    /// The share of requests allowed to be bad over the period: 1 - objective.
    pub fn error_budget(&self) -> f64 {
        1.0 - self.objective
    }

    /// The error ratio at which `pair` matches: factor × error budget.
    pub fn threshold(&self, pair: &Pair) -> f64 {
        pair.factor * self.error_budget()
    }

    /// The SLI's kind and its bad or good counter (as written, without the requests' selector).
    pub fn sli(&self) -> Sli<'_> {
        match (&self.errors, &self.good) {
            (Some(errors), _) => Sli::Errors(errors),
            (None, Some(good)) => Sli::Good(good),
            (None, None) => unreachable!("validated: one of errors and good"),
        }
    }

    /// The SLI's counter (bad requests for `errors`, good ones for `good`) with the requests' selector.
    pub fn counter(&self, spec: &Spec) -> String {
        match self.sli() {
            Sli::Errors(metric) | Sli::Good(metric) => spec.select(metric),
        }
    }

    /// The recording rule of the bad-request ratio over `window`, e.g. `app:latency_slow:ratio_rate1h`.
    pub fn ratio_record(&self, spec: &Spec, window: &Window) -> String {
        format!("{}:{}:ratio_rate{window}", spec.service, self.record)
    }

    /// The recording rule of the share of the budget left, e.g. `app:latency_error_budget:remaining`.
    pub fn budget_record(&self, spec: &Spec) -> String {
        format!("{}:{}_error_budget:remaining", spec.service, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_spec_is_valid() {
        let spec = spec();
        assert!(!spec.slos.is_empty());
        assert!(spec.tier("critical").is_some());
    }

    #[test]
    fn the_budget_is_one_minus_the_objective_and_the_threshold_factor_times_it() {
        let spec = Spec::parse(SMALL).unwrap();
        let slo = spec.slo("availability").unwrap();
        assert!((slo.error_budget() - 0.001).abs() < 1e-12);
        let page = &spec.tier("critical").unwrap().pairs[0];
        assert!((slo.threshold(page) - 0.0144).abs() < 1e-12);
        assert_eq!(
            slo.ratio_record(&spec, &page.long),
            "app:availability_errors:ratio_rate1h"
        );
        assert_eq!(slo.budget_record(&spec), "app:availability_error_budget:remaining");
        assert_eq!(spec.requests_record(), "app:requests:rate5m");
    }

    #[test]
    fn windows_are_every_pairs_and_the_period_shortest_first_once_each() {
        let spec = Spec::parse(SMALL).unwrap();
        let windows: Vec<&str> = spec.windows().iter().map(|w| w.as_str()).collect();
        assert_eq!(windows, ["5m", "1h", "30d"]);
    }

    #[test]
    fn the_requests_selector_goes_first_in_each_metric() {
        let spec = Spec::parse(SMALL).unwrap();
        assert_eq!(spec.select("m"), r#"m{job="app"}"#);
        assert_eq!(spec.select(r#"m{le="0.25"}"#), r#"m{job="app", le="0.25"}"#);
        assert_eq!(spec.total(), r#"t{job="app"}"#);
        assert_eq!(
            spec.slo("availability").unwrap().counter(&spec),
            r#"e{job="app", code="5xx"}"#
        );
    }

    #[test]
    fn windows_parse_one_unit_and_reject_the_rest() {
        assert_eq!("5m".parse::<Window>().unwrap().seconds(), 300);
        assert_eq!("30d".parse::<Window>().unwrap().seconds(), 30 * 86_400);
        for bad in ["", "5", "m", "0m", "1h30m", "5 m", "-1h", "2y"] {
            assert!(bad.parse::<Window>().is_err(), "{bad:?} parsed");
        }
    }

    fn invalid(from: &str, to: &str) -> String {
        assert!(SMALL.contains(from), "{from:?} is not in the small spec");
        match Spec::parse(&SMALL.replacen(from, to, 1)) {
            Ok(_) => panic!("{from:?} -> {to:?} was accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn an_objective_outside_zero_and_one_is_refused() {
        for bad in ["1", "0", "99.9", "-0.5", "0.9999999999"] {
            assert!(invalid("objective: 0.999", &format!("objective: {bad}")).contains("objective"));
        }
    }

    #[test]
    fn a_bad_window_or_tier_is_refused_naming_it() {
        assert!(invalid("long: 1h", "long: 1 hour").contains("1 hour"));
        assert!(invalid("short: 5m", "short: 2h").contains("shorter"));
        assert!(invalid("long: 1h", "long: 60d").contains("period"));
        let twice = "factor: 14.4 }\n      - { long: 60m, short: 5m, factor: 6 }";
        assert!(invalid("factor: 14.4 }", twice).contains("one way"));
        assert!(invalid("factor: 14.4", "factor: 0").contains("factor"));
        // 2000x a 0.001 budget is an error ratio of 2: the alert could never fire.
        assert!(invalid("factor: 14.4", "factor: 2000").contains("no service"));
        assert!(invalid("pairs:\n      - { long: 1h, short: 5m, factor: 14.4 }", "pairs: []").contains("pair"));
    }

    #[test]
    fn an_sli_needs_exactly_one_of_errors_and_good() {
        assert!(invalid("    errors: 'e{code=\"5xx\"}'\n", "").contains("exactly one"));
        assert!(invalid("    errors: 'e{code=\"5xx\"}'\n", "    errors: e\n    good: g\n").contains("exactly one"));
    }

    #[test]
    fn an_annotation_name_prometheus_would_not_take_is_refused() {
        assert!(invalid("      runbook_url:", "      runbook url:").contains("runbook url"));
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(invalid("service: app", "service: app\nservise: app").contains("servise"));
    }

    pub(crate) const SMALL: &str = r#"
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
    record: availability_errors
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
}
