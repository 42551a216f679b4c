//! Faults of the Postgres cluster (Patroni on every member, etcd as its DCS), each under write load through the
//! app: the leader's postmaster killed, the leader stopped, the leader partitioned, the synchronous standby
//! stopped, an etcd member stopped. Each proves that no acknowledged write is lost and reports how long writes
//! stopped.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::time::sleep;

use super::{nft, Handle, Phase};
use crate::gameday::error::Error;
use crate::gameday::proofs::{Proof, Writers};
use crate::gameday::stack::{host_of, now_ms, Ctx};

/// The write rate of the drills' writers (requests/s over four clients).
const WRITE_RATE: f64 = 20.0;

/// The drills' writers: to the first app replica's own API, not through HAProxy, whose drills run beside these.
fn writers(ctx: &Arc<Ctx>) -> Writers {
    let base = ctx
        .args
        .replica_api
        .first()
        .cloned()
        .unwrap_or_else(|| ctx.args.app.clone());
    Writers::start_at(ctx.clone(), WRITE_RATE, base)
}

/// A member's role, as its Patroni answers: `/primary` is 200 on the leader only, `/sync` on the synchronous
/// standby only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    Leader,
    SyncStandby,
}

impl Role {
    fn path(self) -> &'static str {
        match self {
            Role::Leader => "primary",
            Role::SyncStandby => "sync",
        }
    }
}

/// Whether member `i` (0-based) answers that it is in `role`.
pub(super) async fn is(ctx: &Ctx, i: usize, role: Role) -> bool {
    let url = format!("{}/{}", ctx.args.patroni[i].trim_end_matches('/'), role.path());
    match ctx.http.get(&url).timeout(Duration::from_secs(2)).send().await {
        Ok(r) => r.status().is_success(),
        Err(_) => false,
    }
}

/// The member (0-based) in `role`, if one answers so.
async fn member(ctx: &Ctx, role: Role) -> Option<usize> {
    for i in 0..ctx.args.patroni.len() {
        if is(ctx, i, role).await {
            return Some(i);
        }
    }
    None
}

/// Waits (bounded) until a member is in `role`; the error names what did not happen.
pub(super) async fn wait_member(ctx: &Ctx, role: Role, within: Duration) -> Result<usize, Error> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(i) = member(ctx, role).await {
            return Ok(i);
        }
        if Instant::now() >= deadline {
            return Err(Error::Cluster(format!(
                "no Postgres member answered /{} within {}s",
                role.path(),
                within.as_secs()
            )));
        }
        sleep(Duration::from_millis(500)).await;
    }
}

/// Waits (bounded) until every member runs (Patroni's `/health`: Postgres up, leading or streaming) and the
/// leader has its synchronous standby: each drill starts from a whole cluster, whatever the one before left.
pub(super) async fn wait_whole(ctx: &Ctx) -> Result<(), Error> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut running = 0;
        for url in &ctx.args.patroni {
            let url = format!("{}/health", url.trim_end_matches('/'));
            if let Ok(r) = ctx.http.get(&url).timeout(Duration::from_secs(2)).send().await {
                running += usize::from(r.status().is_success());
            }
        }
        if running == ctx.args.patroni.len() && member(ctx, Role::SyncStandby).await.is_some() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Error::Cluster(format!(
                "{running} of {} members running, or no synchronous standby, after 120 s",
                ctx.args.patroni.len()
            )));
        }
        sleep(Duration::from_millis(500)).await;
    }
}

/// The supervisor's name of member `i` (0-based): `postgres:postgres-1` ...
fn program(i: usize) -> String {
    format!("postgres:postgres-{}", i + 1)
}

