//! Everything derived from the topology (`monitoring/topology.yml`): native/topology.env (the native scripts'
//! default ports, start order and targets), compose's file_sd targets, and prometheus.yml's Alertmanager and scrape
//! job blocks.

use std::fmt::Write;
use std::path::Path;

use stack::topology::{Auth, Job, Listener, Program, Topology};

use crate::generated::{replace_region_in, Error, Output};

const PROMETHEUS_YML: &str = "monitoring/prometheus/prometheus.yml";
const ENV_FILE: &str = "native/topology.env";
const COMPOSE_TARGETS: &str = "compose/prometheus/targets";
const COMPOSE_HAPROXY_SERVERS: &str = "compose/haproxy/servers.cfg";
const README: &str = "README.md";
/// The web user of Prometheus and Alertmanager and its password file, relative to prometheus.yml's directory
/// (native/up.sh links the secrets there, compose mounts them there); native/secrets.sh makes the file.
const WEB_AUTH: [&str; 2] = ["username: admin", "password_file: secrets/web.password"];

/// Reads the declaration under `root` (not the one embedded in this binary: the generator must see an edit that
/// has not been built yet) and returns every file derived from it.
pub fn generate(root: &Path) -> Result<Vec<Output>, Error> {
    let path = root.join(stack::topology::PATH);
    let text = std::fs::read_to_string(&path).map_err(|source| Error::Io { path, source })?;
    let topology = Topology::parse(&text).map_err(|e| Error::Source(e.to_string()))?;
    outputs(root, &topology)
}

fn outputs(root: &Path, t: &Topology) -> Result<Vec<Output>, Error> {
    let mut out = vec![Output {
        path: ENV_FILE.into(),
        contents: native_env(t),
    }];
    out.extend(compose_targets(t));
    out.push(compose_haproxy_servers(t));
    out.push(crate::generated::replace_region(
        root,
        README,
        "topology",
        &readme_table(t),
    )?);
    let path = root.join(PROMETHEUS_YML);
    let text = std::fs::read_to_string(&path).map_err(|source| Error::Io { path, source })?;
    let text = replace_region_in(&text, PROMETHEUS_YML, "alertmanagers", &alertmanagers(t))?;
    let text = replace_region_in(&text, PROMETHEUS_YML, "scrape-jobs", &scrape_jobs(t))?;
    out.push(Output {
        path: PROMETHEUS_YML.into(),
        contents: text,
    });
    Ok(out)
}

const HEADER: &str = "# Generated from monitoring/topology.yml by `make generate`: edit that file, not this one.\n";

