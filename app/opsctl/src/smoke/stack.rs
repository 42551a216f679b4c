//! The monitoring half of the smoke test: metrics, scrape targets, rules, Alertmanager, the heartbeat at the
//! inbox, and the runbook links.

use std::collections::{BTreeMap, BTreeSet};

use reqwest::StatusCode;

use super::{Check, Failure, Smoke};
use crate::clients::{describe_transport, join, snippet, RuleGroup, Target};

/// The series the app's dashboards and SLO rules are built on.
const APP_HISTOGRAM_BUCKET: &str = "http_server_request_duration_seconds_bucket";

/// Receivers the stack's Alertmanager config must declare.
const RECEIVERS: [&str; 3] = ["pager", "ticket", "heartbeat"];

/// Every replica's admin listener exposes the request-duration histogram.
pub async fn check_app_metrics(smoke: &Smoke<'_>) -> Result<(), Failure> {
    for admin in &smoke.args.admin {
        check_replica_metrics(smoke, admin).await?;
    }
    Ok(())
}

async fn check_replica_metrics(smoke: &Smoke<'_>, admin: &str) -> Result<(), Failure> {
    smoke
        .once(format!("app admin GET {admin}/metrics"), async {
            let url = join(admin, "/metrics");
            let response = smoke
                .admin_auth
                .apply(smoke.client.get(&url))
                .send()
                .await
                .map_err(|e| format!("GET {url}: {}", describe_transport(&e)))?;
            let status = response.status();
            let body = response
                .text()
                .await
                .map_err(|e| format!("GET {url}: {}", describe_transport(&e)))?;
            if status != StatusCode::OK {
                return Err(format!("GET {url}: HTTP {status}: {}", snippet(body.as_bytes())));
            }
            if body.lines().any(|l| l.starts_with(APP_HISTOGRAM_BUCKET)) {
                Ok(())
            } else {
                Err(format!("no {APP_HISTOGRAM_BUCKET} series in the exposition"))
            }
        })
        .await
}

/// Every expected job has targets and every active target is up.
pub async fn check_targets(smoke: &Smoke<'_>) -> Result<(), Failure> {
    let link = format!("prometheus targets up (jobs {})", smoke.args.expect_jobs.join(","));
    smoke
        .wait(link, || async {
            let targets = smoke.prometheus.targets().await.map_err(|e| e.to_string())?;
            let mut by_job: BTreeMap<&str, Vec<_>> = BTreeMap::new();
            for t in &targets {
                by_job.entry(t.job()).or_default().push(t);
            }
            for job in &smoke.args.expect_jobs {
                let Some(job_targets) = by_job.get(job.as_str()) else {
                    let seen: Vec<&str> = by_job.keys().copied().collect();
                    return Err(format!(
                        "job {job} has no target (jobs with targets: {})",
                        seen.join(", ")
                    ));
                };
                if let Some(t) = job_targets.iter().find(|t| t.health != "up") {
                    return Err(target_down(job, t));
                }
            }
            // The issue asks for every target up, not only the expected jobs'.
            match targets.iter().find(|t| t.health != "up") {
                Some(t) => Err(target_down(t.job(), t)),
                None => Ok(()),
            }
        })
        .await
}

fn target_down(job: &str, t: &Target) -> String {
    let why = if t.last_error.is_empty() {
        String::new()
    } else {
        format!(": {}", t.last_error)
    };
    format!(
        "job {job}: target {} is {}{why}",
        t.scrape_url,
        if t.health.is_empty() { "unknown" } else { &t.health }
    )
}

/// Rules are loaded, include alerts, and none fails to evaluate. Returns the groups for the runbook check.
pub async fn check_rules(smoke: &Smoke<'_>) -> Result<Vec<RuleGroup>, Failure> {
    smoke
        .wait("prometheus rules loaded and evaluating without errors", || async {
            let groups = smoke.prometheus.rules().await.map_err(|e| e.to_string())?;
            let rules = || groups.iter().flat_map(|g| g.rules.iter().map(move |r| (g, r)));
            if rules().next().is_none() {
                return Err("no rules loaded (GET /api/v1/rules has no rule)".to_string());
            }
            if !rules().any(|(_, r)| r.is_alert()) {
                return Err("no alerting rule loaded".to_string());
            }
            for (group, rule) in rules() {
                let error = rule.last_error.as_deref().unwrap_or("");
                if !error.is_empty() || rule.health == "err" {
                    return Err(format!(
                        "rule {} (group {}, {}) fails to evaluate: {error}",
                        rule.name, group.name, group.file
                    ));
                }
            }
            Ok(groups)
        })
        .await
}