/// SIGKILL to the leader's postmaster (its pid is the first line of postmaster.pid) under write load; Patroni
/// finds its Postgres gone and starts it again, or a standby takes the lead. Over once the cluster has a leader
/// again.
pub(super) async fn kill_leader_postmaster(h: &mut Handle) -> Result<Vec<Proof>, Error> {
    let ctx = h.ctx.clone();
    wait_whole(&ctx).await?;
    let leader = wait_member(&ctx, Role::Leader, Duration::from_secs(60)).await?;
    let writers = writers(&ctx);
    sleep(Duration::from_secs(3)).await;
    let pid_file = ctx
        .args
        .state_dir
        .join(format!("postgres-{}", leader + 1))
        .join("data/postmaster.pid");
    let text = tokio::fs::read_to_string(&pid_file)
        .await
        .map_err(|e| Error::Cluster(format!("read {}: {e}", pid_file.display())))?;
    let pid: i32 = text
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .ok_or_else(|| Error::Cluster(format!("{} names no pid", pid_file.display())))?;
    super::signal(
        pid,
        libc::SIGKILL,
        &format!("the postmaster of postgres-{}", leader + 1),
    )?;
    ctx.say(&format!("killed the postmaster of postgres-{} (pid {pid})", leader + 1));
    h.ready();
    h.until(Phase::Clear).await;
    let removed = now_ms();
    let after = wait_member(&ctx, Role::Leader, Duration::from_secs(60)).await?;
    // Keep writing once a leader is back, so the proof covers writes after the failover too.
    sleep(Duration::from_secs(10)).await;
    let proof = writers
        .stop_failover(format!(
            "the leader's postmaster (postgres-{}) killed (SIGKILL) under write load: every acknowledged write is \
             on the leader afterwards (postgres-{})",
            leader + 1,
            after + 1
        ))
        .await;
    h.cleared(Ok(removed));
    Ok(vec![proof])
}

/// Stops the member in `role` (Patroni and its Postgres) under write load, keeps it down, then starts it again
/// (it rejoins as a standby, rewound if it needs to be).
pub(super) async fn stop_member(h: &mut Handle, leader: bool) -> Result<Vec<Proof>, Error> {
    let ctx = h.ctx.clone();
    let role = if leader { Role::Leader } else { Role::SyncStandby };
    wait_whole(&ctx).await?;
    let stopped = wait_member(&ctx, role, Duration::from_secs(60)).await?;
    let writers = writers(&ctx);
    sleep(Duration::from_secs(3)).await;
    ctx.supervisor("stop", &program(stopped)).await?;
    h.ready();
    h.until(Phase::Clear).await;
    ctx.supervisor("start", &program(stopped)).await?;
    let removed = now_ms();
    let after = wait_member(&ctx, Role::Leader, Duration::from_secs(60)).await?;
    // A leader again, with a synchronous standby (the next drill waits for the restarted member itself).
    wait_member(&ctx, Role::SyncStandby, Duration::from_secs(90)).await?;
    sleep(Duration::from_secs(5)).await;
    let what = if leader {
        "the leader"
    } else {
        "the synchronous standby"
    };
    let claim = format!(
        "{what} (postgres-{}) stopped under write load and started again: every acknowledged write is on the leader \
         afterwards (postgres-{})",
        stopped + 1,
        after + 1
    );
    // Without its synchronous standby the leader holds each commit until Patroni names the other standby (its
    // next loop): those writes end at the app's statement limit, outcome unknown.
    let mut proof = if leader {
        writers.stop_failover(claim).await
    } else {
        writers.stop_commit_waits(claim).await
    };
    // A stopped leader must have handed over: the same member leading again would prove no failover.
    if leader && after == stopped {
        proof.passed = false;
        proof
            .figures
            .push_str("; but the stopped member leads again: no other member took over");
    }
    h.cleared(Ok(removed));
    Ok(vec![proof])
}

/// Stops etcd member `program` under write load: Patroni carries on with the other two, writes never stop.
pub(super) async fn stop_etcd_member(h: &mut Handle, program: &'static str) -> Result<Vec<Proof>, Error> {
    let ctx = h.ctx.clone();
    let writers = writers(&ctx);
    sleep(Duration::from_secs(3)).await;
    ctx.supervisor("stop", program).await?;
    h.ready();
    h.until(Phase::Clear).await;
    ctx.supervisor("start", program).await?;
    let removed = now_ms();
    sleep(Duration::from_secs(5)).await;
    let proof = writers
        .stop_unharmed(format!(
            "etcd member {program} stopped under write load and started again: no write fails, every acknowledged \
             write is stored"
        ))
        .await;
    h.cleared(Ok(removed));
    Ok(vec![proof])
}

/// The nftables table of the leader's partition: its own, as HAProxy's cut-off may run meanwhile.
const PARTITION_TABLE: &str = "sre_stack_gameday_postgres";

/// Where nftables resolves a `socket cgroupv2` path.
const NFT_CGROUP_BASE: &str = "/sys/fs/cgroup";

/// One Postgres member as the partition sees it: its host address, and its cgroup as nftables names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberHost {
    pub address: String,
    /// The cgroup's path under /sys/fs/cgroup.
    pub cgroup: String,
    /// The cgroup's depth in the cgroup2 hierarchy, from its root (`socket cgroupv2 level N` compares the socket's
    /// ancestor at that depth).
    pub level: usize,
}

