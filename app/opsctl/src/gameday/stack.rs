//! The stack under test as the game day reaches it: its HTTP APIs, the supervisor's programs, Postgres, and Redis
//! (see [`super::redis`]). With
//! `--secrets-dir`, each gets its credentials: basic auth for Prometheus and Alertmanager, the admin token for the
//! app's `/fault`, the superuser `postgres` for Postgres and the ACL user `admin` for Redis.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::Client;

use super::error::Error;
use super::peer_outages::PeerOutages;
pub use super::redis::Redis;
use super::GamedayArgs;
use crate::clients::{http_client, Alertmanager, Auth, ClientError, Inbox, Prometheus};
use crate::duration::format_duration;
use crate::load::LoadArgs;
use crate::secrets::{Secret, SecretFile, Secrets, POSTGRES_USER, REDIS_ADMIN_USER, WEB_USER};

/// Everything a scenario needs to reach the stack.
pub struct Ctx {
    pub args: GamedayArgs,
    pub http: Client,
    pub prometheus: Prometheus,
    /// Every Alertmanager peer, in order (at least one).
    pub alertmanagers: Vec<Alertmanager>,
    pub inbox: Inbox,
    /// Sent to the app's admin listener (`/fault`, `/metrics`).
    pub admin_auth: Auth,
    /// Where and as whom the drills connect to Postgres.
    pub pg: tokio_postgres::Config,
    /// Where and as whom the drills talk to Redis.
    pub redis: Redis,
    /// Alertmanager peers the drills hold out of the cluster (their notifications' bounds grow).
    pub peer_outages: PeerOutages,
    started: Instant,
}

/// The requests the SLOs count (monitoring/slos.yml): the app's, except the health endpoints.
pub fn slo_requests() -> &'static str {
    &::stack::slo::spec().requests.selector
}

/// The host of a URL (`127.0.4.1` of `http://127.0.4.1:2379`).
pub fn host_of(url: &str) -> Result<String, Error> {
    reqwest::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .ok_or_else(|| Error::BadUrl(url.to_owned()))
}