/// Alertmanager runs with the stack's config: the pager, ticket and heartbeat receivers exist.
pub async fn check_alertmanager_config(smoke: &Smoke<'_>) -> Result<(), Failure> {
    smoke
        .wait(
            "alertmanager config loaded (receivers pager, ticket, heartbeat)",
            || async {
                let status = smoke.alertmanager.status().await.map_err(|e| e.to_string())?;
                if status.config.original.trim().is_empty() {
                    return Err("config.original is empty".to_string());
                }
                let names = status.config.receiver_names();
                let missing: Vec<&str> = RECEIVERS
                    .iter()
                    .copied()
                    .filter(|r| !names.iter().any(|n| n == r))
                    .collect();
                if missing.is_empty() {
                    Ok(())
                } else {
                    Err(format!(
                        "receivers missing from config.original: {} (found: {})",
                        missing.join(", "),
                        names.join(", ")
                    ))
                }
            },
        )
        .await
}

/// With the webhook token configured, the inbox takes it: Alertmanager sends the same file's token, so a refusal
/// here (an inbox still running with a rotated-out token) is why the heartbeat would not arrive. The check posts
/// an empty payload, which the inbox answers 400 once the token has passed: nothing is stored.
pub async fn check_webhook_token(smoke: &Smoke<'_>) -> Result<(), Failure> {
    if !smoke.inbox.has_webhook_token() {
        return Ok(());
    }
    smoke
        .once("inbox accepts the webhook token (webhook.token)", async {
            let (status, body) = smoke
                .inbox
                .post_webhook("heartbeat", "{}")
                .await
                .map_err(|e| e.to_string())?;
            match status {
                StatusCode::BAD_REQUEST => Ok(()),
                StatusCode::UNAUTHORIZED => Err(format!(
                    "the inbox refuses the token in webhook.token (HTTP 401: {body}), so it refuses Alertmanager's \
                     too: restart the inbox after the token changed"
                )),
                other => Err(format!(
                    "expected HTTP 400 (token accepted, empty payload refused), got HTTP {other}: {body}"
                )),
            }
        })
        .await
}

/// The Watchdog heartbeat has reached the inbox recently. When it has not, finds which hop lost it.
pub async fn check_heartbeat(smoke: &Smoke<'_>) -> Result<(), Failure> {
    let waited = smoke
        .wait_for(
            smoke.args.heartbeat_timeout,
            "inbox received the Watchdog heartbeat",
            || async {
                let beat = smoke.inbox.heartbeat().await.map_err(|e| e.to_string())?;
                match (beat.last_received_at, beat.age_seconds) {
                    (Some(_), Some(age)) if age <= beat.max_age_seconds => Ok(()),
                    (Some(at), Some(age)) => Err(format!(
                        "the last heartbeat arrived {age:.0}s ago ({at}), over the {:.0}s limit",
                        beat.max_age_seconds
                    )),
                    _ => Err("no Watchdog heartbeat has arrived yet".to_string()),
                }
            },
        )
        .await;
    match waited {
        Ok(()) => Ok(()),
        Err(failure) => {
            let (link, why) = diagnose_heartbeat(smoke).await;
            Err(Failure {
                link,
                detail: format!("{}; {why}", failure.detail),
            })
        }
    }
}