fn native_env(t: &Topology) -> String {
    let mut s = String::from(HEADER);
    s.push_str(
        "# Sourced by native/env.sh. Each port is a default: the variable, set in the environment, overrides it.\n",
    );
    let listeners: Vec<(&Program, &Listener)> = t.native_listeners().collect();
    let envs: Vec<&str> = listeners.iter().filter_map(|(_, l)| l.env.as_deref()).collect();
    for (p, l) in &listeners {
        let env = l.env.as_deref().expect("validated: every native listener has one");
        writeln!(s, "{env}=${{{env}:-{}}}  # {} {}", l.port, p.name, l.name).unwrap();
    }
    writeln!(s, "export {}", envs.join(" ")).unwrap();
    s.push_str(
        "\n# Replicated programs: how many replicas (overridable) and the network their hosts' addresses are in.\n",
    );
    let mut replica_vars = Vec::new();
    for p in t.native_programs() {
        if let Some(r) = p.replicas.as_ref().filter(|r| !replica_vars.contains(&r.env)) {
            let net = r.network_env();
            writeln!(s, "{}=${{{}:-{}}}  # {} replicas", r.env, r.env, r.count, p.name).unwrap();
            writeln!(
                s,
                "{net}={}  # replica N of {} runs at {}.N",
                r.network, p.name, r.network
            )
            .unwrap();
            replica_vars.push(r.env.clone());
            replica_vars.push(net);
        }
    }
    writeln!(s, "export {}", replica_vars.join(" ")).unwrap();
    s.push_str("\n# Every program the supervisor runs, in start order.\n");
    let programs: Vec<&str> = t.native_programs().map(|p| p.name.as_str()).collect();
    writeln!(s, "STACK_PROGRAMS=\"{}\"", programs.join(" ")).unwrap();
    s.push_str(
        "# program=hosts: host@address[,host@address], or *COUNT_VARIABLE@NETWORK_VARIABLE for a replicated one\n\
         # (replica N: host <name>-N at <network>.N, <name> the variable's stem: postgres for POSTGRES_REPLICAS).\n\
         # native/env.sh's hosts_of reads it.\n",
    );
    let hosts: Vec<String> = t
        .native_programs()
        .map(|p| match &p.replicas {
            Some(r) => format!("{}=*{}@{}", p.name, r.env, r.network_env()),
            None => {
                let list: Vec<String> = t
                    .hosts_of(p)
                    .iter()
                    .map(|h| format!("{}@{}", h.name, h.address))
                    .collect();
                format!("{}={}", p.name, list.join(","))
            }
        })
        .collect();
    writeln!(s, "STACK_PROGRAM_HOSTS=\"{}\"", hosts.join(" ")).unwrap();
    s.push_str("# program=VARIABLE: the port that says each program is up (its first listener).\n");
    let ready: Vec<String> = t
        .native_programs()
        .map(|p| format!("{}={}", p.name, p.listeners[0].env.as_deref().expect("validated")))
        .collect();
    writeln!(s, "STACK_PROGRAM_PORTS=\"{}\"", ready.join(" ")).unwrap();
    s.push_str(
        "# file=program:VARIABLE, one per file: native/up.sh writes Prometheus's targets/<file>.yml with the listener\n\
         # on every host of the program; a probe job adds >program:VARIABLE/path, the URL its exporter requests.\n",
    );
    let targets: Vec<String> = t
        .target_files()
        .into_iter()
        .map(|(file, p, l)| {
            let env = l.env.as_deref().expect("validated");
            let probe = t.job(file).and_then(|j| j.probe.as_ref()).map(|probe| {
                let target = t.program(&probe.target.program).expect("validated");
                let l = target.listener(&probe.target.listener).expect("validated");
                format!(
                    ">{}:{}{}",
                    target.name,
                    l.env.as_deref().expect("validated"),
                    probe.target.path
                )
            });
            format!("{file}={}:{env}{}", p.name, probe.unwrap_or_default())
        })
        .collect();
    writeln!(s, "STACK_TARGETS=\"{}\"", targets.join(" ")).unwrap();
    s.push_str("# program=VARIABLE,VARIABLE: the port of each of its listeners, on every host of the program.\n");
    let listeners: Vec<String> = t
        .native_programs()
        .map(|p| {
            let vars: Vec<&str> = p.listeners.iter().filter_map(|l| l.env.as_deref()).collect();
            format!("{}={}", p.name, vars.join(","))
        })
        .collect();
    writeln!(s, "STACK_PROGRAM_LISTENERS=\"{}\"", listeners.join(" ")).unwrap();
    s.push_str("# Every listener's port variable.\n");
    writeln!(s, "STACK_PORT_VARS=\"{}\"", envs.join(" ")).unwrap();
    s
}

const ALERTMANAGERS_ABOUT: &str =
    "# Where Prometheus sends alerts (alerting.alertmanagers in prometheus.yml), not a scrape job.\n";
const COMPOSE_ABOUT: &str =
    "# Compose reaches each program by its service name; the native stack writes the same file with addresses.\n";

fn compose_targets(t: &Topology) -> Vec<Output> {
    t.target_files()
        .into_iter()
        .map(|(file, p, l)| {
            let job = t.job(file);
            let what = match job {
                Some(job) => format!("# Job {file}. {}\n", first_sentence(&job.about)),
                None => ALERTMANAGERS_ABOUT.to_string(),
            };
            let probe = job.and_then(|j| j.probe.as_ref()).map(|probe| {
                let target = t.program(&probe.target.program).expect("validated");
                let port = target.listener(&probe.target.listener).expect("validated").port;
                format!("http://{}:{port}{}", target.compose_service(), probe.target.path)
            });
            let mut list = String::new();
            for (service, host) in p.compose_services().iter().zip(t.hosts_of(p)) {
                let probe = probe
                    .as_ref()
                    .map(|url| format!(", __param_target: \"{url}\""))
                    .unwrap_or_default();
                writeln!(
                    list,
                    "- targets: [\"{service}:{}\"]\n  labels: {{host: {}{probe}}}",
                    l.port, host.name
                )
                .unwrap();
            }
            if list.is_empty() {
                // A program only the native stack runs (the Postgres cluster): compose scrapes nothing here.
                list.push_str("[]\n");
            }
            Output {
                path: Path::new(COMPOSE_TARGETS).join(format!("{file}.yml")),
                contents: format!("{what}{HEADER}{COMPOSE_ABOUT}{list}"),
            }
        })
        .collect()
}

