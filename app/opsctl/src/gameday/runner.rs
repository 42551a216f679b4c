//! Runs one scenario: wait until its alerts are quiet, inject the fault, watch Prometheus and the inbox until
//! every expected alert fires and reaches its receiver, remove the fault, and watch until each is resolved.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::time::sleep;

use super::catalog::{Expect, Inhibited, Scenario};
use super::config::Routing;
use super::faults::Dilution;
use super::proofs::Proof;
use super::stack::{now_ms, Ctx};
use super::verdict::{self, Bounds, Delivery, Note, Observed, Timing};
use crate::clients::{Notification, PrometheusAlert};

/// One row of the inventory.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub scenario: String,
    pub alert: String,
    pub severity: String,
    pub receiver: Option<String>,
    pub for_seconds: u64,
    pub fire_bound_seconds: u64,
    /// From the start of the fault to the alert firing in Prometheus.
    pub fired_seconds: Option<f64>,
    /// From the start of the fault to the notification's arrival at the inbox.
    pub notified_seconds: Option<f64>,
    pub resolve_bound_seconds: u64,
    /// From the fault's removal to the resolved notification (to the alert's end in Prometheus for info alerts).
    pub resolved_seconds: Option<f64>,
    pub passed: bool,
    pub notes: Vec<Note>,
}

/// An inhibition check.
#[derive(Debug, Clone, Serialize)]
pub struct InhibitionRow {
    pub scenario: String,
    pub alert: String,
    pub by: String,
    /// It fired in Prometheus during the scenario.
    pub fired: bool,
    /// Alertmanager listed it as inhibited.
    pub seen_inhibited: bool,
    /// A firing notification of it arrived while `by` fired.
    pub delivered_while_inhibited: bool,
    /// A firing notification arrived after `by` resolved (its own window still held the fault).
    pub delivered_after: bool,
    pub passed: bool,
    /// When the source stopped being active in Prometheus (Unix ms): Alertmanager lifts the inhibition then.
    #[serde(skip)]
    source_ended_ms: Option<u64>,
}

/// What a scenario produced.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    pub name: String,
    pub what: String,
    pub rows: Vec<Row>,
    pub inhibitions: Vec<InhibitionRow>,
    pub proofs: Vec<Proof>,
    pub error: Option<String>,
    pub started_unix_ms: u64,
    pub seconds: f64,
}

impl ScenarioResult {
    pub fn passed(&self) -> bool {
        self.error.is_none()
            && self.rows.iter().all(|r| r.passed)
            && self.inhibitions.iter().all(|i| i.passed)
            && self.proofs.iter().all(|p| p.passed)
    }
}

/// Alerting rules as Prometheus loaded them: (name, severity) → `for` in seconds.
pub type Rules = BTreeMap<(String, String), u64>;

struct Watch {
    expect: Expect,
    row: Row,
    notified_ms: Option<u64>,
    /// The receiver the firing notification went to, when not the expected one.
    wrong_receiver: Option<String>,
}

fn matches(labels: &BTreeMap<String, String>, alert: &str, severity: Option<&str>, extra: &[(&str, &str)]) -> bool {
    labels.get("alertname").map(String::as_str) == Some(alert)
        && severity.is_none_or(|s| labels.get("severity").map(String::as_str) == Some(s))
        && extra
            .iter()
            .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
}

fn active_in(
    alerts: &[PrometheusAlert],
    alert: &str,
    severity: Option<&str>,
    extra: &[(&str, &str)],
) -> Option<String> {
    alerts
        .iter()
        .filter(|a| matches(&a.labels, alert, severity, extra))
        .map(|a| a.state.clone())
        .max_by_key(|s| s == "firing")
}

/// Notifications since `after` about `alert`, oldest first; empty when the inbox does not answer (it may be the
/// fault).
async fn notifications(ctx: &Ctx, alert: &str, after: u64) -> Vec<Notification> {
    let after = after.to_string();
    let mut list = ctx
        .inbox
        .notifications(&[("alertname", alert), ("after", &after), ("limit", "1000")])
        .await
        .unwrap_or_default();
    list.reverse();
    list
}