/// Walks the Watchdog's path (Prometheus rule → Prometheus → Alertmanager → inbox) and names the first hop
/// where it is missing.
async fn diagnose_heartbeat(smoke: &Smoke<'_>) -> (String, String) {
    match smoke.prometheus.alerts().await {
        Ok(alerts)
            if !alerts
                .iter()
                .any(|a| a.labels.get("alertname").is_some_and(|n| n == "Watchdog") && a.state == "firing") =>
        {
            return (
                "prometheus Watchdog alert".into(),
                "the Watchdog alert is not firing in Prometheus".into(),
            );
        }
        Err(e) => {
            return (
                "prometheus Watchdog alert".into(),
                format!("cannot list Prometheus alerts: {e}"),
            )
        }
        Ok(_) => {}
    }
    match smoke.prometheus.alertmanagers().await {
        Ok(ams) if ams.is_empty() => {
            return (
                "prometheus → alertmanager".into(),
                "Prometheus has discovered no Alertmanager to send to".into(),
            );
        }
        Err(e) => {
            return (
                "prometheus → alertmanager".into(),
                format!("cannot list Prometheus's Alertmanagers: {e}"),
            )
        }
        Ok(_) => {}
    }
    match smoke.alertmanager.alerts().await {
        Ok(alerts)
            if !alerts
                .iter()
                .any(|a| a.labels.get("alertname").is_some_and(|n| n == "Watchdog")) =>
        {
            let why = "Watchdog fires in Prometheus but Alertmanager does not hold it";
            ("prometheus → alertmanager".into(), why.into())
        }
        Err(e) => ("alertmanager".into(), format!("cannot list Alertmanager's alerts: {e}")),
        Ok(_) => (
            "alertmanager → inbox (heartbeat receiver)".into(),
            concat!(
                "Alertmanager holds the Watchdog alert but the inbox has not received it: ",
                "check the heartbeat route and its webhook URL"
            )
            .into(),
        ),
    }
}

/// Every alerting rule has a `runbook_url`, and each link answers 200.
pub async fn check_runbooks(smoke: &Smoke<'_>, groups: &[RuleGroup]) -> Result<(), Failure> {
    let mut urls: BTreeMap<String, BTreeSet<String>> = BTreeMap::new(); // url → alerts linking to it
    for rule in groups.iter().flat_map(|g| &g.rules).filter(|r| r.is_alert()) {
        match rule.annotations.get("runbook_url").filter(|u| !u.trim().is_empty()) {
            Some(url) => {
                urls.entry(url.clone()).or_default().insert(rule.name.clone());
            }
            None => {
                return Err(Failure {
                    link: format!("runbook of {}", rule.name),
                    detail: "the alert has no runbook_url annotation".into(),
                });
            }
        }
    }
    for (url, alerts) in &urls {
        let alerts: Vec<&str> = alerts.iter().map(String::as_str).collect();
        let url = &fetch_url(url, &smoke.args.inbox);
        let check: Check = async {
            let response = smoke.client.get(url).send().await.map_err(|e| describe_transport(&e))?;
            let status = response.status();
            let body = response.text().await.map_err(|e| describe_transport(&e))?;
            match status {
                StatusCode::OK if !body.trim().is_empty() => Ok(()),
                StatusCode::OK => Err("the runbook is empty".to_string()),
                _ => Err(format!("HTTP {status}: {}", snippet(body.as_bytes()))),
            }
        }
        .await;
        if let Err(detail) = check {
            return Err(Failure {
                link: format!("runbook of {}", alerts.join(", ")),
                detail: format!("GET {url}: {detail}"),
            });
        }
    }
    let alerts: usize = urls.values().map(BTreeSet::len).sum();
    smoke.pass(
        &format!("runbook_url of {alerts} alerts answers 200 ({} runbooks)", urls.len()),
        None,
    );
    Ok(())
}

/// Where to fetch a runbook link from. The annotation holds the address an on-call engineer's browser uses
/// (`http://localhost:8082/runbooks/…`); the inbox serves those files, so a link into `/runbooks/` is fetched from
/// the inbox under test (`--inbox`), which may listen elsewhere. Any other link is fetched as it is.
fn fetch_url(url: &str, inbox: &str) -> String {
    let path = url
        .split_once("://")
        .and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]))
        .filter(|path| path.starts_with("/runbooks/"));
    match path {
        Some(path) => format!("{}{path}", inbox.trim_end_matches('/')),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::fetch_url;

    #[test]
    fn runbook_links_are_fetched_from_the_inbox_under_test() {
        assert_eq!(
            fetch_url("http://localhost:8082/runbooks/RedisDown.md", "http://127.0.0.1:28082/"),
            "http://127.0.0.1:28082/runbooks/RedisDown.md"
        );
        assert_eq!(
            fetch_url("https://wiki.example.org/ops/RedisDown", "http://127.0.0.1:8082"),
            "https://wiki.example.org/ops/RedisDown"
        );
    }
}
