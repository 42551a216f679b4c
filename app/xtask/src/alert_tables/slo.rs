//! The SLOs as the rule files carry them. An SLO is an error-budget recording rule
//! (`<prefix>:<slo>_error_budget:remaining`, `1 - (<sli>:ratio_rate<window> or vector(0)) / <budget>`): its name,
//! budget and window. Its burn alerts are the alerting rules whose expression compares that SLI's ratios with a
//! burn rate, `<sli>:ratio_rate<w> / <budget> > <factor>` (or `> <factor> * <budget>`); the windows compared with
//! the same factor side by side are one pair of the multiwindow recipe.
//!
//! Reading PromQL by shape is the price of keeping the rule files the one source; a shape this does not know
//! fails generation naming the rule, rather than producing a table that says less than the rules.

use super::rules::Rule;

const BUDGET_SUFFIX: &str = "_error_budget:remaining";
const RATIO: &str = ":ratio_rate";

/// One SLO and the alerting rules that guard it.
#[derive(Debug, PartialEq)]
pub struct Slo {
    /// `availability`, from the budget rule's name.
    pub name: String,
    /// The budget rule's name (the series of the budget left).
    pub budget_series: String,
    /// The SLI's ratio series without the window (`app:availability_errors:ratio_rate`).
    pub sli: String,
    /// The error budget, a ratio (0.001).
    pub budget: f64,
    /// The SLO's window (`30d`).
    pub window: String,
    /// The latency threshold in seconds when the SLI counts requests slower than a histogram bucket (`le="0.25"`).
    pub latency_threshold: Option<String>,
    pub alerts: Vec<BurnAlert>,
}

/// One burn-rate alerting rule.
#[derive(Debug, PartialEq)]
pub struct BurnAlert {
    pub rule: Rule,
    /// Each pair: the factor and the windows that must all exceed it.
    pub conditions: Vec<(String, Vec<String>)>,
}

/// Every SLO of the rules, in the order of their budget rules.
pub fn slos(rules: &[Rule]) -> Result<Vec<Slo>, String> {
    let mut slos = Vec::new();
    for rule in rules {
        let Some(record) = &rule.record else { continue };
        let Some(head) = record.strip_suffix(BUDGET_SUFFIX) else {
            continue;
        };
        let name = head.rsplit(':').next().unwrap_or(head).to_owned();
        let fail = |what: &str| format!("{}: recording rule {record}: {what}", rule.file);
        let tokens = lex(&rule.expr);
        let (sli, window) = tokens
            .iter()
            .find_map(|t| match t {
                Token::Ident(id) => id.find(RATIO).map(|at| {
                    let end = at + RATIO.len();
                    (id[..end].to_owned(), id[end..].to_owned())
                }),
                _ => None,
            })
            .ok_or_else(|| fail("names no `…:ratio_rate<window>` series"))?;
        let budget = tokens
            .iter()
            .rposition(|t| *t == Token::Op("/".into()))
            .and_then(|i| match tokens.get(i + 1) {
                Some(Token::Number(n)) => n.parse::<f64>().ok(),
                _ => None,
            })
            .ok_or_else(|| fail("does not divide by the error budget (`… / 0.001`)"))?;
        let ratio_series = format!("{sli}{window}");
        let latency_threshold = rules
            .iter()
            .find(|r| r.record.as_deref() == Some(ratio_series.as_str()))
            .and_then(|r| bucket_bound(&r.expr));
        let mut alerts = Vec::new();
        for alert in rules.iter().filter(|r| r.alert.is_some() && r.expr.contains(&sli)) {
            let conditions = burn_conditions(&lex(&alert.expr), &sli);
            if conditions.is_empty() {
                return Err(format!(
                    "{}: alert {}: uses {sli}… but compares no window with a burn rate (`{sli}<w> / <budget> > <factor>`)",
                    alert.file,
                    alert.alert.as_deref().unwrap_or_default()
                ));
            }
            alerts.push(BurnAlert {
                rule: alert.clone(),
                conditions,
            });
        }
        slos.push(Slo {
            name,
            budget_series: record.clone(),
            sli,
            budget,
            window,
            latency_threshold,
            alerts,
        });
    }
    Ok(slos)
}

