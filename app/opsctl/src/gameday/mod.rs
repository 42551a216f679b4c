//! `opsctl gameday`: proves every alert live against the running stack. A quiet period of healthy load first
//! (nothing but the Watchdog heartbeat may arrive), then one scenario per fault (see `catalog`), side by side where
//! they cannot disturb each other; each injects its fault, waits for its alerts to fire and reach their receivers,
//! removes the fault and waits for the resolved notifications. Last, the proofs that need a calm stack. Writes the
//! inventory (markdown and JSON) and exits non-zero when anything failed.

mod catalog;
mod config;
mod connections;
mod duplicates;
mod error;
mod faults;
mod peer_outages;
mod proofs;
mod redis;
mod report;
mod runner;
mod stack;
mod verdict;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ::stack::topology::Topology;
use clap::Args;
use tokio::sync::watch;
use tokio::time::sleep;

use crate::duration::{format_duration, parse_duration};
use crate::secrets::Secrets;
use catalog::{scenarios, NOT_LIVE};
use config::Routing;
pub use error::Error;
use proofs::Proof;
use runner::{Rules, ScenarioResult};
use stack::{now_ms, Ctx};
use verdict::Timing;

/// Arguments of `opsctl gameday`.
#[derive(Debug, Clone, Args)]
pub struct GamedayArgs {
    /// The app's public API (HAProxy, in front of every replica).
    #[arg(long, default_value_t = Topology::embedded().url("haproxy", "public"))]
    pub app: String,
    /// Each app replica's own API, in replica order (drills that need one replica's listener, not the balancer).
    #[arg(long, value_delimiter = ',', default_values_t = Topology::embedded().urls("app", "api"))]
    pub replica_api: Vec<String>,
    /// Each app replica's admin listener (metrics, fault injection), in replica order.
    #[arg(long, value_delimiter = ',', default_values_t = Topology::embedded().urls("app", "admin"))]
    pub admin: Vec<String>,
    /// HAProxy's metrics endpoint (the drills wait for a restarted replica to be back in rotation).
    #[arg(long, default_value_t = Topology::embedded().url("haproxy", "metrics"))]
    pub haproxy_metrics: String,
    /// The Alertmanager peers' gossip port (the partition drill cuts it).
    #[arg(long, default_value_t = Topology::embedded().addr("alertmanager", "cluster").port())]
    pub alertmanager_cluster_port: u16,
    /// The peers' `--cluster.peer-timeout` (15s is Alertmanager's default): while drills hold peers out of the
    /// cluster, each notification's bound grows by this much per peer out.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub alertmanager_peer_timeout: Duration,
    /// The Prometheus the game day reads (the first replica; the drills stop another one).
    #[arg(long, default_value_t = Topology::embedded().url("prometheus", "web"))]
    pub prometheus: String,
    /// Every Alertmanager peer, in order; the game day reads the first that answers.
    #[arg(long, value_delimiter = ',', default_values_t = Topology::embedded().urls("alertmanager", "web"))]
    pub alertmanager: Vec<String>,
    /// The on-call inbox.
    #[arg(long, default_value_t = Topology::embedded().url("inbox", "http"))]
    pub inbox: String,
    /// Postgres: the app's database (drills lock rows and open connections; the proof reads writes back). With
    /// --secrets-dir, only its host, port and database are used: the game day logs in as the superuser `postgres`
    /// with postgres.password; without, as the URL says.
    #[arg(long, default_value_t = default_database_url())]
    pub database_url: String,
    /// Patroni's REST API of every Postgres member, in member order (the drills find the leader and the
    /// synchronous standby there).
    #[arg(long, value_delimiter = ',', default_values_t = Topology::embedded().urls("postgres", "rest"))]
    pub patroni: Vec<String>,
    /// Every etcd member's client API, in member order (the partition drill cuts the leader off from their hosts).
    #[arg(long, value_delimiter = ',', default_values_t = Topology::embedded().urls("etcd", "client"))]
    pub etcd: Vec<String>,
    /// The Postgres members' cgroups (v2): `<dir>/postgres-N` holds member N's Patroni and Postgres (native/env.sh's
    /// HOST_CGROUPS). The partition drill tells a member's packets by it.
    #[arg(long, env = "HOST_CGROUPS", default_value = "/sys/fs/cgroup/sre-stack")]
    pub host_cgroups: PathBuf,
    /// The stack's state directory: each member's data directory is `<state-dir>/postgres-N/data` (the drill that
    /// kills a postmaster reads its pid there).
    #[arg(long, env = "STATE_DIR", default_value = "/var/tmp/sre-stack")]
    pub state_dir: PathBuf,
    /// Redis, host:port. With --secrets-dir, every connection first authenticates as the ACL user `admin` with
    /// redis-admin.password.
    #[arg(long, default_value_t = Topology::embedded().addr("redis", "resp").to_string())]
    pub redis_addr: String,
    /// The Redis user the app connects as (the user of its APP_REDIS_URL): the redis-errors drill takes GET from
    /// this user and gives back exactly what it took. `default` for a Redis without ACL users.
    #[arg(long, default_value = "app", value_name = "USER")]
    pub redis_app_user: String,
    /// The supervisor's control command; the game day runs `<ctl> stop|start <program>` and
    /// `<ctl> signal TERM app`.
    #[arg(long, default_value = "native/ctl.sh")]
    pub ctl: String,
    /// Directory of Prometheus's configuration: `targets/<job>.yml` (file_sd) and `drills/` (extra rule files).
    #[arg(long, default_value_os_t = stack::default_prometheus_dir())]
    pub prometheus_dir: PathBuf,
    /// Length of the quiet period of healthy load (at least 10m for the proof; 0s skips it).
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub quiet: Duration,
    /// Background load during the whole game day, requests per second.
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// Runs only these scenarios (comma-separated; for working on one). The full game day runs all.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// The dashboards' live check; `{prometheus}` is replaced by --prometheus.
    #[arg(
        long,
        default_value = "native/xtask.sh live --prometheus {prometheus} --require-data"
    )]
    pub dashboards_check: String,
    /// Where the inventory goes (gameday.md and gameday.json).
    #[arg(long, default_value = "gameday-results")]
    pub out_dir: PathBuf,
}

