//! Which fault proves which alert: one scenario per fault, the alerts it must fire (and where they must arrive),
//! the alerts it must not let through (inhibited), and the order scenarios run in. Alerts that cannot be proven
//! live are listed in [`NOT_LIVE`] with the reason; a test keeps both lists complete against `alerts/`.

use super::faults::Fault;

/// An alert a scenario must fire, deliver to its severity's receiver, and resolve.
#[derive(Debug, Clone)]
pub struct Expect {
    pub alert: &'static str,
    /// Picks the rule when one name has several (the SLO burn alerts page and ticket).
    pub severity: &'static str,
    /// Labels the alert must carry (besides alertname and severity), to tell it from the same alert elsewhere.
    pub labels: &'static [(&'static str, &'static str)],
    /// Seconds the expression needs, after the fault, to become true (a rate crossing its threshold, say),
    /// besides one scrape and one evaluation interval.
    pub detect: u64,
    /// Seconds the expression needs, after the fault is removed, to become false (the range of a rate, say).
    pub clear: u64,
    /// The fault builds this alert's condition gradually, for as long as the stack needs (the SLO drill ramps its
    /// bad requests until the 1h ratios cross): `detect` counts from the end of the injection, whose length is
    /// added to the bound.
    pub after_ramp: bool,
}

/// An alert the scenario's fault also sets off but Alertmanager must hold back while `by` fires.
#[derive(Debug, Clone)]
pub struct Inhibited {
    pub alert: &'static str,
    pub labels: &'static [(&'static str, &'static str)],
    /// The inhibiting alert (one of the scenario's expectations).
    pub by: &'static str,
}

/// When the fault is removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClearOn {
    /// Once every expected alert fires in the game day's Prometheus and has reached its receiver.
    Delivered,
    /// Once every expected alert fires in Prometheus: the fault itself stops delivery (Alertmanager or the inbox
    /// is down), so the notification can only arrive after the fault is removed.
    Firing,
}

/// A fault and what it must prove.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: &'static str,
    pub what: &'static str,
    pub fault: Fault,
    pub expects: Vec<Expect>,
    pub inhibited: Vec<Inhibited>,
    pub clear_on: ClearOn,
    /// Scenarios whose faults must be removed before this one starts (they would disturb each other).
    pub after: &'static [&'static str],
    /// Scenarios that must have ended, every alert resolved, before this one starts: this fault's errors would
    /// hold their alerts open. The SLO drill's page stays open while its 30m window holds more than 6x the budget,
    /// so a drill that answers 5xx (pool exhaustion: thousands of 503s) must wait for it to resolve, not only for
    /// its fault to be removed (seen: AppAvailabilityBudgetBurn still firing at its 1860 s bound).
    pub after_resolved: &'static [&'static str],
    /// Scenarios whose faults must be in place before this one starts: a monitoring drill proves delivery of the
    /// pages of faults that begin while it holds (seen: the peer-down drill, waiting for an alert of
    /// alertmanager-down to clear first, started after postgres-down had paged, and so had no page to judge).
    pub with: &'static [&'static str],
}

/// An alert the game day does not fire, and why.
#[derive(Debug, Clone, Copy)]
pub struct NotLive {
    pub alert: &'static str,
    pub severity: &'static str,
    pub reason: &'static str,
}

/// Alerts covered without a fault, or not at all, with the reason.
pub const NOT_LIVE: &[NotLive] = &[
    NotLive {
        alert: "PatroniNoSyncStandby",
        severity: "warning",
        reason:
            "needs both standbys gone for a minute; with one stopped (postgres-sync-standby-stopped) Patroni names \
                 the other synchronous within a loop, which that drill proves; promtool tests cover the rule",
    },
    NotLive {
        alert: "EtcdNoLeader",
        severity: "critical",
        reason: "needs two of the three etcd members down, which also takes the leader key from Patroni (a write \
                 outage); not drilled yet, promtool tests cover the rule",
    },
    NotLive {
        alert: "Watchdog",
        severity: "none",
        reason: "no fault: always firing; the quiet period proves it reaches the heartbeat receiver every minute",
    },
    NotLive {
        alert: "AppHighMemory",
        severity: "warning",
        reason: "needs the app to hold over 512 MiB for 2 minutes; the app has no memory fault to inject and \
                 nothing in its API grows memory without bound (promtool tests cover the rule)",
    },
    NotLive {
        alert: "AppAvailabilityBudgetBurn",
        severity: "warning",
        reason: "ticket legs (1d/2h at 3x, 3d/6h at 1x) need days of history to mean anything; on a stack younger \
                 than its windows they open after any drill that spends budget (promtool tests cover them)",
    },
    NotLive {
        alert: "AppLatencyBudgetBurn",
        severity: "warning",
        reason: "ticket legs (1d/2h at 3x, 3d/6h at 1x) need days of history to mean anything; on a stack younger \
                 than its windows they open after any drill that spends budget (promtool tests cover them)",
    },
];

