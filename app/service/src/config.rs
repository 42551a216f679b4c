//! The service's configuration: documented defaults, overridden by `APP_*` environment variables, validated once at
//! startup so that a bad value stops the process with a message naming the variable and what it expected.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// Everything the service reads from its environment. `.env.example` at the repository root lists every variable
/// with its default; keep the two in step (a unit test checks it).
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the API listens (`APP_LISTEN_ADDR`, default `127.0.0.1:8080`; port 0 picks a free port).
    pub listen_addr: SocketAddr,
    /// Where the admin listener (`/metrics`, fault injection) listens (`APP_ADMIN_ADDR`, default `127.0.0.1:8081`).
    pub admin_addr: SocketAddr,
    /// Postgres connection URL (`APP_DATABASE_URL`, default `postgres://app:app@127.0.0.1:5432/app`). No TLS:
    /// the database is reached over loopback or a private network.
    pub database_url: SecretUrl,
    /// Redis connection URL (`APP_REDIS_URL`, default `redis://127.0.0.1:6379`).
    pub redis_url: SecretUrl,
    /// Log line format (`APP_LOG_FORMAT`: `text` or `json`, default `text`).
    pub log_format: LogFormat,
    /// Log filter in `tracing` directive syntax (`APP_LOG_LEVEL`, default `info`; `warn` drops the per-request lines).
    pub log_level: String,
    /// Whether the admin listener accepts fault injection (`APP_FAULT_INJECTION_ENABLED`, default `false`).
    /// Requires [`Config::admin_token`].
    pub fault_injection_enabled: bool,
    /// The bearer token every `/fault` request on the admin listener must carry (`APP_ADMIN_TOKEN_FILE`: a file
    /// holding it, read once at startup, surrounding whitespace trimmed; default none). Required while fault
    /// injection is enabled, so that no other local user can inject faults; `/metrics` needs none.
    pub admin_token: Option<AdminToken>,
    /// `Host` header values the admin listener accepts besides its own address (`APP_ADMIN_ALLOWED_HOSTS`,
    /// comma-separated `host:port`, default none), for a listener reached by a name, such as `app:8081` under
    /// compose. Any other name is refused, so that a web page cannot reach it through DNS rebinding.
    pub admin_allowed_hosts: Vec<String>,
    /// Whether requests are measured (`APP_METRICS_ENABLED`, default `true`). When `false` no metrics middleware sits
    /// on the request path and cache/database timings are not recorded; `/metrics` still serves the build, process
    /// and pool series. Benchmarks use it to measure the cost of instrumentation.
    pub metrics_enabled: bool,
    /// How long a value stays in Redis after it was read or written (`APP_CACHE_TTL_SECONDS`, default 300).
    pub cache_ttl: Duration,
    /// Maximum Postgres connections (`APP_DB_POOL_MAX_SIZE`, default 10).
    pub db_pool_max_size: u32,
    /// Longest wait for a Postgres connection from the pool, and the connect timeout of a new one
    /// (`APP_DB_ACQUIRE_TIMEOUT_MS`, default 500, at most 999): bounds how long a request waits while Postgres is
    /// down before it answers 503. Also the longest a write waits for its key's turn while other writes of the
    /// same key are in flight (then 503 `not_applied`).
    pub db_acquire_timeout: Duration,
    /// Longest the service waits for a Postgres statement before the request fails with 503
    /// (`APP_DB_QUERY_TIMEOUT_MS`, default 2000); it then asks Postgres to cancel it. Postgres gives up first: each
    /// connection sets `statement_timeout` to three quarters and `lock_timeout` to half of it.
    pub db_query_timeout: Duration,
    /// Maximum Redis connections (`APP_REDIS_POOL_MAX_SIZE`, default 8; each is multiplexed).
    pub redis_pool_max_size: u32,
    /// Longest wait for a Redis connection and for each Redis command (`APP_REDIS_TIMEOUT_MS`, default 250).
    /// After a Redis failure the cache is skipped for one second, so a stopped Redis costs at most one timeout
    /// per second rather than one per request.
    pub redis_timeout: Duration,
    /// Time limit of each dependency check made by `GET /status` (`APP_STATUS_TIMEOUT_MS`, default 500).
    pub status_timeout: Duration,
    /// How long in-flight requests may take to finish after SIGTERM/ctrl-c (`APP_SHUTDOWN_TIMEOUT_SECONDS`,
    /// default 10).
    pub shutdown_timeout: Duration,
    /// Largest accepted request body (`APP_MAX_BODY_BYTES`, default 65536); larger bodies get 413.
    pub max_body_bytes: usize,
    /// Longest accepted key in bytes of UTF-8 (`APP_MAX_KEY_BYTES`, default 256); longer keys get 400.
    pub max_key_bytes: usize,
    /// Most API connections open at once (`APP_MAX_CONNECTIONS`, default 1024). One more is answered 503 and
    /// closed, and counted. Each open connection holds a file descriptor, so the process needs a descriptor limit
    /// above this plus about 150 (see `connection::fd_budget`); 1024 idle keep-alive connections take about 18 MB.
    pub max_connections: usize,
    /// Longest a client may take to send a request's head, counted from its first byte
    /// (`APP_HEADER_READ_TIMEOUT_MS`, default 10000). A client that takes longer gets 408 and is disconnected.
    pub header_read_timeout: Duration,
    /// Longest a connection may wait for a request: after it opened, or after the previous response
    /// (`APP_IDLE_TIMEOUT_SECONDS`, default 60). Then it is closed without an answer (nothing was asked).
    pub idle_timeout: Duration,
    /// Longest a client may take to send a request's whole body, counted from the end of its head
    /// (`APP_BODY_READ_TIMEOUT_MS`, default 10000). A client that takes longer gets 408 (if no answer has started)
    /// and is disconnected.
    pub body_read_timeout: Duration,
    /// Longest the server's output to a client may stay undelivered once a write to it blocks (the client does not
    /// read): from the first blocked write until everything pending is handed to the kernel
    /// (`APP_WRITE_TIMEOUT_MS`, default 10000). Then the connection is closed.
    pub write_timeout: Duration,
    /// Largest header section of a request, in bytes of `name: value` lines (`APP_MAX_HEADER_BYTES`, default
    /// 16384); larger ones get a JSON 431.
    pub max_header_bytes: usize,
    /// Longest request target (path and query), in bytes (`APP_MAX_URI_BYTES`, default 8192); longer ones get a
    /// JSON 414.
    pub max_uri_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_addr: SocketAddr::from(([127, 0, 0, 1], 8081)),
            database_url: SecretUrl::new("postgres://app:app@127.0.0.1:5432/app"),
            redis_url: SecretUrl::new("redis://127.0.0.1:6379"),
            log_format: LogFormat::Text,
            log_level: "info".to_owned(),
            fault_injection_enabled: false,
            admin_token: None,
            admin_allowed_hosts: Vec::new(),
            metrics_enabled: true,
            cache_ttl: Duration::from_secs(300),
            db_pool_max_size: 10,
            db_acquire_timeout: Duration::from_millis(500),
            db_query_timeout: Duration::from_millis(2000),
            redis_pool_max_size: 8,
            redis_timeout: Duration::from_millis(250),
            status_timeout: Duration::from_millis(500),
            shutdown_timeout: Duration::from_secs(10),
            max_body_bytes: 64 * 1024,
            max_key_bytes: 256,
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_read_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            max_header_bytes: 16 * 1024,
            max_uri_bytes: 8 * 1024,
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// A connection URL that may carry a password: `Debug` and `Display` show it with the password masked, so it can
/// be logged; [`SecretUrl::expose`] gives the real value to the one place that connects.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(String);