/// Every Postgres member, and libpq's `target_session_attrs=read-write`: the drills reach whichever member leads.
fn default_database_url() -> String {
    let members: Vec<String> = Topology::embedded()
        .addrs("postgres", "sql")
        .iter()
        .map(|a| a.to_string())
        .collect();
    format!(
        "postgres://app:app@{}/app?target_session_attrs=read-write",
        members.join(",")
    )
}

/// Everything the game day measured.
#[derive(Debug, serde::Serialize)]
pub struct Outcome {
    pub timing: Timing,
    pub settled: Settled,
    pub started_unix_ms: u64,
    pub seconds: f64,
    pub quiet: Proof,
    pub proofs: Vec<Proof>,
    pub scenarios: Vec<ScenarioResult>,
    pub not_live: Vec<(String, String, String)>,
    pub background_load: serde_json::Value,
    pub passed: bool,
}

/// Runs the game day; the error is a reason it could not run at all (a secret file it needs among them).
pub async fn run(args: GamedayArgs, secrets: &Secrets) -> Result<Outcome, Error> {
    let ctx = Arc::new(Ctx::new(args.clone(), secrets)?);
    let started = now_ms();
    let (timing, routing) = read_config(&ctx).await?;
    let rules = read_rules(&ctx).await?;
    ctx.say(&format!(
        "intervals: scrape {}s, evaluation {}s, group_wait {}s, group_interval {}s; {} alerting rules",
        timing.scrape_seconds,
        timing.evaluation_seconds,
        timing.group_wait_seconds,
        timing.group_interval_seconds,
        rules.len()
    ));
    check_coverage(&rules)?;

    // The game day's own key space, then steady background traffic for the whole run. Four writes at a time: on a
    // young stack a burst of slow commits would weigh on the latency SLO's long windows for many minutes.
    let seed = crate::load::LoadArgs {
        rate: 1000.0,
        duration: Duration::from_millis(1),
        no_seed: false,
        concurrency: 4,
        ..ctx.load_args()
    };
    let seeded = crate::load::run(&seed, std::future::pending()).await;
    if seeded.seed_errors > 0 || seeded.seeded_keys == 0 {
        return Err(Error::Seed {
            failed: seeded.seed_errors,
        });
    }
    let (stop_background, background) = faults::background_load(ctx.load_args());

    let settled = settle(&ctx).await?;
    let first_notification = ctx.last_notification_id().await?;
    let quiet = quiet_period(&ctx, &routing, args.quiet).await;
    ctx.say(&format!(
        "quiet period: {} — {}",
        if quiet.passed { "passed" } else { "FAILED" },
        quiet.figures
    ));
    let mut proofs = vec![proofs::dashboards(&ctx).await];

    let results = run_scenarios(&ctx, &rules, &routing, timing).await;

    let _ = stop_background.send(true);
    let background = background.await?;
    proofs.push(proofs::random_paths(ctx.clone(), Duration::from_secs(timing.scrape_seconds)).await);
    for p in &proofs {
        ctx.say(&format!(
            "proof: {} — {}",
            if p.passed { "passed" } else { "FAILED" },
            p.claim
        ));
    }

    let passed = quiet.passed && proofs.iter().all(|p| p.passed) && results.iter().all(ScenarioResult::passed);
    let outcome = Outcome {
        timing,
        settled,
        started_unix_ms: started,
        seconds: (now_ms() - started) as f64 / 1000.0,
        quiet,
        proofs,
        scenarios: results,
        not_live: NOT_LIVE
            .iter()
            .map(|n| (n.alert.to_string(), n.severity.to_string(), n.reason.to_string()))
            .collect(),
        background_load: serde_json::to_value(&background).unwrap_or_default(),
        passed,
    };
    report::write(&args.out_dir, &outcome)?;
    print!("{}", report::markdown(&outcome));
    // Last, what a reader of only the log's tail needs: how the run went, and every failure in one line each.
    println!();
    // The repeats first: the log's last lines are the verdict and its failures.
    for line in repeated_notifications(&ctx, first_notification).await {
        ctx.say(&line);
    }
    for line in report::summary(&outcome) {
        ctx.say(&line);
    }
    ctx.say(&format!(
        "game day {} in {}; inventory in {}",
        if outcome.passed { "passed" } else { "FAILED" },
        format_duration(Duration::from_secs_f64(outcome.seconds)),
        args.out_dir.display()
    ));
    Ok(outcome)
}