/// Unix time in milliseconds: the inbox stamps notifications with the same clock.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Ctx {
    /// The stack as `args` and `secrets` describe it; fails on a secret file the game day needs that cannot be
    /// read, or a `--database-url` that does not parse.
    pub fn new(args: GamedayArgs, secrets: &Secrets) -> Result<Self, Error> {
        let http = http_client(Duration::from_secs(10), 32);
        if args.alertmanager.is_empty() || args.admin.is_empty() || args.replica_api.is_empty() {
            return Err(Error::NoAddress);
        }
        let secret = |file| secrets.get(file).map_err(Error::Secret);
        let web = Auth::basic(WEB_USER, secret(SecretFile::WebPassword)?);
        let admin_auth = Auth::bearer(secret(SecretFile::AppAdminToken)?);
        let pg = postgres_config(&args.database_url, secret(SecretFile::PostgresPassword)?)?;
        let redis = Redis {
            addr: args.redis_addr.clone(),
            auth: secret(SecretFile::RedisAdminPassword)?.map(|password| (REDIS_ADMIN_USER.to_string(), password)),
        };
        Ok(Ctx {
            prometheus: Prometheus::new(http.clone(), &args.prometheus).with_auth(web.clone()),
            alertmanagers: args
                .alertmanager
                .iter()
                .map(|url| Alertmanager::new(http.clone(), url).with_auth(web.clone()))
                .collect(),
            inbox: Inbox::new(http.clone(), &args.inbox),
            admin_auth,
            pg,
            redis,
            http,
            args,
            peer_outages: PeerOutages::default(),
            started: Instant::now(),
        })
    }

    /// A progress line on stderr, stamped with the time since the game day started.
    pub fn say(&self, message: &str) {
        eprintln!("[{:>7}] {message}", format_duration(self.started.elapsed()));
    }

    /// `opsctl load` settings for the game day's traffic: its own key space, no progress lines.
    pub fn load_args(&self) -> LoadArgs {
        LoadArgs {
            url: self.args.app.clone(),
            rate: self.args.rate,
            duration: Duration::from_secs(24 * 3600),
            concurrency: 16,
            keys: KEYS,
            read_ratio: 0.9,
            missing_ratio: 0.0,
            hello_ratio: 0.0,
            key_prefix: KEY_PREFIX.to_string(),
            timeout: Duration::from_secs(5),
            no_seed: true,
            json: false,
            quiet: true,
        }
    }

    /// Runs `<ctl> <action> <program>` (the supervisor's control command, `native/ctl.sh` natively).
    pub async fn supervisor(&self, action: &str, program: &str) -> Result<(), Error> {
        // Each name quoted: a replicated program's group is `app:*`, which the shell must not expand; `program` may
        // name several, separated by spaces.
        let names: Vec<String> = program.split_whitespace().map(|p| format!("'{p}'")).collect();
        let command = format!("{} {action} {}", self.args.ctl, names.join(" "));
        let output = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(&command)
            .output()
            .await
            .map_err(|source| Error::SupervisorSpawn {
                command: command.clone(),
                source,
            })?;
        if output.status.success() {
            self.say(&format!("supervisor: {action} {program}"));
            Ok(())
        } else {
            Err(Error::Supervisor {
                command,
                output: format!(
                    "{}{}",
                    String::from_utf8_lossy(&output.stdout).trim(),
                    String::from_utf8_lossy(&output.stderr).trim()
                ),
            })
        }
    }

    /// Waits until the app answers its liveness route.
    pub async fn wait_app_healthy(&self, limit: Duration) -> Result<(), Error> {
        let url = format!("{}/healthcheck", self.args.app.trim_end_matches('/'));
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(r) = self.http.get(&url).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(Error::AppUnhealthy { url, limit });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `call` on the first Alertmanager peer that answers: a drill may have stopped or cut off another.
    async fn first_peer<T>(
        &self,
        call: impl AsyncFn(&Alertmanager) -> Result<T, ClientError>,
    ) -> Result<T, ClientError> {
        let mut last = None;
        for am in &self.alertmanagers {
            match call(am).await {
                Ok(v) => return Ok(v),
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("Ctx::new refuses an empty peer list"))
    }

    /// The alerts Alertmanager holds, from the first peer that answers.
    pub async fn held_alerts(&self) -> Result<Vec<crate::clients::AlertmanagerAlert>, ClientError> {
        self.first_peer(async |am| am.alerts().await).await
    }

    /// Alertmanager's status (its configuration among it), from the first peer that answers.
    pub async fn alertmanager_status(&self) -> Result<crate::clients::AlertmanagerStatus, ClientError> {
        self.first_peer(async |am| am.status().await).await
    }

    /// The supervisor's names of the app replicas, in order (`app:app-1`, …), one per `--replica-api`.
    pub fn replica_names(&self) -> Vec<String> {
        (1..=self.args.replica_api.len())
            .map(|n| format!("app:app-{n}"))
            .collect()
    }

    /// Waits until HAProxy's health checks have put server `host` (`app-1`) back in rotation.
    pub async fn wait_replica_in_rotation(&self, host: &str, limit: Duration) -> Result<(), Error> {
        let url = format!("{}/metrics", self.args.haproxy_metrics.trim_end_matches('/'));
        let up = format!("haproxy_server_status{{proxy=\"app\",server=\"{host}\",state=\"UP\"}} 1");
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(r) = self.http.get(&url).send().await {
                if let Ok(text) = r.text().await {
                    if text.lines().any(|l| l.trim() == up) {
                        return Ok(());
                    }
                }
            }
            if Instant::now() > deadline {
                return Err(Error::NotInRotation {
                    server: host.to_string(),
                    limit,
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The host address of every Alertmanager peer (from `--alertmanager`), in order.
    pub fn alertmanager_addresses(&self) -> Result<Vec<String>, Error> {
        self.args.alertmanager.iter().map(|u| host_of(u)).collect()
    }

    /// The id of the newest notification in the inbox (0 when empty): later ones are the game day's.
    pub async fn last_notification_id(&self) -> Result<u64, Error> {
        let newest = self.inbox.notifications(&[("limit", "1")]).await?;
        Ok(newest.first().map(|n| n.id).unwrap_or(0))
    }
}

/// The drills' Postgres: host, port and database from `--database-url`; with the secrets, the superuser
/// `postgres` and `postgres.password` instead of the URL's user (the drills lock rows, open connections and read
/// settings the app's role may not), else the URL as it is.
pub fn postgres_config(url: &str, password: Option<Secret>) -> Result<tokio_postgres::Config, Error> {
    let mut config: tokio_postgres::Config = url.parse().map_err(Error::DatabaseUrl)?;
    if let Some(password) = password {
        config.user(POSTGRES_USER).password(password.expose());
        // The app's tables live in its own schema, which is not on the superuser's search path.
        config.options("-c search_path=app,public");
    }
    Ok(config)
}

/// The game day's key space: `gameday-0` … `gameday-199`, written before anything else.
pub const KEY_PREFIX: &str = "gameday";
pub const KEYS: u64 = 200;

/// Where Prometheus's native configuration lives (targets/ and drills/).
pub fn default_prometheus_dir() -> PathBuf {
    PathBuf::from(std::env::var("STATE_DIR").unwrap_or_else(|_| "/var/tmp/sre-stack".to_string())).join("prometheus")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_the_secrets_postgres_is_reached_as_the_superuser_at_the_urls_address() {
        let url = "postgres://app:app-pass@127.0.0.1:45432/app";
        let plain = postgres_config(url, None).unwrap();
        assert_eq!(plain.get_user(), Some("app"));
        assert_eq!(plain.get_password(), Some(&b"app-pass"[..]));
        let secured = postgres_config(url, Some(Secret::new("su-pass"))).unwrap();
        assert_eq!(secured.get_user(), Some("postgres"));
        assert_eq!(secured.get_password(), Some(&b"su-pass"[..]));
        assert_eq!(secured.get_dbname(), Some("app"));
        assert_eq!(secured.get_ports(), &[45432]);
        let err = postgres_config("not a url at all://", None).unwrap_err();
        assert!(matches!(err, Error::DatabaseUrl(_)), "{err}");
        assert!(err.to_string().contains("--database-url"), "{err}");
    }
}
