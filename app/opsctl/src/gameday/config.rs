//! What the game day reads from the running Prometheus's and Alertmanager's loaded configuration, parsed as YAML:
//! the intervals its bounds are made of, and which receiver each expected alert is routed to (so the game day never
//! re-declares Alertmanager's routing).

use std::collections::BTreeMap;

use serde::Deserialize;

use super::error::Error;
use super::verdict::Timing;
use crate::duration::parse_duration;

/// The parts of Prometheus's configuration the bounds use.
#[derive(Debug, Deserialize)]
struct PrometheusConfig {
    #[serde(default)]
    global: PrometheusGlobal,
}

#[derive(Debug, Default, Deserialize)]
struct PrometheusGlobal {
    scrape_interval: Option<String>,
    evaluation_interval: Option<String>,
}

fn seconds(key: &'static str, value: Option<&str>) -> Result<u64, Error> {
    let value = value.ok_or(Error::MissingSetting(key))?;
    parse_duration(value.trim())
        .map(|d| d.as_secs())
        .map_err(|reason| Error::BadSetting {
            key,
            value: value.to_string(),
            reason,
        })
}

/// Scrape and evaluation intervals from Prometheus's global section, group wait and interval from the root route
/// of Alertmanager's (child routes, such as the Watchdog's, have their own).
pub fn timing(prometheus_yaml: &str, alertmanager: &::stack::alertmanager::Routing) -> Result<Timing, Error> {
    let prometheus: PrometheusConfig = serde_yaml_ng::from_str(prometheus_yaml).map_err(Error::PrometheusConfig)?;
    let root = alertmanager;
    Ok(Timing {
        scrape_seconds: seconds("scrape_interval", prometheus.global.scrape_interval.as_deref())?,
        evaluation_seconds: seconds("evaluation_interval", prometheus.global.evaluation_interval.as_deref())?,
        group_wait_seconds: seconds("group_wait", root.group_wait.as_deref())?,
        group_interval_seconds: seconds("group_interval", root.group_interval.as_deref())?,
    })
}

/// Alertmanager's routing, as loaded.
#[derive(Debug, Clone)]
pub struct Routing(pub ::stack::alertmanager::Routing);

impl Routing {
    /// The receiver Alertmanager notifies of `alert` with `severity` and `labels`; `None` when it is routed to a
    /// receiver that sends nothing (info alerts' blackhole).
    pub fn receiver(&self, alert: &str, severity: &str, labels: &[(&str, &str)]) -> Result<Option<String>, Error> {
        let mut all: BTreeMap<String, String> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        all.insert("alertname".to_string(), alert.to_string());
        all.insert("severity".to_string(), severity.to_string());
        // The first receiver the routing tree hands the alert to (the shipped routes use no `continue`).
        let receivers = self.0.receivers_of(&all);
        let receiver = receivers.first().ok_or_else(|| Error::NoReceiver(alert.to_string()))?;
        Ok(self.0.notifies(receiver).then(|| receiver.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clients::AlertmanagerConfig;

    /// The repository's Alertmanager configuration, as the native stack and compose load it.
    fn shipped() -> ::stack::alertmanager::Routing {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../monitoring/alertmanager/alertmanager.yml"
        );
        let original = std::fs::read_to_string(path).unwrap();
        AlertmanagerConfig { original }.parse().unwrap()
    }

    #[test]
    fn the_shipped_routing_sends_each_severity_to_its_receiver() {
        let routing = Routing(shipped());
        let to = |alert: &str, severity: &str| routing.receiver(alert, severity, &[]).unwrap();
        assert_eq!(to("PostgresDown", "critical").as_deref(), Some("pager"));
        assert_eq!(to("AppCacheErrors", "warning").as_deref(), Some("ticket"));
        assert_eq!(to("Watchdog", "none").as_deref(), Some("heartbeat"));
        assert_eq!(to("AppFaultInjectionActive", "info"), None);
    }

    #[test]
    fn every_expected_alert_of_the_catalog_is_routed_and_only_info_alerts_notify_nobody() {
        let routing = Routing(shipped());
        for scenario in crate::gameday::catalog::scenarios() {
            for e in &scenario.expects {
                let receiver = routing.receiver(e.alert, e.severity, e.labels).unwrap();
                assert_eq!(
                    receiver.is_none(),
                    e.severity == "info",
                    "{}: {} ({}) goes to {receiver:?}",
                    scenario.name,
                    e.alert,
                    e.severity
                );
            }
        }
    }

    #[test]
    fn intervals_come_from_the_global_section_and_the_root_route() {
        let prometheus = "global:\n  scrape_interval: 5s\n  scrape_timeout: 4s\n  evaluation_interval: 15s\n\
                          scrape_configs:\n  - job_name: x\n    scrape_interval: 1m\n";
        let t = timing(prometheus, &shipped()).unwrap();
        assert_eq!(
            t,
            Timing {
                scrape_seconds: 5,
                evaluation_seconds: 15,
                group_wait_seconds: 10,
                group_interval_seconds: 30,
            }
        );
        let missing = timing("global:\n  scrape_interval: 5s\n", &shipped()).unwrap_err();
        assert!(
            matches!(missing, Error::MissingSetting("evaluation_interval")),
            "{missing}"
        );
        let bad = timing("global:\n  scrape_interval: soon\n", &shipped()).unwrap_err();
        assert!(
            matches!(
                bad,
                Error::BadSetting {
                    key: "scrape_interval",
                    ..
                }
            ),
            "{bad}"
        );
    }
}