/// What the whole game day delivered twice (the heartbeat aside): Alertmanager delivers at least once, and only the
/// drills that prove exactly-once judge repeats; this counts them all, with who sent each and what came between,
/// so a change of the cluster's timing shows in the figure (docs/topology.md).
async fn repeated_notifications(ctx: &Ctx, after: u64) -> Vec<String> {
    let after = after.to_string();
    let mut list = match ctx.inbox.notifications(&[("after", &after), ("limit", "5000")]).await {
        Ok(list) => list,
        Err(e) => return vec![format!("summary: repeated notifications unknown: inbox: {e}")],
    };
    list.retain(|n| n.alertname != "Watchdog");
    list.reverse();
    let repeats = duplicates::repeats(&list);
    let mut lines = vec![format!(
        "summary: {} of {} notifications (the heartbeat aside) repeated an earlier one",
        repeats.len(),
        list.len()
    )];
    lines.extend(repeats.iter().map(|r| format!("summary: repeat: {r}")));
    lines
}

/// The intervals and the routing from the running Prometheus's and Alertmanager's configuration.
async fn read_config(ctx: &Ctx) -> Result<(Timing, Routing), Error> {
    let prometheus = ctx.prometheus.config_yaml().await?;
    let alertmanager = ctx.alertmanager_status().await?.config.parse()?;
    Ok((config::timing(&prometheus, &alertmanager)?, Routing(alertmanager)))
}

