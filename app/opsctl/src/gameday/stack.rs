//! The stack under test as the game day reaches it: its HTTP APIs, the supervisor's programs, Postgres, and Redis
//! spoken to in RESP directly (a handful of admin commands does not justify a client library). With
//! `--secrets-dir`, each gets its credentials: basic auth for Prometheus and Alertmanager, the admin token for the
//! app's `/fault`, the superuser `postgres` for Postgres and the ACL user `admin` for Redis.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::Client;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::GamedayArgs;
use crate::clients::{http_client, Alertmanager, Auth, Inbox, Prometheus};
use crate::duration::format_duration;
use crate::load::LoadArgs;
use crate::secrets::{Secret, SecretFile, Secrets, POSTGRES_USER, REDIS_ADMIN_USER, WEB_USER};

/// Everything a scenario needs to reach the stack.
pub struct Ctx {
    pub args: GamedayArgs,
    pub http: Client,
    pub prometheus: Prometheus,
    pub alertmanager: Alertmanager,
    pub inbox: Inbox,
    /// Sent to the app's admin listener (`/fault`, `/metrics`).
    pub admin_auth: Auth,
    /// Where and as whom the drills connect to Postgres.
    pub pg: tokio_postgres::Config,
    /// Where and as whom the drills talk to Redis.
    pub redis: Redis,
    started: Instant,
}

