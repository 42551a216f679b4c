//! Faults of the replicated tiers: an app replica killed, every replica restarted in turn, an Alertmanager peer or
//! Prometheus replica stopped, an Alertmanager peer cut off from the others. The app faults run steady traffic
//! through HAProxy and prove no request failed; the monitoring faults hold until a page of a concurrent scenario
//! has come through the reduced pipeline and count how often each arrived.

use std::time::Duration;

use tokio::time::sleep;

use super::{nft, Handle, Phase};
use crate::gameday::duplicates;
use crate::gameday::error::Error;
use crate::gameday::peer_outages::alertmanager_peers;
use crate::gameday::proofs::{Proof, Traffic};
use crate::gameday::stack::{now_ms, Ctx};

/// SIGKILL to one replica under traffic, kept down (a host lost) until cleared, then started again.
pub(super) async fn kill(h: &mut Handle, replica: &'static str) -> Result<Vec<Proof>, Error> {
    let ctx = h.ctx.clone();
    let traffic = Traffic::start(&ctx, "replica-down");
    sleep(Duration::from_secs(2)).await;
    // The supervisor restarts a process that dies; stopping it at once keeps the host down, as a lost machine is.
    ctx.supervisor("signal KILL", replica).await?;
    ctx.supervisor("stop", replica).await?;
    h.ready();
    h.until(Phase::Clear).await;
    ctx.supervisor("start", replica).await?;
    ctx.wait_replica_in_rotation(replica_host(replica), Duration::from_secs(30))
        .await?;
    sleep(Duration::from_secs(2)).await;
    let proof = traffic
        .prove(format!(
            "replica {replica} killed (SIGKILL) and kept down under load, then started: no request fails, no \
             acknowledged write is lost"
        ))
        .await?;
    Ok(vec![proof])
}

/// Restarts every replica in turn under traffic (SIGTERM: each drains its requests), each one back in HAProxy's
/// rotation before the next; over once injected. Proves no request failed and no page (nor any app alert) came.
pub(super) async fn rolling_restart(h: &mut Handle) -> Result<Vec<Proof>, Error> {
    let ctx = h.ctx.clone();
    let since = ctx.last_notification_id().await?;
    let traffic = Traffic::start(&ctx, "rolling-restart");
    sleep(Duration::from_secs(2)).await;
    let replicas = ctx.replica_names();
    for replica in &replicas {
        ctx.supervisor("restart", replica).await?;
        ctx.wait_replica_in_rotation(replica_host(replica), Duration::from_secs(30))
            .await?;
    }
    sleep(Duration::from_secs(2)).await;
    let traffic = traffic
        .prove(format!(
            "rolling restart of every replica ({}) under load: no request fails, no acknowledged write is lost",
            replicas.join(", ")
        ))
        .await?;
    h.ready();
    h.until(Phase::Clear).await;
    // Whatever the restarts set off would have fired by now: AppInstanceDown's `for` is a minute, HAProxy's
    // checks mark a server down within two seconds.
    sleep(Duration::from_secs(70)).await;
    let after = since.to_string();
    let notified: Vec<String> = ctx
        .inbox
        .notifications(&[("after", &after), ("limit", "1000")])
        .await?
        .into_iter()
        // Only what the restarts could set off: scenarios beside this one may page about their own faults.
        .filter(|n| n.status == "firing" && (n.alertname.starts_with("App") || n.alertname.starts_with("HAProxy")))
        .map(|n| format!("{} to {}", n.alertname, n.receiver))
        .collect();
    let quiet = Proof {
        claim: "a rolling restart raises no app or HAProxy alert: no page, no ticket".to_string(),
        passed: notified.is_empty(),
        figures: if notified.is_empty() {
            "no app or HAProxy notification in the 70 s after the last restart".to_string()
        } else {
            format!("notified: {}", notified.join(", "))
        },
    };
    Ok(vec![traffic, quiet])
}

/// How a reduced monitoring tier is expected to deliver what pages meanwhile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Every page exactly once (a stopped peer or replica: the others deduplicate).
    ExactlyOnce,
    /// At least once; duplicates counted and reported (a partitioned peer notifies on its own).
    AtLeastOnce,
}