async fn read_rules(ctx: &Ctx) -> Result<Rules, Error> {
    let groups = ctx.prometheus.rules().await?;
    let mut rules = BTreeMap::new();
    for rule in groups.iter().flat_map(|g| &g.rules).filter(|r| r.is_alert()) {
        let severity = rule.labels.get("severity").cloned().unwrap_or_default();
        rules.insert((rule.name.clone(), severity), rule.duration as u64);
    }
    Ok(rules)
}

/// Every alerting rule Prometheus runs has a scenario or a reason (the unit test checks alerts/ the same way).
fn check_coverage(rules: &Rules) -> Result<(), Error> {
    let mut covered: BTreeSet<(String, String)> = NOT_LIVE
        .iter()
        .map(|n| (n.alert.to_string(), n.severity.to_string()))
        .collect();
    for s in scenarios() {
        covered.extend(s.expects.iter().map(|e| (e.alert.to_string(), e.severity.to_string())));
    }
    let missing: Vec<_> = rules.keys().filter(|k| !covered.contains(*k)).cloned().collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Error::Uncovered(missing))
    }
}

/// Waits until nothing but the Watchdog and info alerts is active in Prometheus and Alertmanager, so the quiet
/// period starts clean (earlier tests may have left a fault's alerts resolving). While it waits, it says once a
/// minute what keeps each alert active, so that a stack that never settles explains itself in the log.
///
/// A young stack's SLO windows hold only minutes of traffic, so a few slow or failed requests from its first
/// minutes (cold caches, the first connections) can keep a burn-rate alert's long-window leg above its threshold
/// for a long time at the background rate. When only the SLO alerts remain after two minutes, healthy reads at
/// 100/s fill the windows with the traffic an established service would have; the log says so.
async fn settle(ctx: &Ctx) -> Result<Settled, Error> {
    let started = now_ms();
    let mut settled = Settled::default();
    let mut warm_up = None;
    let result = settle_loop(ctx, &mut warm_up, &mut settled).await;
    if let Some((stop, load)) = warm_up {
        let _ = stop.send(true);
        let report: crate::load::stats::Report = load.await?;
        ctx.say(&format!(
            "warm-up load stopped: {} requests, {} failed",
            report.completed, report.errors
        ));
        settled.warm_up_requests = Some(report.completed);
    }
    settled.seconds = (now_ms() - started) as f64 / 1000.0;
    result.map(|()| settled)
}

/// How long the stack took to settle, and what it waited for.
#[derive(Debug, Default, serde::Serialize)]
pub struct Settled {
    pub seconds: f64,
    /// The alerts active when the game day began.
    pub waited_for: Vec<String>,
    /// Healthy reads sent to fill a young stack's SLO windows, if any were needed.
    pub warm_up_requests: Option<u64>,
    /// The first diagnosis printed while waiting.
    pub diagnosis: Option<String>,
}

/// The SLO burn-rate alerts, which a young stack's short history can hold open.
const SLO_ALERTS: [&str; 2] = ["AppAvailabilityBudgetBurn", "AppLatencyBudgetBurn"];

type WarmUp = (watch::Sender<bool>, tokio::task::JoinHandle<crate::load::stats::Report>);