/// README's topology table: every native host, its address, and what runs there (with the listeners' ports).
fn readme_table(t: &Topology) -> String {
    let mut rows: Vec<(String, String, Vec<String>)> = Vec::new();
    for p in t.native_programs() {
        let ports: Vec<String> = p.listeners.iter().map(|l| format!("{} {}", l.name, l.port)).collect();
        let what = format!("{} ({})", p.name, ports.join(", "));
        for h in t.hosts_of(p) {
            let address = h.address.to_string();
            match rows.iter_mut().find(|(name, _, _)| *name == h.name) {
                Some(row) => row.2.push(what.clone()),
                None => rows.push((h.name, address, vec![what.clone()])),
            }
        }
    }
    let mut s = String::from("| host | address | programs (listener port) |\n|---|---|---|\n");
    for (name, address, programs) in rows {
        writeln!(s, "| {name} | {address} | {} |", programs.join(", ")).unwrap();
    }
    s
}

/// HAProxy's backend in compose: one server per app replica, named for its host (as native/up.sh names them).
fn compose_haproxy_servers(t: &Topology) -> Output {
    let app = t.program("app").expect("the topology declares the app");
    let port = app.listener("api").expect("the app has an api listener").port;
    // Compose's DNS names the replicas: HAProxy resolves them at start and again every second (a re-created
    // container has a new address), and starts even while one does not resolve yet.
    let mut s = format!(
        "# HAProxy's servers in compose: every app replica's API (monitoring/haproxy/haproxy.cfg says why this is\n\
         # a file of its own), found through compose's DNS.\n{HEADER}resolvers stack\n    parse-resolv-conf\n    \
         hold valid 1s\n\nbackend app\n"
    );
    for (service, host) in app.compose_services().iter().zip(t.hosts_of(app)) {
        writeln!(
            s,
            "    server {} {service}:{port} resolvers stack init-addr last,libc,none",
            host.name
        )
        .unwrap();
    }
    Output {
        path: COMPOSE_HAPROXY_SERVERS.into(),
        contents: s,
    }
}

/// Up to the first full stop that ends a sentence (the rest of a job's `about` is for prometheus.yml).
fn first_sentence(text: &str) -> String {
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match text.find(". ") {
        Some(i) => text[..=i].to_string(),
        None => text,
    }
}

fn comment(out: &mut String, indent: &str, text: &str) {
    for line in text.lines() {
        writeln!(out, "{indent}# {line}").unwrap();
    }
}

fn basic_auth(out: &mut String, indent: &str, auth: Auth) {
    if auth == Auth::Web {
        writeln!(out, "{indent}basic_auth:").unwrap();
        for line in WEB_AUTH {
            writeln!(out, "{indent}  {line}").unwrap();
        }
    }
}

fn file_sd(out: &mut String, indent: &str, file: &str) {
    writeln!(out, "{indent}file_sd_configs:\n{indent}  - files: [targets/{file}.yml]").unwrap();
}

/// The body of the `alertmanagers` region: inside `alerting.alertmanagers[0]`.
fn alertmanagers(t: &Topology) -> String {
    let mut s = String::new();
    basic_auth(&mut s, "      ", t.alertmanagers.auth);
    file_sd(&mut s, "      ", &t.alertmanagers.targets);
    s
}

/// The body of the `scrape-jobs` region: the items of `scrape_configs`.
fn scrape_jobs(t: &Topology) -> String {
    let mut s = String::new();
    for (i, job) in t.jobs.iter().enumerate() {
        if i > 0 {
            s.push('\n');
        }
        scrape_job(&mut s, job);
    }
    s
}

