//! Alertmanager's routing tree (`monitoring/alertmanager/alertmanager.yml`, or the configuration a running
//! Alertmanager reports), and which receivers an alert's labels reach, decided as Alertmanager decides it: a route that matches hands the alert to the first of
//! its child routes that matches (and on past it while that child says `continue`), and keeps it when none does;
//! a route without `receiver` inherits its parent's.
//!
//! Matchers supported: `name="value"` and `name!="value"` (quoted or not) in `matchers`, and the older `match`
//! map. Regular-expression matchers (`=~`, `!~`, `match_re`) are refused with an error rather than guessed.
//!
//! One model for every tool: the generator's alert tables (xtask) and the game day's expected receivers (opsctl).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_yaml_ng::Value;

/// The routing configuration, relative to the repository root.
pub const FILE: &str = "monitoring/alertmanager/alertmanager.yml";

/// Why a configuration could not be read as a routing tree.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("not an Alertmanager configuration: {0}")]
    Yaml(#[from] serde_yaml_ng::Error),
    #[error("the root route has no receiver")]
    NoRootReceiver,
    #[error("{0}: regular-expression matchers are not supported")]
    Regex(String),
    #[error("matcher `{0}` has no operator")]
    NoOperator(String),
}

/// The routing tree and the receivers, in the order the file declares them.
#[derive(Debug, Clone)]
pub struct Routing {
    root: Route,
    /// Every receiver's name and whether it notifies anyone (has an integration such as `webhook_configs`).
    pub receivers: Vec<(String, bool)>,
    /// The root route's `group_wait` and `group_interval` as written (child routes may have their own).
    pub group_wait: Option<String>,
    pub group_interval: Option<String>,
}

#[derive(Debug, Clone)]
struct Route {
    receiver: String,
    matchers: Vec<Matcher>,
    continue_: bool,
    routes: Vec<Route>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Matcher {
    name: String,
    equal: bool,
    value: String,
}

#[derive(Deserialize)]
struct Config {
    route: RawRoute,
    #[serde(default)]
    receivers: Vec<BTreeMap<String, Value>>,
}

#[derive(Deserialize)]
struct RawRoute {
    receiver: Option<String>,
    group_wait: Option<String>,
    group_interval: Option<String>,
    #[serde(default)]
    matchers: Vec<String>,
    #[serde(default, rename = "match")]
    match_: BTreeMap<String, String>,
    #[serde(default)]
    match_re: BTreeMap<String, String>,
    #[serde(default, rename = "continue")]
    continue_: bool,
    #[serde(default)]
    routes: Vec<RawRoute>,
}

impl Routing {
    pub fn parse(text: &str) -> Result<Self, Error> {
        let config: Config = serde_yaml_ng::from_str(text)?;
        let receiver = config.route.receiver.clone().ok_or(Error::NoRootReceiver)?;
        let (group_wait, group_interval) = (config.route.group_wait.clone(), config.route.group_interval.clone());
        let root = Route::build(config.route, &receiver)?;
        let receivers = config
            .receivers
            .iter()
            .map(|r| {
                let name = r.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
                let notifies = r
                    .iter()
                    .any(|(key, v)| key.ends_with("_configs") && v.as_sequence().is_some_and(|s| !s.is_empty()));
                (name, notifies)
            })
            .collect();
        Ok(Routing {
            root,
            receivers,
            group_wait,
            group_interval,
        })
    }

    /// The receivers an alert with these labels is delivered to, in routing order.
    pub fn receivers_of(&self, labels: &BTreeMap<String, String>) -> Vec<String> {
        self.root
            .matching(labels)
            .into_iter()
            .map(|r| r.receiver.clone())
            .collect()
    }

    /// Whether the receiver notifies anyone (an unknown receiver is assumed to).
    pub fn notifies(&self, receiver: &str) -> bool {
        self.receivers
            .iter()
            .find(|(name, _)| name == receiver)
            .is_none_or(|(_, notifies)| *notifies)
    }
}

impl Route {
    fn build(raw: RawRoute, inherited: &str) -> Result<Route, Error> {
        if let Some(name) = raw.match_re.keys().next() {
            return Err(Error::Regex(format!("match_re on `{name}`")));
        }
        let receiver = raw.receiver.unwrap_or_else(|| inherited.to_owned());
        let mut matchers = raw
            .matchers
            .iter()
            .map(|m| Matcher::parse(m))
            .collect::<Result<Vec<_>, _>>()?;
        matchers.extend(raw.match_.into_iter().map(|(name, value)| Matcher {
            name,
            equal: true,
            value,
        }));
        let routes = raw
            .routes
            .into_iter()
            .map(|child| Route::build(child, &receiver))
            .collect::<Result<_, _>>()?;
        Ok(Route {
            receiver,
            matchers,
            continue_: raw.continue_,
            routes,
        })
    }

