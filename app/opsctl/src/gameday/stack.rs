//! The stack under test as the game day reaches it: its HTTP APIs, the supervisor's programs, and Redis spoken
//! to in RESP directly (a handful of admin commands does not justify a client library).

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::Client;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::GamedayArgs;
use crate::clients::{http_client, Alertmanager, Inbox, Prometheus};
use crate::duration::format_duration;
use crate::load::LoadArgs;

/// Everything a scenario needs to reach the stack.
pub struct Ctx {
    pub args: GamedayArgs,
    pub http: Client,
    pub prometheus: Prometheus,
    pub alertmanager: Alertmanager,
    pub inbox: Inbox,
    started: Instant,
}

/// The requests the SLOs count (alerts/slo.yml): the app's, except the health endpoints.
pub const SLO_REQUESTS: &str = r#"job="app", http_route!~"/healthcheck|/status""#;

/// Unix time in milliseconds: the inbox stamps notifications with the same clock.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Ctx {
    pub fn new(args: GamedayArgs) -> Self {
        let http = http_client(Duration::from_secs(10), 32);
        Ctx {
            prometheus: Prometheus::new(http.clone(), &args.prometheus),
            alertmanager: Alertmanager::new(http.clone(), &args.alertmanager),
            inbox: Inbox::new(http.clone(), &args.inbox),
            http,
            args,
            started: Instant::now(),
        }
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

/// The game day's key space: `gameday-0` … `gameday-199`, written before anything else.
pub const KEY_PREFIX: &str = "gameday";
pub const KEYS: u64 = 200;

/// Sends one command to Redis and returns its reply as text: simple strings and numbers as they are, bulk strings
/// as their content, arrays one element per line. A Redis error reply is an `Err`.
pub async fn redis_command(addr: &str, args: &[&str]) -> Result<String, String> {
    let what = args.join(" ");
    let run = async {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect to Redis at {addr}: {e}"))?;
        let mut stream = BufReader::new(stream);
        let mut request = format!("*{}\r\n", args.len());
        for a in args {
            request.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        stream
            .get_mut()
            .write_all(request.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        read_reply(&mut stream).await
    };
    tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .map_err(|_| format!("Redis {what}: timed out"))?
        .map_err(|e| format!("Redis {what}: {e}"))
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
pub async fn redis_info_field<T: std::str::FromStr>(addr: &str, section: &str, field: &str) -> Result<T, String> {
    let info = redis_command(addr, &["INFO", section]).await?;
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("INFO {section} has no numeric {field}"))
}

/// Where Prometheus's native configuration lives (targets/ and drills/).
pub fn default_prometheus_dir() -> PathBuf {
    PathBuf::from(std::env::var("STATE_DIR").unwrap_or_else(|_| "/var/tmp/sre-stack".to_string())).join("prometheus")
}