impl SecretUrl {
    /// Wraps a URL.
    pub fn new(url: impl Into<String>) -> Self {
        SecretUrl(url.into())
    }

    /// The URL itself, password included. Pass it to a client; never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", redact_url(&self.0))
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_url(&self.0))
    }
}

/// Replaces the password of `scheme://user:password@host/...` (and any `password=` query parameter) with `***`.
fn redact_url(url: &str) -> String {
    let mut out = match url.split_once("://") {
        Some((scheme, rest)) => {
            // The authority ends at the first '/', '?' or '#'; its userinfo ends at its last '@'.
            let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            let (authority, tail) = rest.split_at(end);
            match authority.rsplit_once('@') {
                Some((userinfo, host)) => {
                    let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
                    let masked = if userinfo.contains(':') {
                        format!("{user}:***")
                    } else {
                        user.to_owned()
                    };
                    format!("{scheme}://{masked}@{host}{tail}")
                }
                None => url.to_owned(),
            }
        }
        None => url.to_owned(),
    };
    if let Some(start) = out.find("password=") {
        let value_start = start + "password=".len();
        let value_end = out[value_start..].find('&').map_or(out.len(), |i| value_start + i);
        out.replace_range(value_start..value_end, "***");
    }
    out
}

/// The admin listener's token. A secret: `Debug` shows `AdminToken(***)`, there is no `Display` and no way to
/// read it back; [`AdminToken::matches`] compares a candidate with it in constant time.
#[derive(Clone)]
pub struct AdminToken(Arc<[u8]>);