const NO_LABELS: &[(&str, &str)] = &[];

/// What the first drill of the Postgres cluster waits for: the other drills on Postgres (a failover breaks their
/// sessions) and the one that fills the app's connections (the writers would be refused).
const CLUSTER_DRILLS_AFTER: [&str; 6] = [
    "pg-lock",
    "pg-deadlock",
    "pg-connections",
    "pg-buffer-cache",
    "postgres-down",
    "app-connections",
];
/// The last failover of the Postgres cluster: what reads from Postgres (Redis down) or stops the app waits for it.
const CLUSTER_DRILLS_LAST: &str = "postgres-leader-partitioned";

fn expect(alert: &'static str, severity: &'static str, detect: u64, clear: u64) -> Expect {
    Expect {
        alert,
        severity,
        labels: NO_LABELS,
        detect,
        clear,
        after_ramp: false,
    }
}

/// Every scenario, in the order they start (each waits for the faults of its `after` list to be removed).
pub fn scenarios() -> Vec<Scenario> {
    vec![
        // --- first the alerting pipeline itself: nothing else may be in flight while it is broken.
        Scenario {
            name: "alertmanager-down",
            what: "stop every Alertmanager peer",
            fault: Fault::Stop("alertmanager:*"),
            // Every evaluation's send fails at once; the ratio over 5m stays above 1% for 5 minutes after.
            expects: vec![expect("PrometheusAlertmanagerUnreachable", "critical", 0, 300)],
            inhibited: vec![Inhibited {
                alert: "PrometheusTargetDown",
                labels: &[("job", "alertmanager")],
                by: "PrometheusAlertmanagerUnreachable",
            }],
            clear_on: ClearOn::Firing,
            after: &[],
            after_resolved: &[],
            with: &[],
        },
        Scenario {
            name: "inbox-down",
            what: "stop the on-call inbox (every webhook fails)",
            fault: Fault::Stop("inbox"),
            // The first failure comes with the next Watchdog repeat (at most a minute) and its retries.
            expects: vec![expect("AlertmanagerNotificationsFailing", "critical", 75, 300)],
            inhibited: vec![Inhibited {
                alert: "PrometheusTargetDown",
                labels: &[("job", "inbox")],
                by: "AlertmanagerNotificationsFailing",
            }],
            clear_on: ClearOn::Firing,
            after: &["alertmanager-down"],
            after_resolved: &[],
            with: &[],
        },
        // --- then, side by side where they cannot disturb each other: faults off the request path, and the
        // --- app-side faults one at a time (each would spoil the others' proofs or be inhibited by them).
        Scenario {
            name: "app-restarts",
            what: "SIGTERM replica app-1 twice under load through HAProxy (proof: no request fails, no \
                   acknowledged write is lost); the supervisor restarts it",
            fault: Fault::AppSigterm,
            expects: vec![expect("AppRestarting", "warning", 30, 900)],
            inhibited: vec![],
            clear_on: ClearOn::Delivered,
            after: &["inbox-down"],
            after_resolved: &[],
            with: &[],
        },
        Scenario {
            name: "replica-down",
            what: "SIGKILL replica app-1 under load through HAProxy and keep it down, as a lost host (proof: no \
                   request fails, no acknowledged write is lost); one replica down is a ticket, not a page",
            fault: Fault::KillReplica("app:app-1"),
            expects: vec![Expect {
                labels: &[("host", "app-1")],
                ..expect("AppInstanceDown", "warning", 0, 0)
            }],
            inhibited: vec![Inhibited {
                alert: "HAProxyServerDown",
                labels: &[("host", "app-1")],
                by: "AppInstanceDown",
            }],
            clear_on: ClearOn::Delivered,
            after: &["app-restarts"],
            after_resolved: &[],
            with: &[],
        },
        Scenario {
            name: "rolling-restart",
            what: "restart every app replica in turn under load through HAProxy (proof: no request fails, no page)",
            fault: Fault::RollingRestart,
            expects: vec![],
            inhibited: vec![],
            clear_on: ClearOn::Delivered,
            after: &["replica-down"],
            after_resolved: &[],
            with: &[],
        },
        Scenario {
            name: "exporter-down",
            what: "stop process-exporter",
            fault: Fault::Stop("process_exporter"),
            expects: vec![Expect {
                labels: &[("job", "process")],
                ..expect("PrometheusTargetDown", "warning", 0, 0)
            }],
            inhibited: vec![],
            clear_on: ClearOn::Delivered,
            after: &["inbox-down"],
            after_resolved: &[],
            with: &[],
        },
        Scenario {
            name: "broken-rule",
            what: "load a rule file whose expression fails at every evaluation (many-to-many match)",
            fault: Fault::BrokenRule,
            expects: vec![expect("PrometheusRuleEvaluationFailures", "warning", 0, 300)],
            inhibited: vec![],
            clear_on: ClearOn::Delivered,
            after: &["inbox-down"],
            after_resolved: &[],
            with: &[],
        },
        Scenario {
            name: "redis-maxmemory",
            what: "write 64 MiB of data to Redis and lower its maxmemory to just above its used memory",
            fault: Fault::RedisMaxmemory,
            expects: vec![expect("RedisMemoryNearMaxmemory", "warning", 0, 0)],
            inhibited: vec![],
            clear_on: ClearOn::Delivered,
            after: &["inbox-down"],
            after_resolved: &[],
            with: &[],
        },
        Scenario {
            name: "redis-clients",
            what: "lower Redis maxclients, keep 85% of it connected, and open a burst of connections past it",
            fault: Fault::RedisClients,
            expects: vec![
                expect("RedisTooManyClients", "warning", 0, 0),
                expect("RedisRejectedConnections", "warning", 0, 300),
            ],
            inhibited: vec![],
            clear_on: ClearOn::Delivered,
            after: &["inbox-down"],
            after_resolved: &[],
            with: &[],
        },
        // --- a monitoring replica down beside each of the next pages: the reduced pipeline must still deliver it.
        // --- (the pages' scenarios start once its fault is in place: `with`)
        Scenario {
            name: "alertmanager-peer-down",
            what: "stop Alertmanager peer 1 (the one that notifies first) while Postgres is down (proof: the page \
                   arrives exactly once)",
            fault: Fault::StopMonitoring("alertmanager:alertmanager-1"),
            expects: vec![
                expect("AlertmanagerMembersInconsistent", "warning", 0, 0),
                // Its errors leave the 5m rate window 5 minutes after the peer is back, and the resolved
                // notification waits for the group's next interval.
                expect("PrometheusAlertmanagerErrors", "warning", 0, 330),
            ],
            inhibited: vec![Inhibited {
                alert: "PrometheusTargetDown",
                labels: &[("job", "alertmanager")],
                by: "AlertmanagerMembersInconsistent",
            }],
            clear_on: ClearOn::Delivered,
            after: &["rolling-restart"],
            after_resolved: &[],
            with: &[],
        },
        Scenario {
            name: "app-metrics-absent",
            what: "remove the app from Prometheus's targets (a broken service discovery)",
            fault: Fault::EmptyTargets("app"),
            expects: vec![expect("AppMetricsAbsent", "critical", 0, 0)],
            inhibited: vec![],
            clear_on: ClearOn::Delivered,
            after: &["rolling-restart"],
            after_resolved: &[],
            with: &["alertmanager-peer-down"],
        },
        Scenario {
            name: "postgres-down",
            what: "stop every Postgres member under write load, then start them (proof: every acknowledged write is \
                   stored; writes during the outage fail fast with 503)",
            fault: Fault::PostgresDown,
            // The cluster without a leader is the page; each member's own ticket is inhibited by it.
            expects: vec![expect("PatroniNoLeader", "critical", 0, 0)],
            inhibited: vec![
                Inhibited {
                    alert: "AppDbPoolTimeouts",
                    labels: &[("pool_name", "postgres")],
                    by: "PatroniNoLeader",
                },
                Inhibited {
                    alert: "PostgresDown",
                    labels: NO_LABELS,
                    by: "PatroniNoLeader",
                },
            ],
            clear_on: ClearOn::Delivered,
            after: &["rolling-restart"],
            after_resolved: &[],
            with: &["alertmanager-peer-down"],
        },
        Scenario {
            name: "replica-unreachable",
            what: "cut HAProxy off from replica app-2 (nftables): its health checks fail while the replica runs and \
                   is scraped",
            fault: Fault::CutOff(&[1]),
            expects: vec![Expect {
                labels: &[("host", "app-2")],
                ..expect("HAProxyServerDown", "warning", 0, 0)
            }],
            inhibited: vec![],
            clear_on: ClearOn::Delivered,
            // Requests HAProxy had sent to app-2 when the cut came hang until retried: not beside a drill whose
            // proof counts failed requests (postgres-down, app-metrics-absent's neighbours).
            after: &["postgres-down", "app-metrics-absent"],
            after_resolved: &[],
            with: &[],
        },
        Scenario {
            name: "pg-lock",
            what: "hold a row lock in an open transaction while another session waits for it",
            fault: Fault::PgLock,
            expects: vec![
                expect("PostgresBlockedQueries", "warning", 0, 0),
                // The transaction must be older than 60 s before the rule's 1m `for` starts.
                expect("PostgresLongRunningTransaction", "warning", 60, 0),
            ],
            inhibited: vec![],
            clear_on: ClearOn::Delivered,
            after: &["postgres-down"],
            after_resolved: &[],
            with: &[],
        },
        Scenario {
            name: "pg-deadlock",
            what: "two transactions lock two rows in opposite order, twice",
            fault: Fault::PgDeadlock,
            expects: vec![expect("PostgresDeadlocks", "warning", 5, 300)],
            inhibited: vec![],
            clear_on: ClearOn::Delivered,
            after: &["postgres-down"],
            after_resolved: &[],
            with: &[],
        },
        Scenario {
            name: "pg-connections",
            what: "open client connections until 85% of the available Postgres connections are in use",
            fault: Fault::PgConnections,
            expects: vec![expect("PostgresConnectionsNearMax", "warning", 0, 0)],
            inhibited: vec![],
            clear_on: ClearOn::Delivered,
            after: &["postgres-down"],
            after_resolved: &[],
            with: &[],
        },
        Scenario {
            name: "pg-buffer-cache",
            what: "scan a table larger than a quarter of shared_buffers once a second (it bypasses the cache)",
            fault: Fault::PgBufferCache,
            expects: vec![expect("PostgresBufferCacheHitRatioLow", "warning", 30, 300)],
            inhibited: vec![],
            clear_on: ClearOn::Delivered,
            after: &["postgres-down"],
            after_resolved: &[],
            with: &[],
        },
        Scenario {
            name: "haproxy-down",
            what: "stop HAProxy: the public endpoint is gone though every replica is healthy",
            fault: Fault::Stop("haproxy"),
            expects: vec![expect("AppEndpointDown", "critical", 0, 0)],
            inhibited: vec![Inhibited {
                alert: "PrometheusTargetDown",
                labels: &[("job", "haproxy")],
                by: "AppEndpointDown",
            }],
            clear_on: ClearOn::Delivered,
            // The Postgres drills that follow postgres-down do not use the API; the ones before it do.
            after: &[
                "postgres-down",
                "app-metrics-absent",
                "alertmanager-peer-down",
                "replica-unreachable",
            ],
            after_resolved: &[],
            with: &[],
        },
        Scenario {
            name: "haproxy-cut-off",
            what: "cut HAProxy off from every replica (nftables): the replicas run, HAProxy has no healthy server",
            fault: Fault::CutOff(&[0, 1]),
            expects: vec![expect("HAProxyBackendNoHealthyServer", "critical", 0, 0)],
            inhibited: vec![
                Inhibited {
                    alert: "AppEndpointDown",
                    labels: NO_LABELS,
                    by: "HAProxyBackendNoHealthyServer",
                },
                Inhibited {
                    alert: "HAProxyServerDown",
                    labels: NO_LABELS,
                    by: "HAProxyBackendNoHealthyServer",
                },
            ],
            clear_on: ClearOn::Delivered,
            after: &["haproxy-down"],
            after_resolved: &[],
            with: &[],
        },
        Scenario {
            name: "app-connections",
            what: "hold 88% of the app's API connection limit (read from Prometheus) open with keep-alive \
                   connections, each sending GET /healthcheck every 30 s; then fill the rest (proof: connections past \
                   the limit get 503 and are counted, /metrics still answers)",
            fault: Fault::AppConnections,
            expects: vec![expect("AppConnectionsNearLimit", "warning", 0, 0)],
            inhibited: vec![],
            clear_on: ClearOn::Delivered,
            // Not beside the drills that take the app's metrics away (its alert would lose its data) or restart
            // it (its connections would go), nor beside a proof that counts failed requests: at the bound, every
            // new connection is refused, whoever opens it. The Postgres drills do not use the API.
            after: &["app-metrics-absent", "postgres-down"],
            after_resolved: &[],
            with: &[],
        },
        // --- the Postgres cluster, one member at a time, each under write load to app-1's own API (HAProxy's drills
        // --- run beside them). The failovers break every Postgres session and fail reads for seconds: not beside
        // --- the other Postgres drills, the drills that fill or stop the app, or Redis down (its reads go to Postgres).
        Scenario {
            name: "postgres-leader-killed",
            what: "SIGKILL the leading member's postmaster under write load (proof: no acknowledged write is lost; \
                   how long writes stopped)",
            fault: Fault::KillLeaderPostmaster,
            // Patroni finds its Postgres gone within a loop (5 s), starts it again and promotes it (it still holds
            // the leader key): a new timeline. The change leaves the rule's 2m window 2 minutes later.
            expects: vec![expect("PatroniLeaderChanged", "warning", 15, 120)],
            inhibited: vec![],
            clear_on: ClearOn::Delivered,
            after: &CLUSTER_DRILLS_AFTER,
            // Once postgres-down's restart has elected a leader (its promotion fires PatroniLeaderChanged, which
            // this drill then waits out).
            after_resolved: &["postgres-down"],
            with: &[],
        },
        Scenario {
            name: "postgres-sync-standby-stopped",
            what: "stop the synchronous standby (Patroni and Postgres) under write load (proof: no acknowledged \
                   write is lost; how long writes stopped while the leader took the other standby as synchronous)",
            fault: Fault::StopSyncStandby,
            expects: vec![expect("PostgresDown", "warning", 0, 0)],
            inhibited: vec![],
            clear_on: ClearOn::Delivered,
            after: &["postgres-leader-killed"],
            after_resolved: &[],
            with: &[],
        },
        Scenario {
            name: "postgres-leader-stopped",
            what: "stop the leading member (Patroni and Postgres) under write load: the synchronous standby takes \
                   over (proof: no acknowledged write is lost; how long writes stopped)",
            fault: Fault::StopLeader,
            expects: vec![
                // Its window (2 minutes) outlasts PostgresDown's `for`, so it resolves after the fault's removal.
                expect("PatroniLeaderChanged", "warning", 15, 120),
                expect("PostgresDown", "warning", 0, 0),
            ],
            inhibited: vec![],
            clear_on: ClearOn::Delivered,
            after: &["postgres-sync-standby-stopped"],
            // A promotion while another drill's PatroniLeaderChanged fires would hold that one open.
            after_resolved: &["postgres-leader-killed"],
            with: &[],
        },
        Scenario {
            name: "postgres-leader-partitioned",
            what: "cut the leading member off from etcd and the other members with nftables under write load (the \
                   app still reaches it): it demotes itself, the synchronous standby takes over (proof: no \
                   acknowledged write is lost, none acknowledged by the cut member; how long writes stopped)",
            fault: Fault::PartitionLeader,
            // The standby promotes once the leader key expires (ttl 20 s after the cut leader's last renewal).
            expects: vec![expect("PatroniLeaderChanged", "warning", 35, 120)],
            inhibited: vec![],
            clear_on: ClearOn::Delivered,
            after: &["postgres-leader-stopped"],
            after_resolved: &["postgres-leader-stopped"],
            with: &[],
        },
        Scenario {
            name: "etcd-member-down",
            what: "stop etcd member 1 under write load (proof: no write fails)",
            fault: Fault::StopEtcdMember("etcd:etcd-1"),
            expects: vec![Expect {
                labels: &[("host", "etcd-1")],
                ..expect("EtcdMemberDown", "warning", 0, 0)
            }],
            inhibited: vec![],
            clear_on: ClearOn::Delivered,
            // Beside redis-down (reads only) and the Alertmanager partition: no failover, writes go on.
            after: &[CLUSTER_DRILLS_LAST],
            after_resolved: &[],
            with: &[],
        },
        Scenario {
            name: "postgres-replica-lagging",
            what: "stop WAL replay on the asynchronous standby (SIGSTOP to its startup process) and switch the \
                   leader's WAL segments until it is 32 MiB behind (proof: once replay goes on, it catches up)",
            fault: Fault::StopReplay,
            // The lag shows at the next scrape of Patroni's metrics once the WAL switches are done (the ramp: the
            // wait for a whole cluster and the switches count on top of the bound).
            expects: vec![Expect {
                after_ramp: true,
                ..expect("PostgresReplicationLagHigh", "warning", 10, 10)
            }],
            inhibited: vec![],
            clear_on: ClearOn::Delivered,
            // Writes are not touched, so it runs beside the drills after the cluster's, once the last failover has
            // ended and its cut member is a standby again.
            after: &["etcd-member-down"],
            after_resolved: &[CLUSTER_DRILLS_LAST],
            with: &[],
        },
        Scenario {
            name: "redis-down",
            what: "stop Redis under read load (proof: no read of an existing key fails)",
            fault: Fault::RedisDown,
            expects: vec![expect("RedisDown", "critical", 0, 0)],
            inhibited: vec![Inhibited {
                alert: "AppCacheErrors",
                labels: NO_LABELS,
                by: "RedisDown",
            }],
            clear_on: ClearOn::Delivered,
            after: &[
                "app-metrics-absent",
                "postgres-down",
                "redis-maxmemory",
                "redis-clients",
                "app-connections",
                "haproxy-cut-off",
                CLUSTER_DRILLS_LAST,
            ],
            after_resolved: &[],
            with: &[],
        },
        Scenario {
            name: "alertmanager-partition",
            what: "cut Alertmanager peer 3 off from the other two with nftables while Redis is down (proof: the \
                   page arrives at least once; duplicates counted)",
            fault: Fault::Partition(2),
            // No alert is required: the cut is asymmetric (the peer still reaches the others), and every push-pull
            // (1m) it briefly rejoins their view, so AlertmanagerMembersInconsistent (for 1m15s) stays pending.
            // What the drill proves is delivery: the page arrives, duplicates are counted.
            expects: vec![],
            inhibited: vec![],
            clear_on: ClearOn::Delivered,
            // Beside redis-down, which pages: the same predecessors.
            after: &[
                "app-metrics-absent",
                "postgres-down",
                "redis-maxmemory",
                "redis-clients",
                "app-connections",
                "haproxy-cut-off",
                CLUSTER_DRILLS_LAST,
            ],
            after_resolved: &[],
            with: &[],
        },
        Scenario {
            name: "app-down",
            what: "stop every app replica",
            fault: Fault::Stop("app:*"),
            expects: vec![expect("AppTargetDown", "critical", 0, 0)],
            inhibited: vec![
                Inhibited {
                    alert: "PrometheusTargetDown",
                    labels: &[("job", "app")],
                    by: "AppTargetDown",
                },
                Inhibited {
                    alert: "AppEndpointDown",
                    labels: NO_LABELS,
                    by: "AppTargetDown",
                },
                Inhibited {
                    alert: "AppInstanceDown",
                    labels: NO_LABELS,
                    by: "AppTargetDown",
                },
            ],
            clear_on: ClearOn::Delivered,
            after: &["redis-down", "alertmanager-partition", "etcd-member-down"],
            after_resolved: &[],
            with: &[],
        },
        Scenario {
            name: "prometheus-replica-down",
            what: "stop Prometheus replica 2 while every app replica is down (proof: the page arrives exactly once)",
            fault: Fault::StopMonitoring("prometheus:prometheus-2"),
            expects: vec![Expect {
                labels: &[("job", "prometheus"), ("host", "prometheus-2")],
                ..expect("PrometheusTargetDown", "warning", 0, 0)
            }],
            inhibited: vec![],
            clear_on: ClearOn::Delivered,
            after: &["redis-down", "alertmanager-partition"],
            after_resolved: &[],
            with: &[],
        },
        Scenario {
            name: "alertmanager-majority-down",
            what: "stop Alertmanager peers 1 and 2 of 3: the last one pages that the cluster is down (proof: \
                   exactly once)",
            fault: Fault::StopMonitoring("alertmanager:alertmanager-1 alertmanager:alertmanager-2"),
            expects: vec![expect("AlertmanagerClusterDown", "critical", 0, 0)],
            inhibited: vec![Inhibited {
                alert: "AlertmanagerMembersInconsistent",
                labels: NO_LABELS,
                by: "AlertmanagerClusterDown",
            }],
            clear_on: ClearOn::Delivered,
            // AlertmanagerMembersInconsistent of the peer-down drill must have resolved at the inbox: its last
            // notifications would count as delivered despite the inhibition. After the drills that prove
            // exactly-once delivery: the two restarted peers notify the cluster's page again while they rejoin
            // (measured: two more firing notifications of AlertmanagerClusterDown within 35 s).
            after: &["app-down", "prometheus-replica-down"],
            after_resolved: &["alertmanager-peer-down"],
            with: &[],
        },
        // --- last, the faults that spend error budget or saturate the app, whose alerts stay longest.
        Scenario {
            name: "slo-burn",
            what: "app fault injection: 400 ms on every API response and 50% then 5% errors, with extra load sized \
                   from the last hour's traffic until the 1h ratios cross 14.4x; then healthy traffic sized to clear \
                   the 30m window",
            fault: Fault::SloBurn,
            expects: vec![
                // Both are true once the ramp is over. They clear when the 6x leg's 30m ratio falls under 6x: at
                // most 30 minutes after the fault, sooner with the drill's healthy traffic.
                Expect {
                    after_ramp: true,
                    ..expect("AppLatencyBudgetBurn", "critical", 0, 1800)
                },
                Expect {
                    after_ramp: true,
                    ..expect("AppAvailabilityBudgetBurn", "critical", 0, 1800)
                },
                expect("AppFaultInjectionActive", "info", 0, 0),
            ],
            inhibited: vec![],
            clear_on: ClearOn::Delivered,
            after: &["app-down", "prometheus-replica-down"],
            after_resolved: &[],
            with: &[],
        },
        Scenario {
            name: "redis-acl",
            what: "deny the app's Redis user the GET command (reads fall back to Postgres)",
            fault: Fault::RedisDenyGet,
            expects: vec![expect("AppCacheErrors", "warning", 0, 300)],
            inhibited: vec![],
            clear_on: ClearOn::Delivered,
            after: &["slo-burn"],
            after_resolved: &[],
            with: &[],
        },
        Scenario {
            name: "cache-misses",
            what: "read keys that do not exist at 60/s: the cache hit ratio falls",
            fault: Fault::CacheMisses,
            // The 5m ratio falls under 50% once misses outnumber the hits already in its window.
            expects: vec![expect("AppCacheHitRatioLow", "warning", 60, 300)],
            inhibited: vec![],
            clear_on: ClearOn::Delivered,
            after: &["redis-acl"],
            after_resolved: &[],
            with: &[],
        },
        Scenario {
            name: "pool-exhaustion",
            what: "lock 40 keys' rows in Postgres in 0.7 s bursts while a client writes each: the app's 10 \
                   Postgres connections wait on the locks, other queries time out acquiring one",
            fault: Fault::PoolExhaustion,
            expects: vec![
                Expect {
                    // The rule reads a 1m average of the used connections: it reaches 90% about a minute in, and
                    // falls under once a couple of the minute's scrapes see the pool idle.
                    labels: &[("pool_name", "postgres")],
                    ..expect("AppDbPoolSaturated", "warning", 60, 15)
                },
                Expect {
                    labels: &[("pool_name", "postgres")],
                    ..expect("AppDbPoolTimeouts", "warning", 0, 300)
                },
            ],
            inhibited: vec![],
            clear_on: ClearOn::Delivered,
            // Beside cache-misses (its misses read Postgres: the pool only saturates sooner, the hit ratio falls
            // all the same), but not while redis-acl sends every read to Postgres.
            after: &["redis-acl"],
            after_resolved: &["slo-burn"],
            with: &[],
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;

    #[derive(serde::Deserialize)]
    struct RuleFile {
        groups: Vec<Group>,
    }

    #[derive(serde::Deserialize)]
    struct Group {
        rules: Vec<RuleEntry>,
    }

    #[derive(serde::Deserialize)]
    struct RuleEntry {
        alert: Option<String>,
        #[serde(default)]
        labels: std::collections::BTreeMap<String, String>,
    }

    /// (alert, severity) of every alerting rule in the repository's `alerts/`, parsed.
    fn shipped_alerts() -> BTreeSet<(String, String)> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../alerts");
        let mut found = BTreeSet::new();
        for entry in std::fs::read_dir(&dir).expect("alerts/ exists") {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "yml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let file: RuleFile = serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            for rule in file.groups.into_iter().flat_map(|g| g.rules) {
                if let Some(alert) = rule.alert {
                    found.insert((alert, rule.labels.get("severity").cloned().unwrap_or_default()));
                }
            }
        }
        assert!(found.len() > 20, "too few alerts in {}: {found:?}", dir.display());
        found
    }

    #[test]
    fn every_shipped_alert_has_a_scenario_or_a_reason() {
        let mut covered = BTreeSet::new();
        for s in scenarios() {
            for e in &s.expects {
                covered.insert((e.alert.to_string(), e.severity.to_string()));
            }
        }
        let listed: BTreeSet<_> = NOT_LIVE
            .iter()
            .map(|n| (n.alert.to_string(), n.severity.to_string()))
            .collect();
        let shipped = shipped_alerts();
        let missing: Vec<_> = shipped
            .iter()
            .filter(|a| !covered.contains(*a) && !listed.contains(*a))
            .collect();
        assert!(
            missing.is_empty(),
            "alerts with neither a scenario nor a reason: {missing:?}"
        );
        let unknown: Vec<_> = covered.union(&listed).filter(|a| !shipped.contains(*a)).collect();
        assert!(
            unknown.is_empty(),
            "the catalog names alerts alerts/ does not ship: {unknown:?}"
        );
        let both: Vec<_> = covered.intersection(&listed).collect();
        assert!(both.is_empty(), "both covered and listed as not live: {both:?}");
    }

    /// A scenario that starts only after the SLO drill's fault is removed (it waits for it, directly or through
    /// another) runs while that drill waits for its page to resolve, unless it waits for the drill to end.
    #[test]
    fn no_fault_that_answers_5xx_runs_while_the_slo_drill_recovers() {
        let all = scenarios();
        let by_name: BTreeMap<_, _> = all.iter().map(|s| (s.name, s)).collect();
        // Every scenario reachable from `name` through `after` alone (not through `after_resolved`).
        fn waits_only_for_removal<'a>(name: &str, target: &str, by_name: &BTreeMap<&'a str, &'a Scenario>) -> bool {
            let s = by_name[name];
            if s.after_resolved
                .iter()
                .any(|d| *d == target || waits_ended(d, target, by_name))
            {
                return false;
            }
            s.after
                .iter()
                .any(|d| *d == target || waits_only_for_removal(d, target, by_name))
        }
        fn waits_ended<'a>(name: &str, target: &str, by_name: &BTreeMap<&'a str, &'a Scenario>) -> bool {
            let s = by_name[name];
            s.after_resolved.contains(&target)
                || s.after
                    .iter()
                    .chain(s.after_resolved)
                    .any(|d| waits_ended(d, target, by_name))
        }
        let slo = all
            .iter()
            .find(|s| s.fault.dilutes_standing_slo_pages())
            .expect("an SLO drill");
        for s in &all {
            if s.name != slo.name && s.fault.answers_api_errors() {
                assert!(
                    !waits_only_for_removal(s.name, slo.name, &by_name),
                    "{} answers 5xx and starts while {} may still be waiting for its page to resolve: list {} in \
                     its after_resolved",
                    s.name,
                    slo.name,
                    slo.name
                );
            }
        }
    }

    /// A drill that stops Alertmanager peers judges the pages of faults that begin while it holds: unless it pages
    /// itself, a page-producing scenario must start `with` it (seen: started only by `after`, postgres-down paged
    /// before the peer was stopped, and the drill had nothing to judge).
    #[test]
    fn a_drill_that_stops_a_peer_has_a_page_that_starts_with_it() {
        let all = scenarios();
        let pages = |s: &Scenario| s.expects.iter().any(|e| e.severity == "critical");
        for drill in &all {
            let Fault::StopMonitoring(program) = drill.fault else {
                continue;
            };
            if !program.starts_with("alertmanager:") || pages(drill) {
                continue;
            }
            assert!(
                all.iter().any(|s| s.with.contains(&drill.name) && pages(s)),
                "no page-producing scenario starts with {}",
                drill.name
            );
        }
    }

    #[test]
    fn scenarios_are_named_once_and_wait_only_for_earlier_ones() {
        let mut seen = BTreeSet::new();
        for s in scenarios() {
            for dep in s.after.iter().chain(s.after_resolved).chain(s.with) {
                assert!(
                    seen.contains(dep),
                    "{} waits for {dep}, which is not an earlier scenario",
                    s.name
                );
            }
            assert!(seen.insert(s.name), "{} twice", s.name);
            for i in &s.inhibited {
                assert!(
                    s.expects.iter().any(|e| e.alert == i.by),
                    "{}: {} is not expected",
                    s.name,
                    i.by
                );
            }
        }
    }
}