/// The requests the SLOs count (monitoring/slos.yml): the app's, except the health endpoints.
pub fn slo_requests() -> &'static str {
    &::stack::slo::spec().requests.selector
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
    pub fn new(args: GamedayArgs, secrets: &Secrets) -> Result<Self, String> {
        let http = http_client(Duration::from_secs(10), 32);
        let web = Auth::basic(WEB_USER, secrets.get(SecretFile::WebPassword)?);
        let admin_auth = Auth::bearer(secrets.get(SecretFile::AppAdminToken)?);
        let pg = postgres_config(&args.database_url, secrets.get(SecretFile::PostgresPassword)?)?;
        let redis = Redis {
            addr: args.redis_addr.clone(),
            auth: secrets
                .get(SecretFile::RedisAdminPassword)?
                .map(|password| (REDIS_ADMIN_USER.to_string(), password)),
        };
        Ok(Ctx {
            prometheus: Prometheus::new(http.clone(), &args.prometheus).with_auth(web.clone()),
            alertmanager: Alertmanager::new(http.clone(), &args.alertmanager).with_auth(web),
            inbox: Inbox::new(http.clone(), &args.inbox),
            admin_auth,
            pg,
            redis,
            http,
            args,
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
    pub async fn supervisor(&self, action: &str, program: &str) -> Result<(), String> {
        let command = format!("{} {action} {program}", self.args.ctl);
        let output = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(&command)
            .output()
            .await
            .map_err(|e| format!("{command}: {e}"))?;
        if output.status.success() {
            self.say(&format!("supervisor: {action} {program}"));
            Ok(())
        } else {
            Err(format!(
                "{command}: {}{}",
                String::from_utf8_lossy(&output.stdout).trim(),
                String::from_utf8_lossy(&output.stderr).trim()
            ))
        }
    }

    /// Waits until the app answers its liveness route.
    pub async fn wait_app_healthy(&self, limit: Duration) -> Result<(), String> {
        let url = format!("{}/healthcheck", self.args.app.trim_end_matches('/'));
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(r) = self.http.get(&url).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(format!("{url} did not answer within {limit:?}"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The id of the newest notification in the inbox (0 when empty): later ones are the game day's.
    pub async fn last_notification_id(&self) -> Result<u64, String> {
        let newest = self
            .inbox
            .notifications(&[("limit", "1")])
            .await
            .map_err(|e| e.to_string())?;
        Ok(newest.first().map(|n| n.id).unwrap_or(0))
    }
}

/// The drills' Postgres: host, port and database from `--database-url`; with the secrets, the superuser
/// `postgres` and `postgres.password` instead of the URL's user (the drills lock rows, open connections and read
/// settings the app's role may not), else the URL as it is.
pub fn postgres_config(url: &str, password: Option<Secret>) -> Result<tokio_postgres::Config, String> {
    // The URL may hold a password: the message names the option, not the value.
    let mut config: tokio_postgres::Config = url
        .parse()
        .map_err(|e| format!("--database-url is not a Postgres URL: {e}"))?;
    if let Some(password) = password {
        config.user(POSTGRES_USER).password(password.expose());
        // The app's tables live in its own schema, which is not on the superuser's search path.
        config.options("-c search_path=app,public");
    }
    Ok(config)
}

/// Redis as the game day reaches it: its address and, on the secured stack, the ACL user and password every
/// connection authenticates as first.
#[derive(Debug, Clone)]
pub struct Redis {
    /// `host:port`.
    pub addr: String,
    /// `(user, password)` for `AUTH`; `None` on an unauthenticated Redis.
    pub auth: Option<(String, Secret)>,
}

/// The game day's key space: `gameday-0` … `gameday-199`, written before anything else.
pub const KEY_PREFIX: &str = "gameday";
pub const KEYS: u64 = 200;

/// Sends one command to Redis and returns its reply as text: simple strings and numbers as they are, bulk strings
/// as their content, arrays one element per line. A Redis error reply is an `Err`. Messages name the command by
/// its arguments.
pub async fn redis_command(redis: &Redis, args: &[&str]) -> Result<String, String> {
    redis_call(redis, &args.join(" "), args).await
}

/// [`redis_command`], with messages naming the command `what` (for commands whose arguments are not for logs).
pub async fn redis_call(redis: &Redis, what: &str, args: &[&str]) -> Result<String, String> {
    let addr = redis.addr.as_str();
    let run = async {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect to Redis at {addr}: {e}"))?;
        let mut stream = BufReader::new(stream);
        if let Some((user, password)) = &redis.auth {
            // First, and awaited: a command sent before the answer would run as the disabled `default` user.
            send(&mut stream, &["AUTH", user, password.expose()]).await?;
            read_reply(&mut stream)
                .await
                .map_err(|e| format!("AUTH as {user} (redis-admin.password): {e}"))?;
        }
        send(&mut stream, args).await?;
        read_reply(&mut stream).await
    };
    tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .map_err(|_| format!("Redis {what}: timed out"))?
        .map_err(|e| format!("Redis {what}: {e}"))
}

async fn send(stream: &mut BufReader<TcpStream>, args: &[&str]) -> Result<(), String> {
    let mut request = format!("*{}\r\n", args.len());
    for a in args {
        request.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    stream
        .get_mut()
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())
}

async fn read_reply(stream: &mut BufReader<TcpStream>) -> Result<String, String> {
    let mut line = String::new();
    stream.read_line(&mut line).await.map_err(|e| e.to_string())?;
    let line = line.trim_end_matches(['\r', '\n']);
    let (kind, rest) = line.split_at(line.len().min(1));
    match kind {
        "+" | ":" => Ok(rest.to_string()),
        "-" => Err(rest.to_string()),
        "$" => {
            let len: i64 = rest.parse().map_err(|_| format!("bad bulk length {rest:?}"))?;
            if len < 0 {
                return Ok(String::new());
            }
            let mut buf = vec![0; len as usize + 2];
            stream.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
            buf.truncate(len as usize);
            Ok(String::from_utf8_lossy(&buf).into_owned())
        }
        "*" => {
            let n: i64 = rest.parse().map_err(|_| format!("bad array length {rest:?}"))?;
            let mut items = Vec::new();
            for _ in 0..n.max(0) {
                items.push(Box::pin(read_reply(stream)).await?);
            }
            Ok(items.join("\n"))
        }
        _ => Err(format!("unexpected reply {line:?}")),
    }
}

/// One numeric field of a section of Redis's INFO.
pub async fn redis_info_field<T: std::str::FromStr>(redis: &Redis, section: &str, field: &str) -> Result<T, String> {
    let info = redis_command(redis, &["INFO", section]).await?;
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("INFO {section} has no numeric {field}"))
}

/// Where Prometheus's native configuration lives (targets/ and drills/).
pub fn default_prometheus_dir() -> PathBuf {
    PathBuf::from(std::env::var("STATE_DIR").unwrap_or_else(|_| "/var/tmp/sre-stack".to_string())).join("prometheus")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

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
        assert!(err.contains("--database-url"), "{err}");
    }

    /// A one-connection RESP server: answers each command from `replies`, in order, and returns what it received.
    async fn fake_redis(replies: &'static [&'static str]) -> (String, tokio::task::JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let task = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut stream = BufReader::new(stream);
            let mut received = Vec::new();
            for reply in replies {
                // `*<n>` then `$<len>` / `<arg>` pairs.
                let mut line = String::new();
                stream.read_line(&mut line).await.unwrap();
                let n: usize = line.trim()[1..].parse().unwrap();
                let mut args = Vec::new();
                for _ in 0..n {
                    let (mut len, mut arg) = (String::new(), String::new());
                    stream.read_line(&mut len).await.unwrap();
                    stream.read_line(&mut arg).await.unwrap();
                    args.push(arg.trim_end().to_string());
                }
                received.push(args.join(" "));
                stream.get_mut().write_all(reply.as_bytes()).await.unwrap();
            }
            received
        });
        (addr, task)
    }

    #[tokio::test]
    async fn redis_commands_authenticate_first_when_configured() {
        let (addr, server) = fake_redis(&["+OK\r\n", "+PONG\r\n"]).await;
        let redis = Redis {
            addr,
            auth: Some(("admin".into(), Secret::new("redis-pass"))),
        };
        assert_eq!(redis_command(&redis, &["PING"]).await.unwrap(), "PONG");
        assert_eq!(server.await.unwrap(), vec!["AUTH admin redis-pass", "PING"]);

        let (addr, server) = fake_redis(&["+PONG\r\n"]).await;
        let plain = Redis { addr, auth: None };
        assert_eq!(redis_command(&plain, &["PING"]).await.unwrap(), "PONG");
        assert_eq!(server.await.unwrap(), vec!["PING"]);
    }

    #[tokio::test]
    async fn a_refused_login_is_reported_without_the_password() {
        let (addr, _server) = fake_redis(&["-WRONGPASS invalid username-password pair or user is disabled.\r\n"]).await;
        let redis = Redis {
            addr,
            auth: Some(("admin".into(), Secret::new("redis-pass"))),
        };
        let err = redis_command(&redis, &["PING"]).await.unwrap_err();
        assert!(err.contains("AUTH as admin") && err.contains("WRONGPASS"), "{err}");
        assert!(!err.contains("redis-pass"), "{err}");
    }
}