impl AdminToken {
    /// Shortest token accepted: guessing must be hopeless even without a rate limit.
    pub const MIN_LEN: usize = 16;
    /// Longest token accepted.
    pub const MAX_LEN: usize = 1024;

    /// A token of [`Self::MIN_LEN`] to [`Self::MAX_LEN`] visible ASCII characters (what fits in an HTTP header
    /// unquoted); `None` otherwise.
    pub fn new(token: &str) -> Option<Self> {
        let valid =
            (Self::MIN_LEN..=Self::MAX_LEN).contains(&token.len()) && token.bytes().all(|b| b.is_ascii_graphic());
        valid.then(|| AdminToken(token.as_bytes().into()))
    }

    /// Whether `candidate` is the token. The time taken depends on the lengths only, never on where the two
    /// differ, so timing the answers does not reveal the token a byte at a time.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        let token = &self.0;
        let mut difference = u8::from(token.len() != candidate.len());
        for i in 0..token.len().max(candidate.len()) {
            let a = token.get(i).copied().unwrap_or(0);
            let b = candidate.get(i).copied().unwrap_or(0);
            difference |= a ^ b;
        }
        // Keeps the optimiser from turning the loop into an early exit.
        std::hint::black_box(difference) == 0
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(***)")
    }
}

/// A variable that holds something the service cannot use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The environment variable at fault.
    pub var: &'static str,
    /// What it holds (masked when it is a URL).
    pub value: String,
    /// What was expected instead.
    pub expected: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.value.is_empty() {
            write!(f, "{} is not set: expected {}", self.var, self.expected)
        } else {
            write!(
                f,
                "{}={:?} is invalid: expected {}",
                self.var, self.value, self.expected
            )
        }
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Builds the configuration from any variable lookup, so tests need not touch the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let vars = Vars(&lookup);
        let d = Config::default();
        let config = Config {
            listen_addr: vars.parsed(
                "APP_LISTEN_ADDR",
                d.listen_addr,
                "an IP address and port such as 127.0.0.1:8080",
            )?,
            admin_addr: vars.parsed(
                "APP_ADMIN_ADDR",
                d.admin_addr,
                "an IP address and port such as 127.0.0.1:8081",
            )?,
            database_url: vars.database_url("APP_DATABASE_URL", d.database_url)?,
            redis_url: vars.redis_url("APP_REDIS_URL", d.redis_url)?,
            log_format: match vars.get("APP_LOG_FORMAT") {
                None => d.log_format,
                Some(v) => match v.trim().to_ascii_lowercase().as_str() {
                    "text" => LogFormat::Text,
                    "json" => LogFormat::Json,
                    _ => return Err(ConfigError::new("APP_LOG_FORMAT", v, "text or json")),
                },
            },
            log_level: match vars.get("APP_LOG_LEVEL") {
                None => d.log_level,
                Some(v) => {
                    // Validated here so that a typo fails startup instead of silently logging nothing.
                    tracing_subscriber::EnvFilter::try_new(v.trim()).map_err(|_| {
                        ConfigError::new(
                            "APP_LOG_LEVEL",
                            v.clone(),
                            "a level (error, warn, info, debug, trace) or tracing directives",
                        )
                    })?;
                    v.trim().to_owned()
                }
            },
            fault_injection_enabled: vars.flag("APP_FAULT_INJECTION_ENABLED", d.fault_injection_enabled)?,
            admin_token: vars.token_file("APP_ADMIN_TOKEN_FILE")?,
            admin_allowed_hosts: vars.hosts("APP_ADMIN_ALLOWED_HOSTS")?,
            metrics_enabled: vars.flag("APP_METRICS_ENABLED", d.metrics_enabled)?,
            cache_ttl: Duration::from_secs(vars.number(
                "APP_CACHE_TTL_SECONDS",
                d.cache_ttl.as_secs(),
                1,
                30 * 86_400,
            )?),
            db_pool_max_size: vars.number("APP_DB_POOL_MAX_SIZE", d.db_pool_max_size, 1, 1000)?,
            db_acquire_timeout: millis(vars.number("APP_DB_ACQUIRE_TIMEOUT_MS", ms(d.db_acquire_timeout), 1, 999)?),
            db_query_timeout: millis(vars.number("APP_DB_QUERY_TIMEOUT_MS", ms(d.db_query_timeout), 1, 600_000)?),
            redis_pool_max_size: vars.number("APP_REDIS_POOL_MAX_SIZE", d.redis_pool_max_size, 1, 1000)?,
            redis_timeout: millis(vars.number("APP_REDIS_TIMEOUT_MS", ms(d.redis_timeout), 1, 60_000)?),
            status_timeout: millis(vars.number("APP_STATUS_TIMEOUT_MS", ms(d.status_timeout), 1, 60_000)?),
            shutdown_timeout: Duration::from_secs(vars.number(
                "APP_SHUTDOWN_TIMEOUT_SECONDS",
                d.shutdown_timeout.as_secs(),
                0,
                3600,
            )?),
            max_body_bytes: vars.number("APP_MAX_BODY_BYTES", d.max_body_bytes, 1, 64 * 1024 * 1024)?,
            max_key_bytes: vars.number("APP_MAX_KEY_BYTES", d.max_key_bytes, 1, 4096)?,
            max_connections: vars.number("APP_MAX_CONNECTIONS", d.max_connections, 1, 100_000)?,
            header_read_timeout: millis(vars.number(
                "APP_HEADER_READ_TIMEOUT_MS",
                ms(d.header_read_timeout),
                1,
                600_000,
            )?),
            idle_timeout: Duration::from_secs(vars.number(
                "APP_IDLE_TIMEOUT_SECONDS",
                d.idle_timeout.as_secs(),
                1,
                3600,
            )?),
            body_read_timeout: millis(vars.number("APP_BODY_READ_TIMEOUT_MS", ms(d.body_read_timeout), 1, 600_000)?),
            write_timeout: millis(vars.number("APP_WRITE_TIMEOUT_MS", ms(d.write_timeout), 1, 600_000)?),
            // hyper's own limit on a request head sits above these two (see `connection`), and its URI limit
            // (64 KiB) above the largest value allowed here, so a request over them still gets our JSON answer.
            max_header_bytes: vars.number("APP_MAX_HEADER_BYTES", d.max_header_bytes, 1024, 256 * 1024)?,
            max_uri_bytes: vars.number("APP_MAX_URI_BYTES", d.max_uri_bytes, 256, 32 * 1024)?,
        };
        // Secure by default: fault injection without a token would let any local user fail the API.
        if config.fault_injection_enabled && config.admin_token.is_none() {
            return Err(ConfigError::new(
                "APP_ADMIN_TOKEN_FILE",
                "",
                "a file holding the admin token, required while APP_FAULT_INJECTION_ENABLED is true \
                 (clients of /fault send it as Authorization: Bearer <token>)",
            ));
        }
        Ok(config)
    }
}