/// `dir`'s path under /sys/fs/cgroup and its depth in the cgroup2 hierarchy, from /proc/self/mountinfo's text:
/// the depth below the mount plus that of the subtree the mount shows (field 4, `/` unless a subtree is bind
/// mounted). `None` when no cgroup2 mount holds `dir` or nftables cannot name it. (Inside a cgroup namespace a
/// kernel before 6.11 counts from the host's root instead: the drill's dropped-packet count then says nothing
/// was cut.)
pub fn nft_cgroup(mountinfo: &str, dir: &Path) -> Option<(String, usize)> {
    let (root, mount) = mountinfo
        .lines()
        .filter_map(|line| {
            let (mount, fs) = line.split_once(" - ")?;
            if fs.split_whitespace().next()? != "cgroup2" {
                return None;
            }
            let mut fields = mount.split_whitespace();
            let root = fields.nth(3)?;
            Some((Path::new(root), Path::new(fields.next()?)))
        })
        .filter(|(_, point)| dir.starts_with(point))
        .max_by_key(|(_, point)| point.components().count())?;
    let below = |p: &Path, base: &str| p.strip_prefix(base).ok().map(|r| r.components().count());
    let level = below(root, "/")? + below(dir, mount.to_str()?)?;
    let under = dir.strip_prefix(NFT_CGROUP_BASE).ok()?;
    Some((under.to_str()?.to_owned(), level))
}

/// Each member's address (from its Patroni URL) and cgroup; an error if a member's cgroup holds no process (its
/// Patroni was started outside it, and the partition would cut nothing).
fn member_hosts(ctx: &Ctx) -> Result<Vec<MemberHost>, Error> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| Error::Cluster(format!("read /proc/self/mountinfo: {e}")))?;
    let mut hosts = Vec::new();
    for (i, url) in ctx.args.patroni.iter().enumerate() {
        let address = host_of(url)?;
        let dir = ctx.args.host_cgroups.join(format!("postgres-{}", i + 1));
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        if procs.trim().is_empty() {
            return Err(Error::Cluster(format!(
                "{} holds no process: postgres-{} runs outside its cgroup (native/env.sh's HOST_CGROUPS; `make down` \
                 and `make up` start it there)",
                dir.display(),
                i + 1
            )));
        }
        let (cgroup, level) = nft_cgroup(&mounts, &dir).ok_or_else(|| {
            Error::Cluster(format!(
                "{} is not in a cgroup2 hierarchy under {NFT_CGROUP_BASE}",
                dir.display()
            ))
        })?;
        hosts.push(MemberHost { address, cgroup, level });
    }
    Ok(hosts)
}

/// The nftables script that partitions member `cut` from every etcd member and the other Postgres members, both
/// ways: nothing its processes send reaches them, nothing they send reaches its processes. Each rule counts what
/// it drops (the drill reports the sum: a cut that matched nothing would show 0). Packets are told by the
/// sending or receiving socket's cgroup (on one machine every member dials from 127.0.0.1): the app, Prometheus and
/// the game day are in none of these cgroups and still reach every member.
pub fn partition_rules(hosts: &[MemberHost], cut: usize, etcd: &[String]) -> String {
    let me = &hosts[cut];
    let group = |h: &MemberHost| format!("socket cgroupv2 level {} \"{}\"", h.level, h.cgroup);
    let apart: Vec<&str> = etcd
        .iter()
        .map(String::as_str)
        .chain(
            hosts
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != cut)
                .map(|(_, h)| h.address.as_str()),
        )
        .collect();
    let apart = apart.join(", ");
    let (mut output, mut input) = (
        format!("    {} ip daddr {{ {apart} }} counter drop\n", group(me)),
        format!("    {} ip saddr {{ {apart} }} counter drop\n", group(me)),
    );
    for (_, other) in hosts.iter().enumerate().filter(|(i, _)| *i != cut) {
        output.push_str(&format!("    {} ip daddr {} counter drop\n", group(other), me.address));
        input.push_str(&format!("    {} ip saddr {} counter drop\n", group(other), me.address));
    }
    // The first two lines replace a table an interrupted game day left behind, in the same atomic load.
    format!(
        "table inet {PARTITION_TABLE}\ndelete table inet {PARTITION_TABLE}\ntable inet {PARTITION_TABLE} {{\n  chain output {{\n    type filter hook output priority 0; policy accept;\n\
         {output}  }}\n  chain input {{\n    type filter hook input priority 0; policy accept;\n{input}  }}\n}}\n"
    )
}