/// Keeps a monitoring component stopped (or a peer partitioned, see [`partition`]) until cleared and until a page of
/// a concurrent scenario has come through meanwhile (at most 6 minutes more); then counts the pages delivered while
/// it was down and their duplicates.
async fn hold_for_pages(h: &mut Handle, what: &str, since: u64, delivery: Delivery) -> Result<Proof, Error> {
    let ctx = h.ctx.clone();
    let start = now_ms();
    // Only the pages of faults that began meanwhile are judged: peers restarted by an earlier drill resend that
    // drill's notifications while they rejoin (measured: a resolved page twice, 30 s apart), which says nothing
    // about this fault.
    let started_at = std::time::UNIX_EPOCH + Duration::from_millis(start.saturating_sub(5_000));
    h.ready();
    h.until(Phase::Clear).await;
    let deadline = now_ms() + 360_000;
    let pages = loop {
        let mut pages = pages_since(&ctx, since).await?;
        pages.retain(|n| began_after(n, started_at));
        if pages.iter().any(|n| n.status == "firing") || now_ms() > deadline {
            break pages;
        }
        sleep(Duration::from_secs(2)).await;
    };
    let firing: std::collections::BTreeSet<&str> = pages
        .iter()
        .filter(|n| n.status == "firing")
        .map(|n| n.alertname.as_str())
        .collect();
    let repeats = duplicates::repeats(&pages);
    let dups = duplicates::count(&repeats);
    let dup_total = repeats.len();
    let passed = !firing.is_empty() && (delivery == Delivery::AtLeastOnce || dup_total == 0);
    Ok(Proof {
        claim: match delivery {
            Delivery::ExactlyOnce => format!("with {what}, every page of a concurrent fault arrives exactly once"),
            Delivery::AtLeastOnce => {
                format!("with {what}, every page of a concurrent fault arrives at least once (duplicates counted)")
            }
        },
        passed,
        figures: format!(
            "{} page notification(s) in {:.0} s ({}), {dup_total} duplicate(s){}",
            pages.len(),
            (now_ms() - start) as f64 / 1000.0,
            if firing.is_empty() {
                "none firing: no concurrent page to judge".to_string()
            } else {
                firing.into_iter().collect::<Vec<_>>().join(", ")
            },
            if dups.is_empty() {
                String::new()
            } else {
                format!(
                    ": {dups:?} ({})",
                    repeats.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
                )
            }
        ),
    })
}

/// Whether every alert of the notification started firing after `at`.
fn began_after(n: &crate::clients::Notification, at: std::time::SystemTime) -> bool {
    !n.webhook.alerts.is_empty()
        && n.webhook
            .alerts
            .iter()
            .all(|a| humantime::parse_rfc3339_weak(&a.starts_at).is_ok_and(|t| t >= at))
}

async fn pages_since(ctx: &Ctx, since: u64) -> Result<Vec<crate::clients::Notification>, Error> {
    let after = since.to_string();
    let mut list = ctx.inbox.notifications(&[("after", &after), ("limit", "1000")]).await?;
    list.retain(|n| n.receiver == "pager");
    list.reverse();
    Ok(list)
}

/// Stops a monitoring replica (an Alertmanager peer, a Prometheus) while pages flow; starts it again to clear.
pub(super) async fn stop_monitoring(h: &mut Handle, program: &'static str) -> Result<Vec<Proof>, Error> {
    let ctx = h.ctx.clone();
    let since = ctx.last_notification_id().await?;
    let out = ctx.peer_outages.begin(alertmanager_peers(program), now_ms);
    ctx.supervisor("stop", program).await?;
    let proof = hold_for_pages(h, &format!("{program} stopped"), since, Delivery::ExactlyOnce).await;
    ctx.supervisor("start", program).await?;
    drop(out);
    Ok(vec![proof?])
}

/// The nftables table the partition drill owns; deleting it heals every partition it made.
const NFT_TABLE: &str = "sre_stack_gameday";

/// Cuts one Alertmanager peer off from the others' gossip while pages flow; heals to clear. On one machine every
/// peer dials from 127.0.0.1 (the kernel's source address for loopback), so nftables can tell a connection *to* the
/// peer's gossip listener from the others but not the peer's own dials: the cut drops every packet to and from its
/// listener. The others can no longer reach it and count it out (so nothing they notify is gossiped to it), while
/// it can still reach them: an asymmetric partition, a common one in real networks. Prometheus still sends it
/// every alert.
pub(super) async fn partition(h: &mut Handle, peer: usize) -> Result<Vec<Proof>, Error> {
    let ctx = h.ctx.clone();
    let peers = ctx.alertmanager_addresses()?;
    let Some(cut) = peers.get(peer).cloned() else {
        return Err(Error::NoPeer(peer));
    };
    let since = ctx.last_notification_id().await?;
    // The others count the cut peer out only after their failure detector gives up on it: until then they wait
    // for it when it is ahead of them.
    let out = ctx.peer_outages.begin(1, now_ms);
    nft::load(&partition_rules(&cut, ctx.args.alertmanager_cluster_port)).await?;
    ctx.say(&format!("partition: the other peers cannot reach {cut}'s gossip"));
    let proof = hold_for_pages(
        h,
        &format!("Alertmanager {cut} partitioned"),
        since,
        Delivery::AtLeastOnce,
    )
    .await;
    let healed = nft::load(&format!("delete table inet {NFT_TABLE}\n")).await;
    drop(out);
    ctx.say("partition: healed");
    let proof = proof?;
    healed?;
    Ok(vec![proof])
}