/// Tells the scenarios waiting on a step of this one that the step is done: `now()` when it is, and in any case
/// when the scenario ends (dropped), so that no waiter hangs on a scenario that failed first. Two per scenario:
/// its fault no longer disturbs others (removed, or over once injected), and its fault is in place (`with`).
struct Release(tokio::sync::watch::Sender<bool>);

impl Release {
    fn now(&self) {
        let _ = self.0.send(true);
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        self.now();
    }
}

pub async fn run(
    ctx: Arc<Ctx>,
    scenario: Scenario,
    rules: &Rules,
    routing: &Routing,
    timing: Timing,
    release: tokio::sync::watch::Sender<bool>,
    in_place: tokio::sync::watch::Sender<bool>,
) -> ScenarioResult {
    let release = Release(release);
    // Tells the scenarios that start `with` this one that its fault is in place (or, on drop, that it never will be).
    let in_place = Release(in_place);
    let started = now_ms();
    let mut result = ScenarioResult {
        name: scenario.name.to_string(),
        what: scenario.what.to_string(),
        rows: vec![],
        inhibitions: vec![],
        proofs: vec![],
        error: None,
        started_unix_ms: started,
        seconds: 0.0,
    };
    let mut watches: Vec<Watch> = Vec::new();
    for e in &scenario.expects {
        let Some(&for_seconds) = rules.get(&(e.alert.to_string(), e.severity.to_string())) else {
            result.error = Some(format!(
                "Prometheus has no rule {} with severity {}",
                e.alert, e.severity
            ));
            return result;
        };
        let receiver = match routing.receiver(e.alert, e.severity, e.labels) {
            Ok(receiver) => receiver,
            Err(err) => {
                result.error = Some(err.to_string());
                return result;
            }
        };
        let notifies = receiver.is_some();
        let Bounds { fire, resolve } = verdict::bounds(timing, for_seconds, e.detect, e.clear, notifies);
        watches.push(Watch {
            expect: e.clone(),
            row: Row {
                scenario: scenario.name.to_string(),
                alert: e.alert.to_string(),
                severity: e.severity.to_string(),
                receiver,
                for_seconds,
                fire_bound_seconds: fire,
                fired_seconds: None,
                notified_seconds: None,
                resolve_bound_seconds: resolve,
                resolved_seconds: None,
                passed: false,
                notes: vec![],
            },
            notified_ms: None,
            wrong_receiver: None,
        });
    }
    let mut inhibitions: Vec<(Inhibited, InhibitionRow)> = scenario
        .inhibited
        .iter()
        .map(|i| {
            (
                i.clone(),
                InhibitionRow {
                    scenario: scenario.name.to_string(),
                    alert: i.alert.to_string(),
                    by: i.by.to_string(),
                    fired: false,
                    seen_inhibited: false,
                    delivered_while_inhibited: false,
                    delivered_after: false,
                    passed: true,
                    source_ended_ms: None,
                },
            )
        })
        .collect();

    // Start from quiet: an alert still active from an earlier fault would be mistaken for this one's.
    let quiet_deadline = now_ms() + 420_000;
    let mut dilution = None;
    loop {
        let alerts = ctx.prometheus.alerts().await.unwrap_or_default();
        let busy: Vec<&str> = scenario
            .expects
            .iter()
            .map(|e| (e.alert, Some(e.severity), e.labels))
            .chain(scenario.inhibited.iter().map(|i| (i.alert, None, i.labels)))
            .filter(|(a, s, l)| active_in(&alerts, a, *s, l).is_some())
            .map(|(a, _, _)| a)
            .collect();
        if busy.is_empty() {
            break;
        }
        if now_ms() > quiet_deadline {
            result.error = Some(format!("{busy:?} still active from an earlier fault after 7 minutes"));
            return result;
        }
        if dilution.is_none() && scenario.fault.dilutes_standing_slo_pages() {
            ctx.say(&format!(
                "{}: {busy:?} still active from earlier faults' requests",
                scenario.name
            ));
            match Dilution::start(&ctx, scenario.name).await {
                Ok(d) => dilution = Some(d),
                Err(e) => {
                    result.error = Some(e.to_string());
                    return result;
                }
            }
        }
        sleep(Duration::from_secs(3)).await;
    }
    if let Some(d) = dilution {
        if let Err(e) = d.stop(&ctx, "before the fault").await {
            result.error = Some(e.to_string());
            return result;
        }
    }

    let since = match ctx.last_notification_id().await {
        Ok(id) => id,
        Err(e) => {
            result.error = Some(format!("inbox: {e}"));
            return result;
        }
    };
    ctx.say(&format!("{}: injecting: {}", scenario.name, scenario.what));
    let t0 = now_ms();
    let secs = |from: u64, to: u64| to.saturating_sub(from) as f64 / 1000.0;
    // Some faults take a while to put in place (the SLO drill ramps up): watch from the start meanwhile.
    let inject = scenario.fault.inject(ctx.clone());
    tokio::pin!(inject);
    let mut injected = None;

    // Fire.
    loop {
        if injected.is_none() {
            let outcome = tokio::select! {
                outcome = &mut inject => Some(outcome),
                _ = sleep(Duration::from_secs(2)) => None,
            };
            match outcome {
                Some(Ok(a)) => {
                    injected = Some(a);
                    in_place.now();
                    let ramp = (now_ms() - t0).div_ceil(1000);
                    for w in watches.iter_mut().filter(|w| w.expect.after_ramp) {
                        w.row.fire_bound_seconds += ramp;
                        w.row.notes.push(Note::RampIncluded(ramp));
                    }
                    if scenario.fault.over_once_injected() {
                        release.now();
                    }
                }
                Some(Err(e)) => {
                    result.error = Some(format!("could not inject the fault: {e}"));
                    return result;
                }
                None => {}
            }
        }
        let alerts = ctx.prometheus.alerts().await.unwrap_or_default();
        for w in watches.iter_mut() {
            let e = &w.expect;
            if w.row.fired_seconds.is_none()
                && active_in(&alerts, e.alert, Some(e.severity), e.labels).as_deref() == Some("firing")
            {
                w.row.fired_seconds = Some(secs(t0, now_ms()));
                ctx.say(&format!("{}: {} fires", scenario.name, e.alert));
            }
            if w.notified_ms.is_none() && w.row.receiver.is_some() {
                for n in notifications(&ctx, e.alert, since).await {
                    let alert_matches = n
                        .webhook
                        .alerts
                        .iter()
                        .any(|a| a.status == "firing" && matches(&a.labels, e.alert, Some(e.severity), e.labels));
                    if alert_matches {
                        if Some(n.receiver.as_str()) != w.row.receiver.as_deref() {
                            w.wrong_receiver = Some(n.receiver.clone());
                        }
                        w.notified_ms = Some(n.received_at_unix_ms);
                        w.row.notified_seconds = Some(secs(t0, n.received_at_unix_ms));
                        ctx.say(&format!("{}: {} reached {}", scenario.name, e.alert, n.receiver));
                        break;
                    }
                }
            }
        }
        check_inhibitions(&ctx, &mut inhibitions, &watches, &alerts, since).await;
        let done = watches.iter().all(|w| {
            verdict::fire_phase_done(
                scenario.clear_on,
                w.row.receiver.is_some(),
                w.row.fired_seconds.is_some(),
                w.notified_ms.is_some(),
            )
        });
        let fire_deadline = verdict::deadline(t0, watches.iter().map(|w| w.row.fire_bound_seconds));
        if injected.is_some() && (done || now_ms() > fire_deadline) {
            break;
        }
        if injected.is_some() {
            sleep(Duration::from_secs(2)).await;
        }
    }
    let mut active = injected.expect("the loop ends only once the fault is in place");

    // Clear, then resolve (and, for faults that stop delivery, the notification that could not arrive before).
    let t_clear = match active.clear().await {
        Ok(at) => at,
        Err(e) => {
            result.error = Some(format!("could not remove the fault: {e}"));
            now_ms()
        }
    };
    release.now();
    ctx.say(&format!("{}: fault removed", scenario.name));
    let resolve_deadline = verdict::deadline(t_clear, watches.iter().map(|w| w.row.resolve_bound_seconds));
    loop {
        let alerts = ctx.prometheus.alerts().await.unwrap_or_default();
        for w in watches.iter_mut() {
            if w.row.resolved_seconds.is_some() || w.row.fired_seconds.is_none() {
                continue;
            }
            let e = &w.expect;
            if w.row.receiver.is_none() {
                if active_in(&alerts, e.alert, Some(e.severity), e.labels).is_none() {
                    w.row.resolved_seconds = Some(secs(t_clear, now_ms()));
                }
                continue;
            }
            for n in notifications(&ctx, e.alert, since).await {
                for a in n
                    .webhook
                    .alerts
                    .iter()
                    .filter(|a| matches(&a.labels, e.alert, Some(e.severity), e.labels))
                {
                    if a.status == "firing" && w.notified_ms.is_none() {
                        if Some(n.receiver.as_str()) != w.row.receiver.as_deref() {
                            w.wrong_receiver = Some(n.receiver.clone());
                        }
                        w.notified_ms = Some(n.received_at_unix_ms);
                        w.row.notified_seconds = Some(secs(t0, n.received_at_unix_ms));
                    }
                    if a.status == "resolved" && w.row.resolved_seconds.is_none() && n.received_at_unix_ms >= t_clear {
                        w.row.resolved_seconds = Some(secs(t_clear, n.received_at_unix_ms));
                        ctx.say(&format!("{}: {} resolved", scenario.name, e.alert));
                    }
                }
            }
        }
        check_inhibitions(&ctx, &mut inhibitions, &watches, &alerts, since).await;
        let done = watches
            .iter()
            .all(|w| w.row.resolved_seconds.is_some() || w.row.fired_seconds.is_none());
        if done || now_ms() > resolve_deadline {
            break;
        }
        sleep(Duration::from_secs(2)).await;
    }
    match active.finish().await {
        Ok(proofs) => result.proofs = proofs,
        Err(e) => result.error = result.error.take().or(Some(e.to_string())),
    }

    let peer_timeout = ctx.args.alertmanager_peer_timeout.as_secs();
    let end = now_ms();
    for w in watches.iter_mut() {
        let notified_unexpectedly = w.row.receiver.is_none() && notified_any(&ctx, &w.expect, since).await;
        let r = &mut w.row;
        if r.receiver.is_some() {
            // A notification waits for every peer out ahead of the first one left (see peer_outages).
            let fire = ctx.peer_outages.out_during(t0, w.notified_ms.unwrap_or(end));
            let resolved_ms = r.resolved_seconds.map(|s| t_clear + (s * 1000.0) as u64);
            let resolve = ctx.peer_outages.out_during(t_clear, resolved_ms.unwrap_or(end));
            r.fire_bound_seconds += u64::from(fire) * peer_timeout;
            r.resolve_bound_seconds += u64::from(resolve) * peer_timeout;
            if let Some(peers) = [fire, resolve].into_iter().max().filter(|&p| p > 0) {
                let seconds = u64::from(peers) * peer_timeout;
                r.notes.push(Note::PeerTimeoutIncluded { peers, seconds });
            }
        }
        let observed = Observed {
            fired: r.fired_seconds,
            notified: r.notified_seconds,
            resolved: r.resolved_seconds,
            wrong_receiver: w.wrong_receiver.clone(),
            notified_unexpectedly,
        };
        let bounds = Bounds {
            fire: r.fire_bound_seconds,
            resolve: r.resolve_bound_seconds,
        };
        let v = verdict::judge(
            &observed,
            bounds,
            scenario.clear_on,
            r.receiver.is_some(),
            timing.group_wait_seconds,
        );
        r.notes.extend(v.notes());
        r.passed = v.passed();
    }
    result.rows = watches.into_iter().map(|w| w.row).collect();
    result.inhibitions = inhibitions.into_iter().map(|(_, row)| row).collect();
    result.seconds = secs(started, now_ms());
    let verdict = if result.passed() { "passed" } else { "FAILED" };
    ctx.say(&format!("{}: {verdict} in {:.0} s", scenario.name, result.seconds));
    result
}