    /// The routes that take the alert, or none when this route does not match it.
    fn matching(&self, labels: &BTreeMap<String, String>) -> Vec<&Route> {
        if !self.matchers.iter().all(|m| m.matches(labels)) {
            return Vec::new();
        }
        let mut taken = Vec::new();
        for child in &self.routes {
            let matched = child.matching(labels);
            let stop = !matched.is_empty() && !child.continue_;
            taken.extend(matched);
            if stop {
                break;
            }
        }
        if taken.is_empty() {
            taken.push(self);
        }
        taken
    }
}

impl Matcher {
    fn parse(text: &str) -> Result<Matcher, Error> {
        let text = text.trim();
        let name_end = text
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .ok_or_else(|| Error::NoOperator(text.to_owned()))?;
        let (name, rest) = text.split_at(name_end);
        let rest = rest.trim_start();
        let (equal, value) = if rest.starts_with("=~") || rest.starts_with("!~") {
            return Err(Error::Regex(format!("matcher `{text}`")));
        } else if let Some(v) = rest.strip_prefix("!=") {
            (false, v)
        } else if let Some(v) = rest.strip_prefix('=') {
            (true, v)
        } else {
            return Err(Error::NoOperator(text.to_owned()));
        };
        let value = value.trim();
        let value = match value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
            Some(quoted) => quoted.replace("\\\"", "\"").replace("\\\\", "\\"),
            None => value.to_owned(),
        };
        Ok(Matcher {
            name: name.to_owned(),
            equal,
            value,
        })
    }

    /// A label the alert does not have is the empty string, as in Alertmanager.
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let actual = labels.get(&self.name).map_or("", String::as_str);
        (actual == self.value) == self.equal
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
route:
  receiver: default
  routes:
    - matchers: ['alertname="Watchdog"']
      receiver: heartbeat
    - matchers: ['severity="critical"']
      receiver: pager
      routes:
        - matchers: [team=db]
          receiver: db-pager
    - match: {severity: warning}
      receiver: ticket
      continue: true
    - matchers: ['severity != "critical"', 'service="app"']
      receiver: app-log
receivers:
  - name: default
    webhook_configs: [{url: "http://x/"}]
  - name: blackhole
"#;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn a_severity_no_route_matches_falls_to_the_default_receiver() {
        let routing = Routing::parse(CONFIG).unwrap();
        assert_eq!(routing.receivers_of(&labels(&[("severity", "page")])), ["default"]);
        assert_eq!(routing.receivers_of(&labels(&[])), ["default"]);
    }

    #[test]
    fn the_first_matching_route_wins_and_its_children_refine_it() {
        let routing = Routing::parse(CONFIG).unwrap();
        let watchdog = labels(&[("alertname", "Watchdog"), ("severity", "critical")]);
        assert_eq!(routing.receivers_of(&watchdog), ["heartbeat"]);
        assert_eq!(routing.receivers_of(&labels(&[("severity", "critical")])), ["pager"]);
        let db = labels(&[("severity", "critical"), ("team", "db")]);
        assert_eq!(routing.receivers_of(&db), ["db-pager"]);
    }

    #[test]
    fn continue_lets_the_next_matching_route_take_the_alert_too() {
        let routing = Routing::parse(CONFIG).unwrap();
        let warning = labels(&[("severity", "warning"), ("service", "app")]);
        assert_eq!(routing.receivers_of(&warning), ["ticket", "app-log"]);
        assert_eq!(routing.receivers_of(&labels(&[("severity", "warning")])), ["ticket"]);
    }

    #[test]
    fn receivers_without_an_integration_notify_nobody() {
        let routing = Routing::parse(CONFIG).unwrap();
        assert!(routing.notifies("default"));
        assert!(!routing.notifies("blackhole"));
    }

    #[test]
    fn regular_expression_matchers_are_refused() {
        let config = "route:\n  receiver: r\n  routes:\n    - matchers: ['severity=~\"crit.*\"']\n      receiver: p\n";
        let err = Routing::parse(config).unwrap_err();
        assert!(matches!(err, Error::Regex(_)), "{err}");
        assert!(err.to_string().contains("regular-expression"), "{err}");
    }
}