/// An nftables script dropping every packet to and from `cut`'s gossip listener.
pub fn partition_rules(cut: &str, port: u16) -> String {
    format!(
        "table inet {NFT_TABLE} {{\n  chain input {{\n    type filter hook input priority 0; policy accept;\n    \
         ip daddr {cut} tcp dport {port} drop\n    ip saddr {cut} tcp sport {port} drop\n  }}\n}}\n"
    )
}

/// Cuts HAProxy off from the app replicas numbered `replicas` (0-based): nftables drops what HAProxy's worker
/// (user haproxy) sends to their API, so its checks and requests time out; nothing else is affected (Prometheus
/// scrapes the admin listener, the drills reach the API directly). Heals to clear.
pub(super) async fn cut_off(h: &mut Handle, replicas: &'static [usize]) -> Result<Vec<Proof>, Error> {
    let ctx = h.ctx.clone();
    let mut targets = Vec::new();
    for &i in replicas {
        let url = ctx.args.replica_api.get(i).ok_or(Error::NoPeer(i))?;
        let url = reqwest::Url::parse(url).map_err(|_| Error::BadUrl(url.clone()))?;
        let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
            return Err(Error::BadUrl(url.to_string()));
        };
        targets.push((host.to_string(), port));
    }
    nft::load(&cut_off_rules(&targets)).await?;
    ctx.say(&format!("cut-off: HAProxy cannot reach {targets:?}"));
    h.ready();
    h.until(Phase::Clear).await;
    nft::load(&format!("delete table inet {NFT_TABLE}\n")).await?;
    // Cleared once HAProxy sends to them again: a scenario that starts next must not meet its 503s.
    for &i in replicas {
        ctx.wait_replica_in_rotation(&format!("app-{}", i + 1), Duration::from_secs(30))
            .await?;
    }
    ctx.say("cut-off: healed, every replica back in rotation");
    Ok(vec![])
}

/// An nftables script dropping what the haproxy user sends to each (address, port).
pub fn cut_off_rules(targets: &[(String, u16)]) -> String {
    let mut rules = String::new();
    for (addr, port) in targets {
        rules.push_str(&format!(
            "    meta skuid \"haproxy\" ip daddr {addr} tcp dport {port} drop\n"
        ));
    }
    format!(
        "table inet {NFT_TABLE} {{\n  chain output {{\n    type filter hook output priority 0; policy accept;\n{rules}  }}\n}}\n"
    )
}

/// `app-1` of `app:app-1`.
fn replica_host(replica: &str) -> &str {
    replica.rsplit(':').next().unwrap_or(replica)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_drops_what_goes_to_and_comes_from_the_peers_gossip_listener() {
        let rules = partition_rules("127.0.3.3", 9094);
        assert!(rules.contains("ip daddr 127.0.3.3 tcp dport 9094 drop"), "{rules}");
        assert!(rules.contains("ip saddr 127.0.3.3 tcp sport 9094 drop"), "{rules}");
        assert!(rules.starts_with("table inet sre_stack_gameday {"), "{rules}");
    }

    #[test]
    fn a_cut_off_drops_only_what_haproxy_sends_to_the_replicas_api() {
        let rules = cut_off_rules(&[("127.0.1.2".to_string(), 8080)]);
        assert!(
            rules.contains("meta skuid \"haproxy\" ip daddr 127.0.1.2 tcp dport 8080 drop"),
            "{rules}"
        );
        assert!(rules.contains("hook output"), "{rules}");
    }

    #[test]
    fn only_notifications_of_alerts_begun_during_the_drill_are_judged() {
        use crate::clients::{Notification, Webhook, WebhookAlert};
        let n = |starts: &str| Notification {
            id: 1,
            receiver: "pager".into(),
            received_at_unix_ms: 0,
            status: "resolved".into(),
            alertname: "A".into(),
            webhook: Webhook {
                group_key: "g".into(),
                external_url: String::new(),
                alerts: vec![WebhookAlert {
                    status: "resolved".into(),
                    labels: Default::default(),
                    fingerprint: "f".into(),
                    starts_at: starts.into(),
                }],
            },
        };
        let at = humantime::parse_rfc3339_weak("2026-12-02T07:00:00Z").unwrap();
        assert!(began_after(&n("2026-12-02T07:01:21.63Z"), at));
        assert!(!began_after(&n("2026-12-02T06:58:00.1Z"), at));
        assert!(!began_after(&n("not a time"), at));
    }

    #[test]
    fn a_replica_is_named_for_its_host() {
        assert_eq!(replica_host("app:app-2"), "app-2");
        assert_eq!(replica_host("haproxy"), "haproxy");
    }
}