fn scrape_job(s: &mut String, job: &Job) {
    comment(s, "  ", &job.about);
    if job.auth == Auth::Web {
        comment(
            s,
            "  ",
            "It answers nothing without the web credentials (--web.config.file), /metrics included.",
        );
    }
    writeln!(s, "  - job_name: {}", job.name).unwrap();
    if let Some(timeout) = &job.scrape_timeout {
        writeln!(s, "    scrape_timeout: {timeout}").unwrap();
    }
    basic_auth(s, "    ", job.auth);
    file_sd(s, "    ", &job.name);
    if let Some(probe) = &job.probe {
        // The target is the exporter; the URL it probes comes as the target's __param_target label (the one
        // thing that differs between the native stack and compose) and becomes the instance.
        writeln!(
            s,
            "    metrics_path: /probe\n    params:\n      module: [{}]\n    relabel_configs:\n      \
             - source_labels: [__param_target]\n        target_label: instance",
            probe.module
        )
        .unwrap();
    }
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
  - name: alertmanager
    replicas: {count: 2, network: 127.0.3, env: ALERTMANAGER_REPLICAS}
    compose: am
    listeners: [{name: web, port: 9093, env: ALERTMANAGER_PORT}]
alertmanagers: {targets: alertmanager-api, program: alertmanager, listener: web, auth: web}
jobs:
  - name: app
    program: app
    listener: admin
    scrape_timeout: 3s
    about: |-
      The app. Its admin
      listener.
  - {name: alertmanager, program: alertmanager, listener: web, auth: web, about: Alertmanager.}
"#;

    const PROMETHEUS: &str = "global: {}\nalerting:\n  alertmanagers:\n    - timeout: 4s\n      \
        # BEGIN generated:alertmanagers\n      old\n      # END generated:alertmanagers\n\
        scrape_configs:\n  # BEGIN generated:scrape-jobs\n  old\n  # END generated:scrape-jobs\n";

    fn generated() -> Vec<Output> {
        // One directory per call: the tests run in parallel.
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let root = std::env::temp_dir().join(format!("xtask-topology-{}-{n}", std::process::id()));
        std::fs::create_dir_all(root.join("monitoring/prometheus")).unwrap();
        std::fs::write(root.join(PROMETHEUS_YML), PROMETHEUS).unwrap();
        std::fs::write(
            root.join(README),
            "# x\n<!-- BEGIN generated:topology -->\n<!-- END generated:topology -->\n",
        )
        .unwrap();
        let out = outputs(&root, &Topology::parse(SMALL).unwrap()).unwrap();
        std::fs::remove_dir_all(&root).unwrap();
        out
    }

    fn contents<'a>(out: &'a [Output], path: &str) -> &'a str {
        &out.iter()
            .find(|o| o.path == Path::new(path))
            .unwrap_or_else(|| panic!("no {path}"))
            .contents
    }

    #[test]
    fn the_native_env_has_each_port_as_an_overridable_default_and_the_target_list() {
        let out = generated();
        let env = contents(&out, ENV_FILE);
        assert!(
            env.contains("\nAPP_ADMIN_PORT=${APP_ADMIN_PORT:-8081}  # app admin\n"),
            "{env}"
        );
        assert!(
            env.contains("\nexport APP_PORT APP_ADMIN_PORT ALERTMANAGER_PORT\n"),
            "{env}"
        );
        assert!(env.contains("\nSTACK_PROGRAMS=\"app alertmanager\"\n"), "{env}");
        assert!(
            env.contains("\nSTACK_PROGRAM_PORTS=\"app=APP_PORT alertmanager=ALERTMANAGER_PORT\"\n"),
            "{env}"
        );
        assert!(
            env.contains(
                "\nSTACK_TARGETS=\"app=app:APP_ADMIN_PORT alertmanager=alertmanager:ALERTMANAGER_PORT \
                 alertmanager-api=alertmanager:ALERTMANAGER_PORT\"\n"
            ),
            "{env}"
        );
        assert!(
            env.contains("\nSTACK_PROGRAM_HOSTS=\"app=local@127.0.0.1 alertmanager=*ALERTMANAGER_REPLICAS@ALERTMANAGER_NETWORK\"\n"),
            "{env}"
        );
        assert!(
            env.contains("\nALERTMANAGER_REPLICAS=${ALERTMANAGER_REPLICAS:-2}  "),
            "{env}"
        );
        assert!(env.contains("\nALERTMANAGER_NETWORK=127.0.3  "), "{env}");
    }

    #[test]
    fn the_readme_table_has_a_row_per_host() {
        let out = generated();
        let readme = contents(&out, README);
        assert!(
            readme.contains("| local | 127.0.0.1 | app (api 8080, admin 8081) |\n"),
            "{readme}"
        );
        assert!(
            readme.contains("| alertmanager-2 | 127.0.3.2 | alertmanager (web 9093) |\n"),
            "{readme}"
        );
    }

    #[test]
    fn compose_targets_name_the_service_and_the_port() {
        let out = generated();
        let app = contents(&out, "compose/prometheus/targets/app.yml");
        assert!(app.starts_with("# Job app. The app.\n"), "{app}");
        assert!(
            app.ends_with("\n- targets: [\"app:8081\"]\n  labels: {host: local}\n"),
            "{app}"
        );
        let am = contents(&out, "compose/prometheus/targets/alertmanager-api.yml");
        assert!(
            am.ends_with(
                "\n- targets: [\"am-1:9093\"]\n  labels: {host: alertmanager-1}\n\
                 - targets: [\"am-2:9093\"]\n  labels: {host: alertmanager-2}\n"
            ),
            "{am}"
        );
        assert_eq!(
            out.len(),
            1 + 3 + 1 + 1 + 1,
            "the env file, one target file per job and the Alertmanagers', HAProxy's servers, README, prometheus.yml"
        );
    }

    #[test]
    fn prometheus_yml_gets_both_blocks_and_keeps_the_rest() {
        let out = generated();
        let yml = contents(&out, PROMETHEUS_YML);
        let expected = "global: {}\nalerting:\n  alertmanagers:\n    - timeout: 4s\n      \
            # BEGIN generated:alertmanagers\n      \
            basic_auth:\n        username: admin\n        password_file: secrets/web.password\n      \
            file_sd_configs:\n        - files: [targets/alertmanager-api.yml]\n      \
            # END generated:alertmanagers\n\
            scrape_configs:\n  # BEGIN generated:scrape-jobs\n  \
            # The app. Its admin\n  # listener.\n  - job_name: app\n    scrape_timeout: 3s\n    \
            file_sd_configs:\n      - files: [targets/app.yml]\n\n  \
            # Alertmanager.\n  \
            # It answers nothing without the web credentials (--web.config.file), /metrics included.\n  \
            - job_name: alertmanager\n    basic_auth:\n      username: admin\n      \
            password_file: secrets/web.password\n    file_sd_configs:\n      - files: [targets/alertmanager.yml]\n  \
            # END generated:scrape-jobs\n";
        assert_eq!(yml, expected);
    }

    #[test]
    fn the_repositorys_generated_files_parse_as_yaml() {
        // The real declaration through the real prometheus.yml: the result must still be one YAML document
        // whose jobs are the declared ones.
        let root = stack::repo_root();
        let out = generate(&root).unwrap();
        let yml: serde_yaml_ng::Value = serde_yaml_ng::from_str(contents(&out, PROMETHEUS_YML)).unwrap();
        let jobs: Vec<&str> = yml["scrape_configs"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|j| j["job_name"].as_str().unwrap())
            .collect();
        assert_eq!(jobs, Topology::embedded().job_names());
    }

    #[test]
    fn alertmanagers_webhooks_post_to_the_inbox_at_its_declared_port() {
        // alertmanager.yml is hand-written (Alertmanager 0.25 reads no URL from a file); native/up.sh rewrites
        // only a port overridden from the environment, so the file must name the topology's default.
        let root = stack::repo_root();
        let text = std::fs::read_to_string(root.join(stack::topology::PATH)).unwrap();
        let inbox = Topology::parse(&text).unwrap().addr("inbox", "http");
        let config = std::fs::read_to_string(root.join("monitoring/alertmanager/alertmanager.yml")).unwrap();
        let hooks: Vec<&str> = config
            .lines()
            .map(str::trim)
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split_once("://").and_then(|(_, rest)| rest.split_once("/hook/")))
            .map(|(authority, _)| authority)
            .collect();
        assert!(!hooks.is_empty(), "alertmanager.yml posts to no /hook/");
        for authority in hooks {
            assert_eq!(authority, inbox.to_string(), "a webhook of alertmanager.yml");
        }
    }
}
