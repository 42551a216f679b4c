//! The stack's topology (`monitoring/topology.yml`): its programs, the hosts they run on, their listeners and
//! ports, and Prometheus's scrape jobs. Parsed and validated here for opsctl's defaults and for the generator that
//! writes native/topology.env, compose's targets and prometheus.yml's scrape jobs.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;

use serde::Deserialize;

/// The file, relative to the repository root.
pub const PATH: &str = "monitoring/topology.yml";

/// The declaration as this binary was built with it.
pub const EMBEDDED: &str = include_str!("../../../monitoring/topology.yml");

/// The whole declaration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// Named addresses (`local: 127.0.0.1`); programs refer to them by name.
    pub hosts: BTreeMap<String, IpAddr>,
    /// Every program, in start order.
    pub programs: Vec<Program>,
    /// Where Prometheus sends alerts.
    pub alertmanagers: Alertmanagers,
    /// Prometheus's scrape jobs, in the order of prometheus.yml.
    pub jobs: Vec<Job>,
}

/// One program of the stack (a supervisor program natively, a service in compose).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Program {
    /// The native supervisor's program name.
    pub name: String,
    /// Names of the hosts it runs on (keys of [`Topology::hosts`]); empty for a compose-only or replicated one.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// A replicated program: replicas on hosts of their own instead of `hosts`.
    #[serde(default)]
    pub replicas: Option<Replicas>,
    /// Its compose service, when it differs from `name`.
    #[serde(default)]
    compose: Option<String>,
    /// False for a program only compose runs.
    #[serde(default = "yes")]
    pub native: bool,
    /// False for a program only the native stack runs (the Patroni cluster: compose runs one plain Postgres).
    #[serde(default = "yes")]
    pub in_compose: bool,
    /// Its listeners; the first is the one that says the program is up.
    pub listeners: Vec<Listener>,
}

fn yes() -> bool {
    true
}

/// Replica N (1-based) of a replicated program runs on host `<name>-N` at address `<network>.N`, where `<name>` is
/// the count variable's stem (`app` for `APP_REPLICAS`). Programs that declare the same network and variable run
/// side by side on the same hosts (postgres_exporter beside each Postgres member).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Replicas {
    /// The default number of replicas (compose runs exactly this many, unless `compose_single`).
    pub count: u8,
    /// The first three octets of the replicas' addresses (`127.0.1`).
    pub network: String,
    /// The native/env.sh variable that overrides the count (`APP_REPLICAS`).
    pub env: String,
    /// Compose runs it once, as one service of its plain name (beside compose's single Postgres).
    #[serde(default)]
    pub compose_single: bool,
}

impl Replicas {
    /// The variable natively holding the network (`APP_NETWORK` for `APP_REPLICAS`).
    pub fn network_env(&self) -> String {
        format!("{}_NETWORK", self.stem())
    }

    /// The replicas' host names' prefix: `app` for `APP_REPLICAS`, `postgres` for `POSTGRES_REPLICAS`.
    pub fn host_prefix(&self) -> String {
        self.stem().to_ascii_lowercase().replace('_', "-")
    }

    fn stem(&self) -> &str {
        self.env.trim_end_matches("_REPLICAS")
    }
}

/// One host a program runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// `local`, or `app-2` for replica 2 of the app.
    pub name: String,
    pub address: IpAddr,
}

/// One port a program listens on.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    pub name: String,
    pub port: u16,
    /// The native/env.sh variable that overrides the port (`APP_PORT`); none for a compose-only program.
    #[serde(default)]
    pub env: Option<String>,
    /// Compose publishes it on 127.0.0.1, at the same port.
    #[serde(default)]
    pub published: bool,
}

/// What a target needs from Prometheus to be reached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Auth {
    /// Nothing.
    #[default]
    None,
    /// The web user's basic auth (Prometheus and Alertmanager run with --web.config.file).
    Web,
}

/// Where Prometheus sends alerts: a file_sd file listing one listener of every host of a program.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alertmanagers {
    /// The file_sd file's name, without `.yml`.
    pub targets: String,
    pub program: String,
    pub listener: String,
    #[serde(default)]
    pub auth: Auth,
}