/// A session on member `i`'s own Postgres (its address from its Patroni URL), as the game day's Postgres user,
/// whatever its role.
pub(super) fn member_session(ctx: &Ctx, i: usize) -> Result<tokio_postgres::Config, Error> {
    let host = host_of(&ctx.args.patroni[i])?;
    let mut pg = tokio_postgres::Config::new();
    pg.host(&host)
        .port(ctx.pg.get_ports().first().copied().unwrap_or(5432))
        .dbname(ctx.pg.get_dbname().unwrap_or("postgres"))
        .connect_timeout(Duration::from_secs(1));
    if let Some(user) = ctx.pg.get_user() {
        pg.user(user);
    }
    if let Some(password) = ctx.pg.get_password() {
        pg.password(password);
    }
    Ok(pg)
}

/// Whether member `i`'s Postgres takes a session that can write (it accepts the connection and is not in
/// recovery), asked on the member's own address as the game day's Postgres user. Patroni's `/primary` is no
/// measure here: it answers from Patroni's view, which lags a demotion by seconds.
async fn writable(ctx: &Ctx, i: usize) -> bool {
    let Ok(pg) = member_session(ctx, i) else {
        return false;
    };
    let ask = async {
        let (client, connection) = pg.connect(tokio_postgres::NoTls).await.ok()?;
        tokio::spawn(connection);
        let row = client.query_one("SELECT pg_is_in_recovery()", &[]).await.ok()?;
        Some(!row.get::<_, bool>(0))
    };
    matches!(tokio::time::timeout(Duration::from_secs(2), ask).await, Ok(Some(true)))
}

/// What a client outside the partition saw of the failover, asking every member's Postgres.
#[derive(Debug, Default)]
struct Failover {
    /// When the cut member stopped taking sessions that can write.
    demoted: Option<Duration>,
    /// Which member took writes next, and when it first did.
    elected: Option<(usize, Duration)>,
    /// Polls at which the cut member and another both took sessions that can write.
    two_writable: u32,
}

/// Polls (bounded) until the cut member has stopped taking writes and another takes them. A cut member that takes
/// writes again (one refused connection was not its demotion) is not demoted yet.
async fn watch_failover(ctx: &Ctx, cut: usize, since: Instant, within: Duration) -> Failover {
    let mut seen = Failover::default();
    while since.elapsed() < within && (seen.demoted.is_none() || seen.elected.is_none()) {
        let old = writable(ctx, cut).await;
        if old {
            seen.demoted = None;
        } else {
            seen.demoted.get_or_insert(since.elapsed());
        }
        let mut others = 0;
        for i in (0..ctx.args.patroni.len()).filter(|&i| i != cut) {
            if writable(ctx, i).await {
                others += 1;
                seen.elected.get_or_insert((i, since.elapsed()));
            }
        }
        seen.two_writable += u32::from(old && others > 0);
        sleep(Duration::from_millis(250)).await;
    }
    seen
}