/// The burn-rate comparisons of an expression, consecutive windows with the same factor grouped.
fn burn_conditions(tokens: &[Token], sli: &str) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        let Token::Ident(id) = token else { continue };
        let Some(window) = id.strip_prefix(sli) else { continue };
        let rest = &tokens[i + 1..];
        let factor = match rest {
            // `<sli><w> / <budget> > <factor>`
            [Token::Op(div), Token::Number(_), Token::Op(gt), Token::Number(f), ..] if div == "/" && is_gt(gt) => {
                Some(f.clone())
            }
            // `<sli><w> > <factor> * <budget>`, the product possibly in parentheses
            [Token::Op(gt), Token::Open, Token::Number(f), Token::Op(mul), Token::Number(_), ..]
            | [Token::Op(gt), Token::Number(f), Token::Op(mul), Token::Number(_), ..]
                if is_gt(gt) && mul == "*" =>
            {
                Some(f.clone())
            }
            _ => None,
        };
        let Some(factor) = factor else { continue };
        match out.last_mut() {
            Some((last, windows)) if *last == factor => windows.push(window.to_owned()),
            _ => out.push((factor, vec![window.to_owned()])),
        }
    }
    out
}

fn is_gt(op: &str) -> bool {
    op == ">" || op == ">="
}

/// The `le` bound an SLI ratio's expression counts requests under, if it reads a histogram bucket.
fn bucket_bound(expr: &str) -> Option<String> {
    let at = expr.find("le=\"")? + 4;
    let len = expr[at..].find('"')?;
    Some(expr[at..at + len].to_owned())
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Number(String),
    Op(String),
    Open,
    Close,
}

/// Just enough of PromQL's lexer for the shapes above: label matchers, ranges and strings are dropped.
fn lex(expr: &str) -> Vec<Token> {
    let chars: Vec<char> = expr.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        if c.is_whitespace() || c == ',' {
            i += 1;
        } else if c == '{' || c == '[' {
            let close = if c == '{' { '}' } else { ']' };
            let mut quoted = false;
            while i < chars.len() && (quoted || chars[i] != close) {
                if chars[i] == '"' && (i == 0 || chars[i - 1] != '\\') {
                    quoted = !quoted;
                }
                i += 1;
            }
            i += 1;
        } else if c == '"' || c == '\'' {
            i += 1;
            while i < chars.len() && chars[i] != c {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c.is_ascii_digit() || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
            tokens.push(Token::Number(chars[start..i].iter().collect()));
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':') {
                i += 1;
            }
            tokens.push(Token::Ident(chars[start..i].iter().collect()));
        } else if c == '(' {
            i += 1;
            tokens.push(Token::Open);
        } else if c == ')' {
            i += 1;
            tokens.push(Token::Close);
        } else {
            i += 1;
            if chars.get(i) == Some(&'=') || (c == '=' && chars.get(i) == Some(&'~')) {
                i += 1;
            }
            tokens.push(Token::Op(chars[start..i].iter().collect()));
        }
    }
    tokens
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::alert_tables::rules::parse;

    pub(crate) const SLO_RULES: &str = r#"
groups:
  - name: slo
    rules:
      - record: app:latency_slow:ratio_rate30d
        expr: 1 - sum(rate(h_bucket{job="app", le="0.25"}[30d])) / sum(rate(h_count[30d]))
      - record: app:latency_error_budget:remaining
        expr: 1 - (app:latency_slow:ratio_rate30d or vector(0)) / 0.01
      - alert: LatencyBurn
        expr: |
          (app:latency_slow:ratio_rate1h / 0.01 > 14.4 and app:latency_slow:ratio_rate5m / 0.01 > 14.4)
          or
          (app:latency_slow:ratio_rate6h > (6 * 0.01) and app:latency_slow:ratio_rate30m > 6 * 0.01)
        for: 2m
        labels: {severity: critical}
"#;

    #[test]
    fn an_slo_is_read_from_its_budget_rule_and_its_burn_alerts() {
        let rules = parse("alerts/slo.yml", SLO_RULES).unwrap().unwrap();
        let slos = slos(&rules).unwrap();
        assert_eq!(slos.len(), 1);
        let slo = &slos[0];
        assert_eq!(
            (slo.name.as_str(), slo.sli.as_str(), slo.budget, slo.window.as_str()),
            ("latency", "app:latency_slow:ratio_rate", 0.01, "30d")
        );
        assert_eq!(slo.latency_threshold.as_deref(), Some("0.25"));
        assert_eq!(slo.alerts.len(), 1);
        assert_eq!(
            slo.alerts[0].conditions,
            [
                ("14.4".to_owned(), vec!["1h".to_owned(), "5m".to_owned()]),
                ("6".to_owned(), vec!["6h".to_owned(), "30m".to_owned()])
            ]
        );
    }

    #[test]
    fn a_burn_alert_of_an_unknown_shape_is_an_error_naming_it() {
        let text = SLO_RULES
            .replace("/ 0.01 > 14.4", "> bool 14.4")
            .replace("> (6 * 0.01)", "> bool 6");
        let text = text.replace("> 6 * 0.01", "> bool 6");
        let rules = parse("alerts/slo.yml", &text).unwrap().unwrap();
        let err = slos(&rules).unwrap_err();
        assert!(err.contains("alerts/slo.yml: alert LatencyBurn"), "{err}");
    }
}