async fn settle_loop(ctx: &Ctx, warm_up: &mut Option<WarmUp>, settled: &mut Settled) -> Result<(), Error> {
    let deadline = now_ms() + 600_000;
    for round in 0u32.. {
        let prom = ctx.prometheus.alerts().await?;
        let am = ctx.held_alerts().await?;
        let noisy = |labels: &BTreeMap<String, String>| {
            labels.get("alertname").map(String::as_str) != Some("Watchdog")
                && labels.get("severity").map(String::as_str) != Some("info")
        };
        let key = |l: &BTreeMap<String, String>| {
            (
                l.get("alertname").map(String::as_str).unwrap_or("?").to_string(),
                l.get("severity").map(String::as_str).unwrap_or("").to_string(),
            )
        };
        let active: BTreeSet<(String, String)> = prom
            .iter()
            .map(|a| &a.labels)
            .chain(am.iter().map(|a| &a.labels))
            .filter(|l| noisy(l))
            .map(key)
            .collect();
        let busy: BTreeSet<String> = active.iter().map(|(a, s)| format!("{a}{{{s}}}")).collect();
        if busy.is_empty() {
            return Ok(());
        }
        if round == 0 {
            settled.waited_for = busy.iter().cloned().collect();
        }
        if now_ms() > deadline {
            ctx.say(&diagnosis(ctx).await);
            return Err(Error::NotSettled { busy });
        }
        ctx.say(&format!("settling: waiting for {busy:?} to end"));
        if round % 4 == 1 {
            let found = diagnosis(ctx).await;
            ctx.say(&found);
            settled.diagnosis.get_or_insert(found);
        }
        let only_slo = active.iter().all(|(alert, _)| SLO_ALERTS.contains(&alert.as_str()));
        if round >= 8 && only_slo && warm_up.is_none() {
            ctx.say(
                "settling: only the SLO burn alerts remain; healthy reads at 100/s fill the young stack's SLO windows",
            );
            *warm_up = Some(faults::background_load(crate::load::LoadArgs {
                rate: 100.0,
                read_ratio: 1.0,
                ..ctx.load_args()
            }));
        }
        sleep(Duration::from_secs(15)).await;
    }
    unreachable!("the rounds outnumber the deadline")
}

