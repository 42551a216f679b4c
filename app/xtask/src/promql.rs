//! The one place PromQL is parsed (with `promql-parser`): what a rule, a dashboard query or a runbook block
//! selects. Every check that needs to know which metrics an expression reads, or what range a rate takes, asks
//! [`analyze`]; none of them looks at the text.

use std::collections::BTreeSet;
use std::time::Duration;

use promql_parser::label::{MatchOp, Matchers, METRIC_NAME};
use promql_parser::parser::{self, Expr};
pub use promql_parser::util::parse_duration;
use promql_parser::util::{walk_expr, ExprVisitor};

/// Functions whose range argument must follow Grafana's `$__rate_interval` in a dashboard: a fixed range is
/// either too short for the scrape interval (no data) or too long for the zoom (smoothed away).
pub const RATE_FUNCTIONS: &[&str] = &["rate", "irate", "increase"];

/// What one expression selects.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Analysis {
    /// Metric names read: the selector's name, or its `__name__="…"` matcher.
    pub metrics: BTreeSet<String>,
    /// Label matchers of every selector with an equality operator, as (label, value): what a selector pins.
    pub equal_matchers: BTreeSet<(String, String)>,
    /// Each call of a [`RATE_FUNCTIONS`] function, with the range its argument selects (a range selector's or a
    /// subquery's), or `None` when the argument is neither.
    pub rate_calls: Vec<RateCall>,
}

/// One call of `rate`, `irate` or `increase`.
#[derive(Debug, Clone, PartialEq)]
pub struct RateCall {
    pub function: &'static str,
    pub range: Option<Duration>,
}

/// Parses `expr` and lists what it selects; the error is the parser's message.
pub fn analyze(expr: &str) -> Result<Analysis, String> {
    let ast = parser::parse(expr)?;
    let mut visitor = Collector::default();
    let Ok(_) = walk_expr(&mut visitor, &ast);
    Ok(visitor.0)
}

#[derive(Default)]
struct Collector(Analysis);

impl Collector {
    fn selector(&mut self, name: Option<&String>, matchers: &Matchers) {
        let all = matchers.matchers.iter().chain(matchers.or_matchers.iter().flatten());
        for m in all {
            if matches!(m.op, MatchOp::Equal) {
                if m.name == METRIC_NAME {
                    self.0.metrics.insert(m.value.clone());
                } else {
                    self.0.equal_matchers.insert((m.name.clone(), m.value.clone()));
                }
            }
        }
        if let Some(name) = name {
            self.0.metrics.insert(name.clone());
        }
    }
}

impl ExprVisitor for Collector {
    type Error = std::convert::Infallible;

    fn pre_visit(&mut self, expr: &Expr) -> Result<bool, Self::Error> {
        match expr {
            Expr::VectorSelector(vs) => self.selector(vs.name.as_ref(), &vs.matchers),
            Expr::MatrixSelector(ms) => self.selector(ms.vs.name.as_ref(), &ms.vs.matchers),
            Expr::Call(call) if RATE_FUNCTIONS.contains(&call.func.name) => {
                let range = match call.args.args.first().map(|a| a.as_ref()) {
                    Some(Expr::MatrixSelector(ms)) => Some(ms.range),
                    Some(Expr::Subquery(sq)) => Some(sq.range),
                    _ => None,
                };
                let function = RATE_FUNCTIONS
                    .iter()
                    .find(|f| **f == call.func.name)
                    .copied()
                    .unwrap_or("rate");
                self.0.rate_calls.push(RateCall { function, range });
            }
            _ => {}
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(expr: &str) -> Vec<String> {
        analyze(expr).unwrap().metrics.into_iter().collect()
    }

    #[test]
    fn metric_names_are_the_selectors_not_functions_labels_or_keywords() {
        assert_eq!(
            names(
                r#"sum by (job) (rate(http_server_request_duration_seconds_count{job="app", code=~"5.."}[5m]))
                   / on (job) group_left max(up offset 1m) or vector(0) and absent(app_build_info)"#
            ),
            ["app_build_info", "http_server_request_duration_seconds_count", "up"]
        );
        assert_eq!(names(r#"{__name__="ALERTS", alertstate="firing"}"#), ["ALERTS"]);
        assert_eq!(names(r#"label_replace(pg_up, "x", "$1", "job", "(.*)")"#), ["pg_up"]);
    }

    #[test]
    fn equality_matchers_are_listed() {
        let a = analyze(r#"up{job="redis", instance!="x"} * on() pg_up{job=~"p.*"}"#).unwrap();
        assert_eq!(
            a.equal_matchers.into_iter().collect::<Vec<_>>(),
            [("job".to_owned(), "redis".to_owned())]
        );
    }

    #[test]
    fn rate_calls_carry_the_range_of_their_argument() {
        // A rate of an instant vector is a type error, for the parser as for Prometheus.
        assert!(analyze("rate(d)").is_err());
        let a = analyze("rate(a[5m]) + increase(b[1h:1m]) + irate(c[30s] offset 1m)").unwrap();
        let got: Vec<_> = a
            .rate_calls
            .iter()
            .map(|c| (c.function, c.range.map(|d| d.as_secs())))
            .collect();
        assert_eq!(
            got,
            [("rate", Some(300)), ("increase", Some(3600)), ("irate", Some(30))]
        );
    }

    #[test]
    fn a_syntax_error_is_an_error() {
        assert!(analyze("sum(rate(x[5m])").is_err());
        assert!(analyze("x +").is_err());
    }
}