/// One scrape job: a listener of a program, on every host of the program.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Job {
    /// The job label (`up{job="app"}`); also the name of its file_sd file.
    pub name: String,
    pub program: String,
    pub listener: String,
    #[serde(default)]
    pub auth: Auth,
    /// A scrape timeout of its own (`4s`), when the global one does not fit.
    #[serde(default)]
    pub scrape_timeout: Option<String>,
    /// A blackbox job: the listener is the exporter's, asked to probe this.
    #[serde(default)]
    pub probe: Option<Probe>,
    /// What it scrapes, and why it is set up so (comments of the generated files).
    pub about: String,
}

/// What a blackbox exporter job probes: one URL per host of a program's listener.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Probe {
    /// The exporter's module (monitoring/blackbox/blackbox.yml).
    pub module: String,
    pub target: ProbeTarget,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeTarget {
    pub program: String,
    pub listener: String,
    /// The path requested (`/helloworld`).
    pub path: String,
}

/// A declaration that cannot be right.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("{PATH}: {0}")]
    Yaml(String),
    #[error("{PATH}: {0}")]
    Invalid(String),
}

impl Program {
    /// Its compose service: the name other services reach it by.
    pub fn compose_service(&self) -> &str {
        self.compose.as_deref().unwrap_or(&self.name)
    }

    /// Its compose services: its own, or `<service>-N` for each replica.
    pub fn compose_services(&self) -> Vec<String> {
        if !self.in_compose {
            return Vec::new();
        }
        match &self.replicas {
            Some(r) if !r.compose_single => (1..=r.count)
                .map(|n| format!("{}-{n}", self.compose_service()))
                .collect(),
            _ => vec![self.compose_service().to_string()],
        }
    }

    /// The listener called `name`.
    pub fn listener(&self, name: &str) -> Option<&Listener> {
        self.listeners.iter().find(|l| l.name == name)
    }
}