/// Partitions the leader from etcd and the other members under write load (the app still reaches it). It cannot
/// renew its leader key, so it must demote itself within retry_timeout, before the key expires (ttl) and the
/// synchronous standby takes over; meanwhile its commits wait for a standby they cannot reach. Healed to clear: it
/// rejoins as a standby, rewound if it needs to be.
pub(super) async fn partition_leader(h: &mut Handle) -> Result<Vec<Proof>, Error> {
    let ctx = h.ctx.clone();
    wait_whole(&ctx).await?;
    let leader = wait_member(&ctx, Role::Leader, Duration::from_secs(60)).await?;
    let hosts = member_hosts(&ctx)?;
    let etcd = ctx
        .args
        .etcd
        .iter()
        .map(|u| host_of(u))
        .collect::<Result<Vec<_>, _>>()?;
    // The watcher below reads "not writable" as demoted: it must see the leader writable first.
    if !writable(&ctx, leader).await {
        return Err(Error::Cluster(format!(
            "postgres-{} leads, but a session of the game day's Postgres user there is refused or read-only",
            leader + 1
        )));
    }
    let writers = writers(&ctx);
    sleep(Duration::from_secs(3)).await;
    nft::load(&partition_rules(&hosts, leader, &etcd)).await?;
    let cut_at = Instant::now();
    ctx.say(&format!(
        "partition: postgres-{} (the leader) cut off from etcd and the other members",
        leader + 1
    ));
    h.ready();
    let seen = watch_failover(&ctx, leader, cut_at, Duration::from_secs(90)).await;
    h.until(Phase::Clear).await;
    let dropped = nft::counted(PARTITION_TABLE).await;
    // Healed on every path; an error after this stops the writers too (they stop when dropped).
    nft::load(&format!("delete table inet {PARTITION_TABLE}\n")).await?;
    let dropped = dropped?;
    let removed = now_ms();
    ctx.say("partition: healed");
    let after = wait_member(&ctx, Role::Leader, Duration::from_secs(60)).await?;
    wait_member(&ctx, Role::SyncStandby, Duration::from_secs(90)).await?;
    sleep(Duration::from_secs(5)).await;
    let secs = |d: Option<Duration>| d.map_or("never (90 s)".to_owned(), |d| format!("{:.1} s", d.as_secs_f64()));
    let mut proof = writers
        .stop_commit_waits(format!(
            "the leader (postgres-{}) partitioned from etcd and the other members under write load: it demotes \
             itself before another member leads, and every acknowledged write is on the leader afterwards \
             (postgres-{}; a write only the cut member held would have been rewound away)",
            leader + 1,
            after + 1
        ))
        .await;
    proof.figures.push_str(&format!(
        "; after the cut, postgres-{} stopped taking writes at {}, postgres-{} took them at {}; polls with two \
         writable members: {}; packets the partition dropped: {dropped}",
        leader + 1,
        secs(seen.demoted),
        seen.elected.map_or("none".to_owned(), |(i, _)| (i + 1).to_string()),
        secs(seen.elected.map(|(_, d)| d)),
        seen.two_writable
    ));
    let in_order = matches!((seen.demoted, seen.elected), (Some(d), Some((_, e))) if d <= e);
    if !in_order || seen.two_writable > 0 || dropped == 0 {
        proof.passed = false;
    }
    h.cleared(Ok(removed));
    Ok(vec![proof])
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "30 1 0:26 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n\
                             31 30 0:27 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n\
                             35 30 0:31 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";

    #[test]
    fn a_cgroup_is_named_under_sys_fs_cgroup_with_its_depth_in_the_hierarchy() {
        let dir = Path::new("/sys/fs/cgroup/unified/sre-stack/postgres-2");
        assert_eq!(
            nft_cgroup(MOUNTINFO, dir),
            Some(("unified/sre-stack/postgres-2".to_owned(), 2))
        );
        let pure = "35 1 0:31 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw\n";
        assert_eq!(
            nft_cgroup(pure, Path::new("/sys/fs/cgroup/sre-stack/postgres-1")),
            Some(("sre-stack/postgres-1".to_owned(), 2))
        );
        // A bind-mounted subtree: its own depth counts too.
        let subtree = "35 1 0:31 /ci/job-7 /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            nft_cgroup(subtree, Path::new("/sys/fs/cgroup/sre-stack/postgres-1")),
            Some(("sre-stack/postgres-1".to_owned(), 4))
        );
        // Not in a cgroup2 hierarchy (a v1 controller's), or none mounted.
        assert_eq!(nft_cgroup(MOUNTINFO, Path::new("/sys/fs/cgroup/cpu/x")), None);
        assert_eq!(nft_cgroup("", dir), None);
    }

    #[test]
    fn the_partition_cuts_the_member_off_both_ways_by_cgroup() {
        let hosts: Vec<MemberHost> = (1..=3)
            .map(|i| MemberHost {
                address: format!("127.0.5.{i}"),
                cgroup: format!("unified/sre-stack/postgres-{i}"),
                level: 2,
            })
            .collect();
        let etcd = vec!["127.0.4.1".to_owned(), "127.0.4.2".to_owned()];
        let rules = partition_rules(&hosts, 1, &etcd);
        let g = |i: usize| format!("socket cgroupv2 level 2 \"unified/sre-stack/postgres-{i}\"");
        for line in [
            format!(
                "{} ip daddr {{ 127.0.4.1, 127.0.4.2, 127.0.5.1, 127.0.5.3 }} counter drop",
                g(2)
            ),
            format!(
                "{} ip saddr {{ 127.0.4.1, 127.0.4.2, 127.0.5.1, 127.0.5.3 }} counter drop",
                g(2)
            ),
            format!("{} ip daddr 127.0.5.2 counter drop", g(1)),
            format!("{} ip saddr 127.0.5.2 counter drop", g(3)),
        ] {
            assert!(rules.contains(&line), "{line} missing from:\n{rules}");
        }
        // Nothing else is dropped: the app and Prometheus are in none of these cgroups.
        assert_eq!(rules.matches(" drop").count(), 6, "{rules}");
        assert!(rules.contains(&format!(
            "delete table inet {PARTITION_TABLE}\ntable inet {PARTITION_TABLE} {{"
        )));
    }
}