async fn notified_any(ctx: &Ctx, e: &Expect, since: u64) -> bool {
    notifications(ctx, e.alert, since).await.iter().any(|n| {
        n.webhook
            .alerts
            .iter()
            .any(|a| matches(&a.labels, e.alert, Some(e.severity), e.labels))
    })
}

/// Updates the inhibition checks: the target fired, Alertmanager held it as inhibited, and no firing notification
/// of it arrived while its source was active (until the source's resolved notification).
async fn check_inhibitions(
    ctx: &Ctx,
    inhibitions: &mut [(Inhibited, InhibitionRow)],
    watches: &[Watch],
    alerts: &[PrometheusAlert],
    since: u64,
) {
    if inhibitions.is_empty() {
        return;
    }
    let held = ctx.held_alerts().await.unwrap_or_default();
    for (i, row) in inhibitions.iter_mut() {
        if active_in(alerts, i.alert, None, i.labels).as_deref() == Some("firing") {
            row.fired = true;
        }
        if held
            .iter()
            .any(|a| matches(&a.labels, i.alert, None, i.labels) && !a.status.inhibited_by.is_empty())
        {
            row.seen_inhibited = true;
        }
        let source = watches.iter().find(|w| w.expect.alert == i.by);
        if let Some(w) = source {
            let e = &w.expect;
            let active = active_in(alerts, e.alert, Some(e.severity), e.labels).is_some();
            if w.row.fired_seconds.is_some() && !active && row.source_ended_ms.is_none() {
                row.source_ended_ms = Some(now_ms());
            }
        }
        for n in notifications(ctx, i.alert, since).await {
            let delivered = n
                .webhook
                .alerts
                .iter()
                .any(|a| a.status == "firing" && matches(&a.labels, i.alert, None, i.labels));
            if !delivered {
                continue;
            }
            // Before the source ended, a delivery is a failed inhibition (also when the target won the race to
            // Alertmanager against its source). After it, the target's own window may still hold the fault.
            match verdict::delivery(n.received_at_unix_ms, row.source_ended_ms) {
                Delivery::After => row.delivered_after = true,
                Delivery::WhileInhibited => row.delivered_while_inhibited = true,
            }
        }
        row.passed = !row.delivered_while_inhibited;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(state: &str, labels: &[(&str, &str)]) -> PrometheusAlert {
        PrometheusAlert {
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            state: state.to_string(),
        }
    }

    #[test]
    fn an_expected_alert_is_told_apart_by_name_severity_and_labels() {
        let labels = [
            ("alertname", "PrometheusTargetDown"),
            ("severity", "warning"),
            ("job", "process"),
        ];
        let l: BTreeMap<String, String> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        assert!(matches(
            &l,
            "PrometheusTargetDown",
            Some("warning"),
            &[("job", "process")]
        ));
        assert!(matches(&l, "PrometheusTargetDown", None, &[]));
        assert!(!matches(&l, "PrometheusTargetDown", Some("critical"), &[]));
        assert!(!matches(&l, "PrometheusTargetDown", None, &[("job", "app")]));
        assert!(!matches(&l, "AppTargetDown", None, &[]));
    }

    #[test]
    fn a_firing_instance_counts_over_a_pending_one() {
        let alerts = [
            alert("pending", &[("alertname", "A"), ("instance", "1")]),
            alert("firing", &[("alertname", "A"), ("instance", "2")]),
            alert("pending", &[("alertname", "B")]),
        ];
        assert_eq!(active_in(&alerts, "A", None, &[]).as_deref(), Some("firing"));
        assert_eq!(active_in(&alerts, "B", None, &[]).as_deref(), Some("pending"));
        assert_eq!(active_in(&alerts, "C", None, &[]), None);
    }
}
