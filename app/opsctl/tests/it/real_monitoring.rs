//! `opsctl smoke` against a real Prometheus and a real Alertmanager (Debian's packages), delivering the Watchdog
//! to the real inbox; only the app is faked. Proves the API shapes opsctl decodes and the heartbeat path, secured
//! as the native stack is: basic auth on both (their own web config), the webhook token from a file.
//! Fails where the binaries are missing: `native/install.sh` (run by `make test`) installs them.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use clap::Parser;
use opsctl::secrets::Secrets;
use opsctl::smoke;

use crate::fake_stack::{FakeStack, Knobs};

/// The web password of this test's Prometheus and Alertmanager, and its bcrypt hash (cost 10, from
/// `htpasswd -nbBC 10 admin <password>`) that their web config holds.
const WEB_PASSWORD: &str = "opsctl-it-web-password";
const WEB_PASSWORD_BCRYPT: &str = "$2y$10$7KkhZvU3aa1h5CPVihOhgOfQt1.xffzwyFS6hmdqp055ZCOZmulKq";

/// A child process killed when the test ends, however it ends.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn find_binary(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    names
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn spawn(binary: &Path, args: &[String], log: &Path) -> Daemon {
    let log = std::fs::File::create(log).unwrap();
    Daemon(
        Command::new(binary)
            .args(args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("the daemon starts"),
    )
}

fn host_port(base: &str) -> &str {
    base.trim_start_matches("http://")
}

#[tokio::test]
async fn smoke_passes_against_real_prometheus_and_alertmanager() {
    let install_hint = "is not installed: run native/install.sh (make test does)";
    let prometheus = find_binary(&["prometheus"]).unwrap_or_else(|| panic!("prometheus {install_hint}"));
    let alertmanager = find_binary(&["prometheus-alertmanager", "alertmanager"])
        .unwrap_or_else(|| panic!("prometheus-alertmanager {install_hint}"));
    let stack = FakeStack::start(Knobs::default()).await;
    let dir = std::env::temp_dir().join(format!("opsctl-real-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (prom_port, am_port) = (free_port(), free_port());
    let inbox = &stack.inbox;
    // The stack's runbook links name localhost, which may resolve to ::1 first while the inbox listens on IPv4.
    let runbooks = inbox.replace("127.0.0.1", "localhost");
    let secrets = dir.join("secrets");
    stack.write_secrets(&secrets);
    std::fs::write(secrets.join("web.password"), format!("{WEB_PASSWORD}\n")).unwrap();
    std::fs::write(
        dir.join("web-config.yml"),
        format!("basic_auth_users:\n  admin: '{WEB_PASSWORD_BCRYPT}'\n"),
    )
    .unwrap();
    let token_file = secrets.join("webhook.token");
    let token_file = token_file.display();

    std::fs::write(
        dir.join("alertmanager.yml"),
        format!(
            r#"route:
  receiver: ticket
  group_by: [alertname, service]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1m
  routes:
    - receiver: heartbeat
      matchers: ['alertname="Watchdog"']
    - receiver: pager
      matchers: ['severity="critical"']
receivers:
  - name: pager
    webhook_configs:
      [{{url: "{inbox}/hook/pager", send_resolved: true, http_config: {{authorization: {{credentials_file: "{token_file}"}}}}}}]
  - name: ticket
    webhook_configs:
      [{{url: "{inbox}/hook/ticket", send_resolved: true, http_config: {{authorization: {{credentials_file: "{token_file}"}}}}}}]
  - name: heartbeat
    webhook_configs:
      [{{url: "{inbox}/hook/heartbeat", send_resolved: true, http_config: {{authorization: {{credentials_file: "{token_file}"}}}}}}]
"#
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("rules.yml"),
        format!(
            r#"groups:
  - name: pipeline
    rules:
      - alert: Watchdog
        expr: vector(1)
        labels: {{severity: none}}
        annotations: {{summary: Always firing., runbook_url: "{runbooks}/runbooks/Watchdog.md"}}
      - alert: RedisDown
        expr: vector(1) == 0
        for: 1m
        labels: {{severity: critical, service: redis}}
        annotations: {{summary: Redis is down., runbook_url: "{runbooks}/runbooks/RedisDown.md"}}
      - record: job:up:sum
        expr: sum by (job) (up)
"#
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            r#"global: {{scrape_interval: 1s, evaluation_interval: 1s, scrape_timeout: 1s}}
rule_files: [rules.yml]
alerting:
  alertmanagers:
    - basic_auth: {{username: admin, password: {WEB_PASSWORD}}}
      static_configs: [{{targets: ["127.0.0.1:{am_port}"]}}]
scrape_configs:
  - job_name: prometheus
    basic_auth: {{username: admin, password: {WEB_PASSWORD}}}
    static_configs: [{{targets: ["127.0.0.1:{prom_port}"]}}]
  - job_name: alertmanager
    basic_auth: {{username: admin, password: {WEB_PASSWORD}}}
    static_configs: [{{targets: ["127.0.0.1:{am_port}"]}}]
  - job_name: inbox
    static_configs: [{{targets: ["{}"]}}]
"#,
            host_port(inbox)
        ),
    )
    .unwrap();

    let _am = spawn(
        &alertmanager,
        &[
            format!("--config.file={}", dir.join("alertmanager.yml").display()),
            format!("--storage.path={}", dir.join("am-data").display()),
            format!("--web.listen-address=127.0.0.1:{am_port}"),
            format!("--web.config.file={}", dir.join("web-config.yml").display()),
            "--cluster.listen-address=".to_string(),
        ],
        &dir.join("alertmanager.log"),
    );
    let _prom = spawn(
        &prometheus,
        &[
            format!("--config.file={}", dir.join("prometheus.yml").display()),
            format!("--storage.tsdb.path={}", dir.join("prom-data").display()),
            format!("--web.listen-address=127.0.0.1:{prom_port}"),
            format!("--web.config.file={}", dir.join("web-config.yml").display()),
            // Its first send comes before it has discovered Alertmanager and is dropped; resend soon after.
            "--rules.alert.resend-delay=2s".to_string(),
        ],
        &dir.join("prometheus.log"),
    );

    let base = &stack.base;
    let prom = format!("http://127.0.0.1:{prom_port}");
    let am = format!("http://127.0.0.1:{am_port}");
    let argv = [
        "opsctl",
        "smoke",
        "--app",
        base,
        "--admin",
        base,
        "--prometheus",
        &prom,
        "--alertmanager",
        &am,
        "--inbox",
        inbox,
        "--expect-jobs",
        "prometheus,alertmanager,inbox",
        "--timeout",
        "60s",
        "--heartbeat-timeout",
        "60s",
    ];
    let opsctl::Command::Smoke(args) = opsctl::Cli::try_parse_from(argv).unwrap().command else {
        unreachable!()
    };
    let result = smoke::run(&args, &Secrets::load(&secrets)).await;
    if let Err(failure) = &result {
        let logs = ["prometheus.log", "alertmanager.log"]
            .map(|f| format!("--- {f}\n{}", std::fs::read_to_string(dir.join(f)).unwrap_or_default()));
        panic!("smoke failed: {failure}\n{}", logs.join("\n"));
    }
    // Secured as the stack is: without the secrets, Prometheus refuses.
    let quick = smoke::SmokeArgs {
        timeout: std::time::Duration::from_secs(1),
        ..args
    };
    let refused = smoke::run(&quick, &Secrets::none()).await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|f| f.link.starts_with("prometheus targets") && f.detail.contains("401")),
        "without credentials: {refused:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
