//! `opsctl smoke`: checks a running stack end to end, in the order a request and an alert travel through it,
//! and stops at the first broken link, naming it:
//! app routes → app metrics → Prometheus targets → rules → Alertmanager config → the inbox's webhook token →
//! Watchdog heartbeat at the inbox → every alert's runbook link.
//!
//! With `--secrets-dir`, Prometheus and Alertmanager get basic auth, the admin listener its bearer token, and the
//! inbox check uses the webhook token; without it nothing is sent (and the token check is skipped).
//!
//! Checks that depend on something warming up (Postgres and Redis for `/status`, targets being scraped, rule
//! evaluation, Alertmanager's config) are retried until `--timeout`, each getting the whole timeout; the
//! heartbeat gets `--heartbeat-timeout`.

mod app;
mod stack;

use std::cell::Cell;
use std::future::Future;
use std::time::{Duration, Instant};

use ::stack::topology::Topology;
use clap::Args;

use crate::clients::{http_client, Alertmanager, Auth, Inbox, Prometheus};
use crate::duration::{format_duration, parse_duration};
use crate::secrets::{SecretFile, Secrets, WEB_USER};

/// Arguments of `opsctl smoke`.
#[derive(Debug, Clone, Args)]
pub struct SmokeArgs {
    /// Base URL of the app's public API (HAProxy, in front of every replica).
    #[arg(long, default_value_t = Topology::embedded().url("haproxy", "public"))]
    pub app: String,
    /// Base URLs of every app replica's admin listener (/metrics), comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = Topology::embedded().urls("app", "admin"))]
    pub admin: Vec<String>,
    /// Base URL of Prometheus (its first replica).
    #[arg(long, default_value_t = Topology::embedded().url("prometheus", "web"))]
    pub prometheus: String,
    /// Base URL of Alertmanager (its first peer).
    #[arg(long, default_value_t = Topology::embedded().url("alertmanager", "web"))]
    pub alertmanager: String,
    /// Base URL of the on-call inbox.
    #[arg(long, default_value_t = Topology::embedded().url("inbox", "http"))]
    pub inbox: String,
    /// Scrape jobs that must each have at least one target, all up.
    #[arg(long, value_delimiter = ',', default_values_t = Topology::embedded().job_names().into_iter().map(String::from))]
    pub expect_jobs: Vec<String>,
    /// How long each waiting check (targets up, rules healthy, Alertmanager config, …) may take.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// How long to wait for the Watchdog heartbeat at the inbox.
    ///
    /// Longer than --timeout by default: right after startup Prometheus sends its first alerts before it has
    /// discovered Alertmanager, drops them, and resends only after its --rules.alert.resend-delay (1m by
    /// default); Alertmanager then waits its group_wait.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    pub heartbeat_timeout: Duration,
    /// Time limit of each HTTP request.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub request_timeout: Duration,
}

/// The first broken link: what it is and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The link, e.g. `app GET /status` or `prometheus target job=redis`.
    pub link: String,
    /// What was expected and what came instead.
    pub detail: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.link, self.detail)
    }
}

impl std::error::Error for Failure {}

/// The outcome of one check; the detail of an `Err` becomes the failure's detail.
pub type Check<T = ()> = Result<T, String>;

/// Runs the checks, printing one line per passed check; returns how many passed, or the first failure. A secret
/// file the checks need that cannot be read is the first failure (link `credentials`).
pub async fn run(args: &SmokeArgs, secrets: &Secrets) -> Result<usize, Failure> {
    let secret = |file| {
        secrets.get(file).map_err(|detail| Failure {
            link: "credentials".to_string(),
            detail,
        })
    };
    let web = Auth::basic(WEB_USER, secret(SecretFile::WebPassword)?);
    let admin_auth = Auth::bearer(secret(SecretFile::AppAdminToken)?);
    let webhook_token = secret(SecretFile::WebhookToken)?;
    let client = http_client(args.request_timeout, 4);
    let smoke = Smoke {
        args,
        client: client.clone(),
        admin_auth,
        prometheus: Prometheus::new(client.clone(), &args.prometheus).with_auth(web.clone()),
        alertmanager: Alertmanager::new(client.clone(), &args.alertmanager).with_auth(web),
        inbox: Inbox::new(client, &args.inbox).with_webhook_token(webhook_token),
        passed: Cell::new(0),
    };
    app::check_routes(&smoke).await?;
    stack::check_app_metrics(&smoke).await?;
    stack::check_targets(&smoke).await?;
    let rules = stack::check_rules(&smoke).await?;
    stack::check_alertmanager_config(&smoke).await?;
    stack::check_webhook_token(&smoke).await?;
    stack::check_heartbeat(&smoke).await?;
    stack::check_runbooks(&smoke, &rules).await?;
    Ok(smoke.passed.get())
}

/// What the checks share.
pub struct Smoke<'a> {
    args: &'a SmokeArgs,
    client: reqwest::Client,
    /// Sent to the app's admin listener.
    admin_auth: Auth,
    prometheus: Prometheus,
    alertmanager: Alertmanager,
    inbox: Inbox,
    /// Checks passed so far (a `Cell` so checks can borrow the clients while counting).
    passed: Cell<usize>,
}

impl Smoke<'_> {
    /// Runs one check once.
    async fn once<T>(&self, link: impl Into<String>, check: impl Future<Output = Check<T>>) -> Result<T, Failure> {
        let link = link.into();
        let value = check.await.map_err(|detail| Failure {
            link: link.clone(),
            detail,
        })?;
        self.pass(&link, None);
        Ok(value)
    }

    /// Retries a check every second until it passes or `--timeout` is over; the failure carries the last error.
    async fn wait<T, F, Fut>(&self, link: impl Into<String>, check: F) -> Result<T, Failure>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Check<T>>,
    {
        self.wait_for(self.args.timeout, link, check).await
    }

    /// [`Smoke::wait`] with its own time limit.
    async fn wait_for<T, F, Fut>(&self, timeout: Duration, link: impl Into<String>, mut check: F) -> Result<T, Failure>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Check<T>>,
    {
        let link = link.into();
        let started = Instant::now();
        loop {
            match check().await {
                Ok(value) => {
                    self.pass(&link, Some(started.elapsed()));
                    return Ok(value);
                }
                Err(detail) if started.elapsed() >= timeout => {
                    let detail = format!("{detail} (still failing after {})", format_duration(timeout));
                    return Err(Failure { link, detail });
                }
                Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        }
    }

    fn pass(&self, link: &str, waited: Option<Duration>) {
        self.passed.set(self.passed.get() + 1);
        match waited {
            Some(w) if w >= Duration::from_secs(1) => {
                println!("ok  {link} (after {})", format_duration(w))
            }
            _ => println!("ok  {link}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: SmokeArgs,
    }

    #[test]
    fn the_defaults_are_the_topologys_addresses_and_every_scrape_job() {
        let args = Wrapper::try_parse_from(["smoke"]).unwrap().args;
        assert_eq!(
            [&args.app, &args.prometheus, &args.alertmanager, &args.inbox],
            [
                "http://127.0.0.1:8080",
                "http://127.0.2.1:9090",
                "http://127.0.3.1:9093",
                "http://127.0.0.1:8082"
            ]
        );
        assert_eq!(args.admin, ["http://127.0.1.1:8081", "http://127.0.1.2:8081"]);
        assert_eq!(args.expect_jobs, Topology::embedded().job_names());
        assert!(args.expect_jobs.len() > 1 && args.expect_jobs.contains(&"inbox".to_string()));
    }
}