impl ConfigError {
    fn new(var: &'static str, value: impl Into<String>, expected: impl Into<String>) -> Self {
        ConfigError {
            var,
            value: value.into(),
            expected: expected.into(),
        }
    }
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

fn millis(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The variable lookup with the parsing helpers every field shares.
struct Vars<'a>(&'a dyn Fn(&str) -> Option<String>);

impl Vars<'_> {
    /// An empty variable means "not set": env files often carry `NAME=` lines.
    fn get(&self, name: &str) -> Option<String> {
        (self.0)(name).filter(|v| !v.trim().is_empty())
    }

    fn parsed<T: FromStr>(&self, name: &'static str, default: T, expected: &str) -> Result<T, ConfigError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v.trim().parse().map_err(|_| ConfigError::new(name, v, expected)),
        }
    }

    fn number<T>(&self, name: &'static str, default: T, min: T, max: T) -> Result<T, ConfigError>
    where
        T: FromStr + PartialOrd + fmt::Display + Copy,
    {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v
                .trim()
                .parse::<T>()
                .ok()
                .filter(|n| *n >= min && *n <= max)
                .ok_or_else(|| ConfigError::new(name, v, format!("a whole number from {min} to {max}"))),
        }
    }

    fn flag(&self, name: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => match v.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Ok(true),
                "false" | "0" | "no" | "off" => Ok(false),
                _ => Err(ConfigError::new(name, v, "true or false")),
            },
        }
    }

    /// The token held by the file the variable names. The error names the file, never its content.
    fn token_file(&self, name: &'static str) -> Result<Option<AdminToken>, ConfigError> {
        let Some(path) = self.get(name) else {
            return Ok(None);
        };
        let path = path.trim().to_owned();
        let content = std::fs::read_to_string(&path).map_err(|e| {
            ConfigError::new(
                name,
                path.clone(),
                format!("a readable file holding the admin token ({e})"),
            )
        })?;
        AdminToken::new(content.trim()).map(Some).ok_or_else(|| {
            ConfigError::new(
                name,
                path,
                format!(
                    "a file holding {} to {} visible ASCII characters, such as the output of `openssl rand -hex 32`",
                    AdminToken::MIN_LEN,
                    AdminToken::MAX_LEN
                ),
            )
        })
    }

    /// Comma-separated `host:port` entries, lowercased (host names are case-insensitive).
    fn hosts(&self, name: &'static str) -> Result<Vec<String>, ConfigError> {
        let Some(v) = self.get(name) else {
            return Ok(Vec::new());
        };
        v.split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(|h| {
                let valid = h.rsplit_once(':').is_some_and(|(host, port)| {
                    !host.is_empty()
                        && host
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"-._[]:".contains(&b))
                        && port.parse::<u16>().is_ok()
                });
                if valid {
                    Ok(h.to_ascii_lowercase())
                } else {
                    Err(ConfigError::new(
                        name,
                        v.clone(),
                        "comma-separated host:port entries such as app:8081",
                    ))
                }
            })
            .collect()
    }

    fn database_url(&self, name: &'static str, default: SecretUrl) -> Result<SecretUrl, ConfigError> {
        let Some(v) = self.get(name) else {
            return Ok(default);
        };
        let url = SecretUrl::new(v.trim());
        let valid = (url.0.starts_with("postgres://") || url.0.starts_with("postgresql://"))
            && tokio_postgres::Config::from_str(url.expose()).is_ok();
        if valid {
            Ok(url)
        } else {
            Err(ConfigError::new(
                name,
                url.to_string(),
                "a URL such as postgres://user:password@127.0.0.1:5432/db",
            ))
        }
    }

    fn redis_url(&self, name: &'static str, default: SecretUrl) -> Result<SecretUrl, ConfigError> {
        let Some(v) = self.get(name) else {
            return Ok(default);
        };
        let url = SecretUrl::new(v.trim());
        if url.0.starts_with("redis://") && bb8_redis::redis::Client::open(url.expose()).is_ok() {
            Ok(url)
        } else {
            Err(ConfigError::new(
                name,
                url.to_string(),
                "a URL such as redis://127.0.0.1:6379 (no TLS)",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn no_variables_give_the_documented_defaults() {
        let config = from(&[]).unwrap();
        assert_eq!(config.listen_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(config.admin_addr.to_string(), "127.0.0.1:8081");
        assert_eq!(config.database_url.expose(), "postgres://app:app@127.0.0.1:5432/app");
        assert_eq!(config.redis_url.expose(), "redis://127.0.0.1:6379");
        assert_eq!(config.db_acquire_timeout, Duration::from_millis(500));
        assert!(config.metrics_enabled);
        assert!(!config.fault_injection_enabled);
    }

    /// A token file in the temporary directory, unique to the calling test; removed when dropped.
    struct TokenFile(std::path::PathBuf);

    impl TokenFile {
        fn new(test: &str, content: &str) -> Self {
            let path = std::env::temp_dir().join(format!("app-config-test-{}-{test}", std::process::id()));
            std::fs::write(&path, content).unwrap();
            TokenFile(path)
        }

        fn path(&self) -> String {
            self.0.display().to_string()
        }
    }

    impl Drop for TokenFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn variables_override_defaults() {
        let file = TokenFile::new("override", "0123456789abcdef0123\n");
        let token = file.path();
        let config = from(&[
            ("APP_LISTEN_ADDR", "0.0.0.0:0"),
            ("APP_LOG_FORMAT", "JSON"),
            ("APP_FAULT_INJECTION_ENABLED", "true"),
            ("APP_ADMIN_TOKEN_FILE", &token),
            ("APP_ADMIN_ALLOWED_HOSTS", "App:8081, prometheus-target:9000"),
            ("APP_METRICS_ENABLED", "0"),
            ("APP_DB_ACQUIRE_TIMEOUT_MS", "250"),
            ("APP_CACHE_TTL_SECONDS", "60"),
        ])
        .unwrap();
        assert_eq!(config.listen_addr.port(), 0);
        assert_eq!(config.log_format, LogFormat::Json);
        assert!(config.fault_injection_enabled);
        assert!(!config.metrics_enabled);
        assert_eq!(config.db_acquire_timeout, Duration::from_millis(250));
        assert_eq!(config.cache_ttl, Duration::from_secs(60));
        assert!(
            config.admin_token.unwrap().matches(b"0123456789abcdef0123"),
            "read and trimmed"
        );
        assert_eq!(config.admin_allowed_hosts, ["app:8081", "prometheus-target:9000"]);
    }

    #[test]
    fn fault_injection_needs_a_token_file() {
        let err = from(&[("APP_FAULT_INJECTION_ENABLED", "true")]).unwrap_err();
        assert_eq!(err.var, "APP_ADMIN_TOKEN_FILE");
        assert!(
            err.to_string()
                .starts_with("APP_ADMIN_TOKEN_FILE is not set: expected a file"),
            "{err}"
        );
        let err = from(&[
            ("APP_FAULT_INJECTION_ENABLED", "true"),
            ("APP_ADMIN_TOKEN_FILE", "/nonexistent/token"),
        ])
        .unwrap_err();
        assert_eq!(err.var, "APP_ADMIN_TOKEN_FILE");
        assert!(err.to_string().contains("/nonexistent/token"), "{err}");
    }

    #[test]
    fn a_weak_token_is_refused_without_showing_it() {
        for (test, content) in [
            ("short", "hunter2-short\n"),
            ("space", "a token with spaces in it\n"),
            ("empty", "\n"),
        ] {
            let file = TokenFile::new(test, content);
            let path = file.path();
            let err = from(&[("APP_ADMIN_TOKEN_FILE", &path)]).unwrap_err();
            assert_eq!(err.var, "APP_ADMIN_TOKEN_FILE");
            let shown = err.to_string();
            assert!(shown.contains("visible ASCII"), "{shown}");
            if !content.trim().is_empty() {
                assert!(!shown.contains(content.trim()), "{shown}");
            }
        }
    }

    #[test]
    fn the_token_never_shows_and_compares_whole() {
        let file = TokenFile::new("debug", "s3cret-s3cret-s3cret");
        let path = file.path();
        let config = from(&[("APP_ADMIN_TOKEN_FILE", &path), ("APP_FAULT_INJECTION_ENABLED", "true")]).unwrap();
        assert!(!format!("{config:?}").contains("s3cret"), "{config:?}");
        let token = config.admin_token.unwrap();
        assert_eq!(format!("{token:?}"), "AdminToken(***)");
        assert!(token.matches(b"s3cret-s3cret-s3cret"));
        for wrong in [
            &b"s3cret-s3cret-s3cre"[..],
            b"s3cret-s3cret-s3cret!",
            b"S3cret-s3cret-s3cret",
            b"",
        ] {
            assert!(!token.matches(wrong), "{}", String::from_utf8_lossy(wrong));
        }
    }

    #[test]
    fn allowed_hosts_must_be_host_and_port() {
        for bad in ["app", "app:http", ":8081", "a b:1"] {
            let err = from(&[("APP_ADMIN_ALLOWED_HOSTS", bad)]).unwrap_err();
            assert_eq!(err.var, "APP_ADMIN_ALLOWED_HOSTS", "{bad}");
        }
    }

    #[test]
    fn an_empty_variable_counts_as_unset() {
        assert_eq!(
            from(&[("APP_CACHE_TTL_SECONDS", " ")]).unwrap().cache_ttl,
            Duration::from_secs(300)
        );
    }

    #[test]
    fn a_bad_value_names_the_variable_and_what_was_expected() {
        let err = from(&[("APP_METRICS_ENABLED", "maybe")]).unwrap_err();
        assert_eq!(err.var, "APP_METRICS_ENABLED");
        assert!(err.to_string().contains("true or false"), "{err}");
        let err = from(&[("APP_LISTEN_ADDR", "localhost")]).unwrap_err();
        assert_eq!(err.var, "APP_LISTEN_ADDR");
    }

    #[test]
    fn the_acquire_timeout_must_stay_under_a_second() {
        let err = from(&[("APP_DB_ACQUIRE_TIMEOUT_MS", "1000")]).unwrap_err();
        assert_eq!(err.var, "APP_DB_ACQUIRE_TIMEOUT_MS");
        assert!(err.to_string().contains("from 1 to 999"), "{err}");
    }

    #[test]
    fn connection_settings_are_read_and_bounded() {
        let config = from(&[
            ("APP_MAX_CONNECTIONS", "10"),
            ("APP_HEADER_READ_TIMEOUT_MS", "250"),
            ("APP_IDLE_TIMEOUT_SECONDS", "5"),
            ("APP_BODY_READ_TIMEOUT_MS", "750"),
            ("APP_WRITE_TIMEOUT_MS", "1500"),
            ("APP_MAX_HEADER_BYTES", "2048"),
            ("APP_MAX_URI_BYTES", "512"),
        ])
        .unwrap();
        assert_eq!(config.max_connections, 10);
        assert_eq!(config.header_read_timeout, Duration::from_millis(250));
        assert_eq!(config.idle_timeout, Duration::from_secs(5));
        assert_eq!(config.body_read_timeout, Duration::from_millis(750));
        assert_eq!(config.write_timeout, Duration::from_millis(1500));
        assert_eq!((config.max_header_bytes, config.max_uri_bytes), (2048, 512));
        for (var, value) in [
            ("APP_MAX_CONNECTIONS", "0"),
            ("APP_HEADER_READ_TIMEOUT_MS", "0"),
            ("APP_IDLE_TIMEOUT_SECONDS", "0"),
            ("APP_BODY_READ_TIMEOUT_MS", "0"),
            ("APP_WRITE_TIMEOUT_MS", "600001"),
            // Too small for an ordinary client's headers; and over hyper's own URI limit, which must stay above ours.
            ("APP_MAX_HEADER_BYTES", "100"),
            ("APP_MAX_URI_BYTES", "100000"),
        ] {
            assert_eq!(from(&[(var, value)]).unwrap_err().var, var, "{var}={value}");
        }
    }

    #[test]
    fn a_bad_url_is_rejected_without_showing_its_password() {
        let err = from(&[("APP_DATABASE_URL", "mysql://u:hunter2@db/x")]).unwrap_err();
        assert_eq!(err.var, "APP_DATABASE_URL");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        let err = from(&[("APP_REDIS_URL", "http://127.0.0.1:6379")]).unwrap_err();
        assert_eq!(err.var, "APP_REDIS_URL");
    }

    #[test]
    fn debug_output_never_shows_passwords() {
        let config = from(&[
            ("APP_DATABASE_URL", "postgres://app:s3cret@db:5432/app?sslmode=disable"),
            ("APP_REDIS_URL", "redis://:r3dis@cache:6379/0"),
        ])
        .unwrap();
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cret") && !shown.contains("r3dis"), "{shown}");
        assert!(
            shown.contains("postgres://app:***@db:5432/app?sslmode=disable"),
            "{shown}"
        );
        assert!(shown.contains("redis://:***@cache:6379/0"), "{shown}");
    }

    #[test]
    fn redaction_handles_urls_without_credentials_and_password_parameters() {
        assert_eq!(redact_url("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(redact_url("postgres://app@db/app"), "postgres://app@db/app");
        assert_eq!(
            redact_url("postgres://db/app?user=a&password=b&x=1"),
            "postgres://db/app?user=a&password=***&x=1"
        );
        assert_eq!(redact_url("postgres://a:p@ss@db/app"), "postgres://a:***@db/app");
    }

    #[test]
    fn the_env_example_lists_every_variable_with_its_default() {
        let example = include_str!("../../../.env.example");
        let listed: HashMap<&str, &str> = example
            .lines()
            .filter(|l| l.starts_with("APP_"))
            .filter_map(|l| l.split_once('='))
            .collect();
        let source = include_str!("config.rs");
        let mut read: Vec<&str> = source
            .split('"')
            .filter(|s| s.len() > 4 && s.starts_with("APP_") && s.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
            .collect();
        read.sort_unstable();
        read.dedup();
        for var in &read {
            assert!(listed.contains_key(var), ".env.example lacks {var}");
        }
        assert_eq!(
            listed.len(),
            read.len(),
            ".env.example lists variables the service does not read"
        );
        // The listed values are the defaults: parsing the file gives the same configuration as parsing nothing.
        let from_example = Config::from_lookup(|name| listed.get(name).map(|v| v.to_string())).unwrap();
        assert_eq!(format!("{from_example:?}"), format!("{:?}", Config::default()));
    }
}