impl Topology {
    /// The declaration embedded in this binary, parsed once. Its validity is a unit test of this crate, so this
    /// cannot fail in a binary whose tests passed.
    pub fn embedded() -> &'static Topology {
        static TOPOLOGY: OnceLock<Topology> = OnceLock::new();
        TOPOLOGY.get_or_init(|| Topology::parse(EMBEDDED).unwrap_or_else(|e| panic!("{e}")))
    }

    /// Parses and validates a declaration.
    pub fn parse(text: &str) -> Result<Topology, Error> {
        let topology: Topology = serde_yaml_ng::from_str(text).map_err(|e| Error::Yaml(e.to_string()))?;
        topology.validate()?;
        Ok(topology)
    }

    pub fn program(&self, name: &str) -> Option<&Program> {
        self.programs.iter().find(|p| p.name == name)
    }

    pub fn job(&self, name: &str) -> Option<&Job> {
        self.jobs.iter().find(|j| j.name == name)
    }

    /// The programs the native supervisor runs, in start order.
    pub fn native_programs(&self) -> impl Iterator<Item = &Program> {
        self.programs.iter().filter(|p| p.native)
    }

    /// The hosts of `program`, in order: its declared hosts, or its replicas at their default count.
    pub fn hosts_of(&self, program: &Program) -> Vec<Host> {
        match &program.replicas {
            // An address that does not parse is a validation error; it yields no host meanwhile.
            Some(r) => (1..=r.count)
                .filter_map(|n| {
                    Some(Host {
                        name: format!("{}-{n}", r.host_prefix()),
                        address: format!("{}.{n}", r.network).parse().ok()?,
                    })
                })
                .collect(),
            None => program
                .hosts
                .iter()
                .map(|h| Host {
                    name: h.clone(),
                    address: self.hosts[h],
                })
                .collect(),
        }
    }

    /// The address of each host of `program`, in order.
    pub fn addresses(&self, program: &Program) -> Vec<IpAddr> {
        self.hosts_of(program).into_iter().map(|h| h.address).collect()
    }

    /// The default native address of a listener on every host of the program: each replica's, in order.
    pub fn addrs(&self, program: &str, listener: &str) -> Vec<SocketAddr> {
        let p = self
            .program(program)
            .unwrap_or_else(|| panic!("{PATH} declares no program {program}"));
        let l = p
            .listener(listener)
            .unwrap_or_else(|| panic!("{PATH}: program {program} has no listener {listener}"));
        self.addresses(p)
            .into_iter()
            .map(|a| SocketAddr::new(a, l.port))
            .collect()
    }

    /// The default native base URLs of an HTTP listener on every host of the program.
    pub fn urls(&self, program: &str, listener: &str) -> Vec<String> {
        self.addrs(program, listener)
            .into_iter()
            .map(|a| format!("http://{a}"))
            .collect()
    }

    /// The default native address of a listener, on the program's first host: `127.0.0.1:8080`.
    ///
    /// Panics when the program or listener is not declared, or the program has no host: callers name them in
    /// code, and a test of theirs catches a typo.
    pub fn addr(&self, program: &str, listener: &str) -> SocketAddr {
        let p = self
            .program(program)
            .unwrap_or_else(|| panic!("{PATH} declares no program {program}"));
        self.addrs(program, listener)
            .first()
            .copied()
            .unwrap_or_else(|| panic!("{PATH}: program {program} ({:?}) runs on no host", p.name))
    }

    /// The default native base URL of an HTTP listener: `http://127.0.0.1:8080`.
    pub fn url(&self, program: &str, listener: &str) -> String {
        format!("http://{}", self.addr(program, listener))
    }

    /// The job names, in order.
    pub fn job_names(&self) -> Vec<&str> {
        self.jobs.iter().map(|j| j.name.as_str()).collect()
    }

    /// Every file_sd file Prometheus reads (one per job, then the Alertmanagers'), each with the program and
    /// listener it lists.
    pub fn target_files(&self) -> Vec<(&str, &Program, &Listener)> {
        let resolve = |program: &str, listener: &str| {
            let p = self.program(program).expect("validated");
            (p, p.listener(listener).expect("validated"))
        };
        let mut out: Vec<_> = self
            .jobs
            .iter()
            .map(|j| {
                let (p, l) = resolve(&j.program, &j.listener);
                (j.name.as_str(), p, l)
            })
            .collect();
        let am = &self.alertmanagers;
        let (p, l) = resolve(&am.program, &am.listener);
        out.push((am.targets.as_str(), p, l));
        out
    }

    /// Every listener of the native programs, with its program, in declaration order.
    pub fn native_listeners(&self) -> impl Iterator<Item = (&Program, &Listener)> {
        self.native_programs()
            .flat_map(|p| p.listeners.iter().map(move |l| (p, l)))
    }

    /// The ports compose publishes on 127.0.0.1.
    pub fn published_ports(&self) -> BTreeSet<u16> {
        self.programs
            .iter()
            .flat_map(|p| &p.listeners)
            .filter(|l| l.published)
            .map(|l| l.port)
            .collect()
    }

    fn validate(&self) -> Result<(), Error> {
        let mut problems = Vec::new();
        let mut names = BTreeSet::new();
        let mut services = BTreeSet::new();
        let mut envs = BTreeSet::new();
        // Two listeners on one address and port cannot both bind; compose-only programs count on their own.
        let mut bound: BTreeMap<(Option<IpAddr>, u16), String> = BTreeMap::new();
        if self.hosts.is_empty() {
            problems.push("no hosts".to_string());
        }
        for p in &self.programs {
            let who = format!("program {}", p.name);
            if !is_name(&p.name) {
                problems.push(format!("{who}: a name is lowercase letters, digits, '_' and '-'"));
            }
            if !names.insert(&p.name) {
                problems.push(format!("{who} is declared twice"));
            }
            if p.in_compose && !services.insert(p.compose_service()) {
                problems.push(format!(
                    "{who}: compose service {} is another program's",
                    p.compose_service()
                ));
            }
            if p.native && p.hosts.is_empty() && p.replicas.is_none() {
                problems.push(format!("{who} runs natively on no host"));
            }
            if !p.native && (!p.hosts.is_empty() || p.replicas.is_some()) {
                problems.push(format!("{who} is not native but lists hosts"));
            }
            if let Some(r) = &p.replicas {
                if !p.hosts.is_empty() {
                    problems.push(format!("{who}: hosts and replicas both given"));
                }
                if r.count == 0 {
                    problems.push(format!("{who}: 0 replicas"));
                }
                let octets: Vec<&str> = r.network.split('.').collect();
                if octets.len() != 3 || octets.iter().any(|o| o.parse::<u8>().is_err()) || octets[0] != "127" {
                    problems.push(format!(
                        "{who}: network {} is not three octets of 127.0.0.0/8",
                        r.network
                    ));
                }
                if !r.env.ends_with("_REPLICAS") || !r.env.bytes().all(|b| b.is_ascii_uppercase() || b == b'_') {
                    problems.push(format!("{who}: env {} is not a FOO_REPLICAS name", r.env));
                }
                // Side by side on the same hosts, or on hosts of its own.
                if self.programs.iter().any(|o| {
                    o.replicas
                        .as_ref()
                        .is_some_and(|x| x.network == r.network && (x.env != r.env || x.count != r.count))
                }) {
                    problems.push(format!("{who}: network {} is another program's", r.network));
                }
                if self.programs.iter().any(|o| {
                    o.replicas
                        .as_ref()
                        .is_some_and(|x| x.env == r.env && x.network != r.network)
                }) {
                    problems.push(format!("{who}: env {} counts replicas on another network", r.env));
                }
                if !p.in_compose && r.compose_single {
                    problems.push(format!("{who}: compose_single, but compose does not run it"));
                }
            }
            let mut seen_hosts = BTreeSet::new();
            for h in &p.hosts {
                if !self.hosts.contains_key(h) {
                    problems.push(format!("{who}: host {h} is not declared under hosts"));
                }
                if !seen_hosts.insert(h) {
                    problems.push(format!("{who}: host {h} listed twice"));
                }
            }
            if p.listeners.is_empty() {
                problems.push(format!("{who} has no listener"));
            }
            let mut listener_names = BTreeSet::new();
            for l in &p.listeners {
                let at = format!("{who} listener {}", l.name);
                if !listener_names.insert(&l.name) {
                    problems.push(format!("{at} is declared twice"));
                }
                if l.port == 0 {
                    problems.push(format!("{at}: port 0"));
                }
                match (&l.env, p.native) {
                    (Some(env), _) if !is_env(env) => problems.push(format!("{at}: env {env} is not a FOO_PORT name")),
                    (Some(env), _) if !envs.insert(env) => problems.push(format!("{at}: env {env} is another's")),
                    (None, true) => problems.push(format!("{at}: no env (the variable that overrides it natively)")),
                    _ => {}
                }
                let addresses: Vec<Option<IpAddr>> = if p.native {
                    if p.replicas.is_some() {
                        self.hosts_of(p).into_iter().map(|h| Some(h.address)).collect()
                    } else {
                        p.hosts
                            .iter()
                            .filter_map(|h| self.hosts.get(h))
                            .map(|a| Some(*a))
                            .collect()
                    }
                } else {
                    vec![None]
                };
                for a in addresses {
                    if let Some(other) = bound.insert((a, l.port), at.clone()) {
                        problems.push(format!("{at}: port {} is already {other}'s", l.port));
                    }
                }
            }
        }
        let mut files = BTreeSet::new();
        let mut check_ref = |who: String, name: &str, program: &str, listener: &str, problems: &mut Vec<String>| {
            if !is_name(name) {
                problems.push(format!("{who}: a name is lowercase letters, digits, '_' and '-'"));
            }
            if !files.insert(name.to_string()) {
                problems.push(format!("{who}: targets/{name}.yml is declared twice"));
            }
            match self.program(program) {
                None => problems.push(format!("{who}: no program {program}")),
                Some(p) if !p.native => problems.push(format!("{who}: program {program} does not run natively")),
                Some(p) if p.listener(listener).is_none() => {
                    problems.push(format!("{who}: program {program} has no listener {listener}"))
                }
                Some(_) => {}
            }
        };
        for j in &self.jobs {
            let who = format!("job {}", j.name);
            check_ref(who.clone(), &j.name, &j.program, &j.listener, &mut problems);
            if let Some(probe) = &j.probe {
                match self.program(&probe.target.program) {
                    None => problems.push(format!("{who}: probes no program {}", probe.target.program)),
                    Some(p) if p.listener(&probe.target.listener).is_none() => problems.push(format!(
                        "{who}: program {} has no listener {}",
                        probe.target.program, probe.target.listener
                    )),
                    Some(_) => {}
                }
                if !probe.target.path.starts_with('/') {
                    problems.push(format!("{who}: probe path {} does not start with /", probe.target.path));
                }
            }
            if let Some(t) = &j.scrape_timeout {
                if !is_duration(t) {
                    problems.push(format!(
                        "{who}: scrape_timeout {t} is not a Prometheus duration such as 4s"
                    ));
                }
            }
        }
        let am = &self.alertmanagers;
        check_ref(
            "alertmanagers".into(),
            &am.targets,
            &am.program,
            &am.listener,
            &mut problems,
        );
        if self.jobs.is_empty() {
            problems.push("no jobs".to_string());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::Invalid(problems.join("; ")))
        }
    }
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn is_env(s: &str) -> bool {
    s.ends_with("_PORT")
        && s.starts_with(|c: char| c.is_ascii_uppercase())
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

/// A single-unit Prometheus duration (`500ms`, `4s`, `1m`): all the scrape timeouts here need.
fn is_duration(s: &str) -> bool {
    let digits = s.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &s[digits.len()..];
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) && matches!(unit, "ms" | "s" | "m")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: &str = r#"
hosts: {local: 127.0.0.1}
programs:
  - name: app
    hosts: [local]
    listeners:
      - {name: api, port: 8080, env: APP_PORT, published: true}
      - {name: admin, port: 8081, env: APP_ADMIN_PORT}
  - name: am
    hosts: [local]
    compose: alertmanager
    listeners: [{name: web, port: 9093, env: AM_PORT}]
  - name: grafana
    native: false
    listeners: [{name: web, port: 3000, published: true}]
alertmanagers: {targets: am-api, program: am, listener: web, auth: web}
jobs:
  - {name: app, program: app, listener: admin, about: The app., scrape_timeout: 4s}
"#;

    fn invalid(text: &str) -> String {
        match Topology::parse(text) {
            Err(Error::Invalid(msg)) => msg,
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn the_repositorys_declaration_is_valid_and_has_the_stacks_defaults() {
        let t = Topology::embedded();
        assert_eq!(t.url("haproxy", "public"), "http://127.0.0.1:8080");
        assert_eq!(
            t.urls("app", "admin"),
            ["http://127.0.1.1:8081", "http://127.0.1.2:8081"]
        );
        assert_eq!(t.addrs("alertmanager", "cluster").len(), 3);
        assert_eq!(
            t.program("prometheus").unwrap().compose_services(),
            ["prometheus-1", "prometheus-2"]
        );
        assert_eq!(t.addr("redis", "resp").to_string(), "127.0.0.1:6379");
        assert!(t.job_names().contains(&"app"));
        assert!(t.published_ports().contains(&3000));
    }

    #[test]
    fn a_small_declaration_resolves_its_references() {
        let t = Topology::parse(SMALL).unwrap();
        assert_eq!(t.url("app", "admin"), "http://127.0.0.1:8081");
        assert_eq!(t.program("am").unwrap().compose_service(), "alertmanager");
        assert_eq!(t.program("app").unwrap().compose_service(), "app");
        let files: Vec<_> = t
            .target_files()
            .iter()
            .map(|(f, p, l)| (*f, p.name.as_str(), l.port))
            .collect();
        assert_eq!(files, [("app", "app", 8081), ("am-api", "am", 9093)]);
        assert_eq!(
            t.native_programs().map(|p| p.name.as_str()).collect::<Vec<_>>(),
            ["app", "am"]
        );
        assert_eq!(t.published_ports(), BTreeSet::from([8080, 3000]));
        assert_eq!(t.alertmanagers.auth, Auth::Web);
        assert_eq!(t.jobs[0].auth, Auth::None);
    }

    #[test]
    fn a_port_used_twice_on_one_host_is_refused() {
        let msg = invalid(&SMALL.replace("port: 9093", "port: 8080"));
        assert!(msg.contains("port 8080 is already program app listener api's"), "{msg}");
    }

    #[test]
    fn the_same_port_on_two_hosts_is_allowed() {
        let text = SMALL
            .replace(
                "hosts: {local: 127.0.0.1}",
                "hosts: {local: 127.0.0.1, other: 127.0.1.2}",
            )
            .replace("port: 9093", "port: 8080")
            .replace("  - name: am\n    hosts: [local]", "  - name: am\n    hosts: [other]");
        Topology::parse(&text).unwrap();
    }

    #[test]
    fn replicas_get_hosts_of_their_own_and_bad_replica_declarations_are_refused() {
        let text = SMALL.replace(
            "  - name: am\n    hosts: [local]",
            "  - name: am\n    replicas: {count: 3, network: 127.0.3, env: AM_REPLICAS}",
        );
        let t = Topology::parse(&text).unwrap();
        let am = t.program("am").unwrap();
        let hosts: Vec<String> = t
            .hosts_of(am)
            .iter()
            .map(|h| format!("{}@{}", h.name, h.address))
            .collect();
        assert_eq!(hosts, ["am-1@127.0.3.1", "am-2@127.0.3.2", "am-3@127.0.3.3"]);
        assert_eq!(
            am.compose_services(),
            ["alertmanager-1", "alertmanager-2", "alertmanager-3"]
        );
        assert_eq!(am.replicas.as_ref().unwrap().network_env(), "AM_NETWORK");
        let msg = invalid(&text.replace("network: 127.0.3", "network: 10.0.3"));
        assert!(
            msg.contains("network 10.0.3 is not three octets of 127.0.0.0/8"),
            "{msg}"
        );
        let msg = invalid(&text.replace("count: 3", "count: 0"));
        assert!(msg.contains("0 replicas"), "{msg}");
        let msg = invalid(&text.replace("env: AM_REPLICAS", "env: AM_COUNT"));
        assert!(msg.contains("not a FOO_REPLICAS name"), "{msg}");
        let msg = invalid(&text.replace("    replicas:", "    hosts: [local]\n    replicas:"));
        assert!(msg.contains("hosts and replicas both given"), "{msg}");
    }

    #[test]
    fn replicas_of_one_network_and_count_run_side_by_side_and_compose_may_run_them_once_or_not() {
        let text = SMALL.replace(
            "  - name: am\n    hosts: [local]",
            "  - name: db\n    replicas: {count: 3, network: 127.0.5, env: DB_REPLICAS}\n    in_compose: false\n    \
             listeners:\n      - {name: sql, port: 5432, env: DB_PORT}\n  \
             - name: db_exporter\n    replicas: {count: 3, network: 127.0.5, env: DB_REPLICAS, compose_single: true}\n    \
             listeners:\n      - {name: metrics, port: 9187, env: DB_EXPORTER_PORT}\n  \
             - name: am\n    hosts: [local]",
        );
        let t = Topology::parse(&text).unwrap();
        let (db, exporter) = (t.program("db").unwrap(), t.program("db_exporter").unwrap());
        assert_eq!(t.hosts_of(db), t.hosts_of(exporter));
        assert_eq!(t.hosts_of(exporter)[2].name, "db-3");
        assert!(db.compose_services().is_empty());
        assert_eq!(exporter.compose_services(), ["db_exporter"]);
        let msg = invalid(&text.replace(
            "count: 3, network: 127.0.5, env: DB_REPLICAS, compose",
            "count: 2, network: 127.0.5, env: DB_REPLICAS, compose",
        ));
        assert!(msg.contains("network 127.0.5 is another program's"), "{msg}");
        let msg = invalid(&text.replace(
            "127.0.5, env: DB_REPLICAS, compose",
            "127.0.6, env: DB_REPLICAS, compose",
        ));
        assert!(
            msg.contains("env DB_REPLICAS counts replicas on another network"),
            "{msg}"
        );
        let msg = invalid(&text.replace("port: 9187", "port: 5432"));
        assert!(msg.contains("port 5432 is already"), "{msg}");
    }

    #[test]
    fn a_job_name_used_twice_is_refused() {
        let msg = invalid(&SMALL.replace("targets: am-api", "targets: app"));
        assert!(msg.contains("targets/app.yml is declared twice"), "{msg}");
    }

    #[test]
    fn references_that_do_not_resolve_are_refused() {
        let msg = invalid(&SMALL.replace("listener: admin", "listener: metrics"));
        assert!(msg.contains("job app: program app has no listener metrics"), "{msg}");
        let msg = invalid(&SMALL.replace("program: am,", "program: nope,"));
        assert!(msg.contains("alertmanagers: no program nope"), "{msg}");
        let msg = invalid(&SMALL.replace("  - name: am\n    hosts: [local]", "  - name: am\n    hosts: [remote]"));
        assert!(msg.contains("program am: host remote is not declared"), "{msg}");
        let msg = invalid(&SMALL.replace("program: am,", "program: grafana,"));
        assert!(msg.contains("program grafana does not run natively"), "{msg}");
    }

    #[test]
    fn an_override_variable_is_required_natively_and_unique() {
        let msg = invalid(&SMALL.replace(", env: AM_PORT", ""));
        assert!(msg.contains("program am listener web: no env"), "{msg}");
        let msg = invalid(&SMALL.replace("env: AM_PORT", "env: APP_PORT"));
        assert!(msg.contains("env APP_PORT is another's"), "{msg}");
    }

    #[test]
    fn a_bad_timeout_and_an_unknown_field_are_refused() {
        let msg = invalid(&SMALL.replace("scrape_timeout: 4s", "scrape_timeout: four"));
        assert!(msg.contains("scrape_timeout four"), "{msg}");
        assert!(matches!(
            Topology::parse(&SMALL.replace("scrape_timeout:", "scrape_timout:")),
            Err(Error::Yaml(_))
        ));
    }
}