/// What the app served lately that counts against its SLOs, and where the burn rates stand.
async fn diagnosis(ctx: &Ctx) -> String {
    let api = stack::slo_requests();
    let queries = [
        (
            "SLIs (error and slow ratios by window)",
            r#"{__name__=~"app:(availability_errors|latency_slow):ratio_rate(5m|1h|2h|1d)"}"#.to_string(),
        ),
        (
            "5xx responses in the last hour",
            format!(
                r#"sum by (http_route, http_response_status_code) (increase(http_server_request_duration_seconds_count{{{api}, http_response_status_code=~"5.."}}[1h])) > 0"#
            ),
        ),
        (
            "requests slower than 0.25 s in the last hour",
            format!(
                r#"sum by (http_route) (increase(http_server_request_duration_seconds_count{{{api}}}[1h])) - sum by (http_route) (increase(http_server_request_duration_seconds_bucket{{{api}, le="0.25"}}[1h])) > 0"#
            ),
        ),
        (
            "requests in the last hour",
            format!(r#"sum by (http_route) (increase(http_server_request_duration_seconds_count{{{api}}}[1h])) > 0"#),
        ),
    ];
    let mut out = String::from("diagnosis:");
    for (title, expr) in queries {
        out.push_str(&format!("\n  {title}:"));
        match ctx.prometheus.query(&expr).await {
            Ok(samples) if samples.is_empty() => out.push_str(" none"),
            Ok(samples) => {
                for s in samples {
                    let labels: Vec<String> = s
                        .metric
                        .iter()
                        .filter(|(k, _)| k.as_str() != "job")
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect();
                    out.push_str(&format!(" [{}] {:.4};", labels.join(","), s.number()));
                }
            }
            Err(e) => out.push_str(&format!(" query failed: {e}")),
        }
    }
    out
}

/// Healthy load for `length`: no notification may arrive but the Watchdog heartbeat, which must keep arriving.
async fn quiet_period(ctx: &Ctx, routing: &Routing, length: Duration) -> Proof {
    let claim = format!(
        "a quiet period of steady, healthy load ({}) sends no notification but the Watchdog heartbeat",
        format_duration(length)
    );
    let heartbeat_receiver = match routing.receiver("Watchdog", "none", &[]) {
        Ok(Some(receiver)) => receiver,
        outcome => {
            return Proof {
                claim,
                passed: false,
                figures: match outcome {
                    Err(e) => format!("Alertmanager's routing: {e}"),
                    _ => "Alertmanager routes the Watchdog to a receiver that sends nothing".to_string(),
                },
            }
        }
    };
    let since = match ctx.last_notification_id().await {
        Ok(id) => id,
        Err(e) => {
            return Proof {
                claim,
                passed: false,
                figures: format!("inbox: {e}"),
            }
        }
    };
    ctx.say(&format!(
        "quiet period: {} of healthy load at {}/s",
        format_duration(length),
        ctx.args.rate
    ));
    sleep(length).await;
    let after = since.to_string();
    let received = ctx
        .inbox
        .notifications(&[("after", &after), ("limit", "1000")])
        .await
        .unwrap_or_default();
    let heartbeats = received.iter().filter(|n| n.receiver == heartbeat_receiver).count();
    let others: Vec<String> = received
        .iter()
        .filter(|n| n.receiver != heartbeat_receiver)
        .map(|n| format!("{} {} to {}", n.alertname, n.status, n.receiver))
        .collect();
    // The Watchdog route repeats every minute, on the next group_interval tick: one every 60-75 s. At least one per
    // 90 s, and the inbox's own dead-man's switch healthy at the end.
    let heartbeat = ctx.inbox.heartbeat().await.map(|h| h.healthy).unwrap_or(false);
    Proof {
        claim,
        passed: others.is_empty() && heartbeats as u64 * 90 >= length.as_secs() && heartbeat,
        figures: format!(
            "{heartbeats} heartbeat notifications in {}, {} others{}; the inbox's dead-man's switch {}",
            format_duration(length),
            others.len(),
            if others.is_empty() {
                String::new()
            } else {
                format!(": {}", others.join(", "))
            },
            if heartbeat {
                "healthy"
            } else {
                "reports the heartbeat missing"
            }
        ),
    }
}

/// Starts every scenario as soon as the faults of its `after` list are removed, the scenarios of its
/// `after_resolved` list have ended and the faults of its `with` list are in place, and collects the results.
async fn run_scenarios(ctx: &Arc<Ctx>, rules: &Rules, routing: &Routing, timing: Timing) -> Vec<ScenarioResult> {
    let all = scenarios();
    let chosen: Vec<_> = all
        .into_iter()
        .filter(|s| ctx.args.only.is_empty() || ctx.args.only.iter().any(|o| o == s.name))
        .collect();
    let mut cleared: BTreeMap<&'static str, watch::Sender<bool>> = BTreeMap::new();
    let mut ended: BTreeMap<&'static str, watch::Sender<bool>> = BTreeMap::new();
    let mut injected: BTreeMap<&'static str, watch::Sender<bool>> = BTreeMap::new();
    for s in &chosen {
        cleared.insert(s.name, watch::channel(false).0);
        ended.insert(s.name, watch::channel(false).0);
        injected.insert(s.name, watch::channel(false).0);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for s in chosen {
        let subscribe = |names: &[&str], signals: &BTreeMap<&'static str, watch::Sender<bool>>| {
            names
                .iter()
                .filter_map(|d| signals.get(d))
                .map(|tx| tx.subscribe())
                .collect::<Vec<watch::Receiver<bool>>>()
        };
        let mut waits = subscribe(s.after, &cleared);
        waits.extend(subscribe(s.after_resolved, &ended));
        waits.extend(subscribe(s.with, &injected));
        let done = cleared[s.name].clone();
        let in_place = injected[s.name].clone();
        let end = ended[s.name].clone();
        let (ctx, rules, routing) = (ctx.clone(), rules.clone(), routing.clone());
        tasks.spawn(async move {
            for mut w in waits {
                let _ = w.wait_for(|c| *c).await;
            }
            let result = runner::run(ctx, s, &rules, &routing, timing, done, in_place).await;
            let _ = end.send(true);
            result
        });
    }
    let mut results = tasks.join_all().await;
    results.sort_by_key(|r| r.started_unix_ms);
    results
}
