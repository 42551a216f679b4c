//! The inbox's configuration: documented defaults, overridden by `INBOX_*` environment variables, validated once
//! at startup so a bad value stops the process with a message naming the variable. One variable has no default:
//! `INBOX_WEBHOOK_TOKEN_FILE`, the bearer token webhooks must carry, without which the inbox does not start.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::auth::WebhookToken;

/// Everything the inbox reads from its environment. `Debug` shows no secret: the token prints as a placeholder.
#[derive(Debug, Clone)]
pub struct Config {
    /// The bearer token every webhook POST must carry, read at startup from the file `INBOX_WEBHOOK_TOKEN_FILE`
    /// names (required: the file Alertmanager's webhook `http_config.authorization.credentials_file` reads; one
    /// token of at least 16 visible ASCII characters, a trailing newline ignored). The default accepts no POST.
    pub webhook_token: WebhookToken,
    /// Where the HTTP listener binds (`INBOX_LISTEN_ADDR`, default `127.0.0.1:8082`; port 0 picks a free port).
    pub listen_addr: SocketAddr,
    /// Folder served under `/runbooks/` (`INBOX_RUNBOOKS_DIR`, default `runbooks`, relative to the working
    /// directory, which is the repository root when the stack runs it).
    pub runbooks_dir: PathBuf,
    /// JSON-lines file every notification is appended to and replayed from at startup (`INBOX_DATA_FILE`; unset
    /// or empty keeps notifications in memory only).
    pub data_file: Option<PathBuf>,
    /// How long the Watchdog heartbeat may be silent before the inbox reports it missing
    /// (`INBOX_HEARTBEAT_MAX_AGE_SECONDS`, default 180). Also the grace period after startup.
    pub heartbeat_max_age: Duration,
    /// How many notifications each receiver keeps in memory, its oldest dropped first, so a flood into one
    /// receiver cannot push out another's (`INBOX_MAX_NOTIFICATIONS`, default 10000; each receiver is also held to
    /// `limits::MAX_BYTES_PER_RECEIVER`).
    pub max_notifications: usize,
    /// `json` for one JSON object per log line, anything else for plain text (`INBOX_LOG_FORMAT`, default `text`).
    pub log_json: bool,
    /// Log filter in `tracing` directive syntax (`INBOX_LOG_LEVEL`, default `info`; `warn` drops the line logged
    /// per notification).
    pub log_level: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            webhook_token: WebhookToken::default(),
            listen_addr: SocketAddr::from(([127, 0, 0, 1], 8082)),
            runbooks_dir: PathBuf::from("runbooks"),
            data_file: None,
            heartbeat_max_age: Duration::from_secs(180),
            max_notifications: 10_000,
            log_json: false,
            log_level: "info".to_string(),
        }
    }
}

/// A variable that is unset while required, or set to something the inbox cannot use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The environment variable at fault.
    pub var: &'static str,
    /// The value it holds (empty when it is not set).
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
        // An empty variable means "not set": env files often carry `NAME=` lines.
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let mut config = Config::default();
        let token_file = get("INBOX_WEBHOOK_TOKEN_FILE").ok_or_else(|| ConfigError {
            var: "INBOX_WEBHOOK_TOKEN_FILE",
            value: String::new(),
            expected: "the path of the file holding the bearer token Alertmanager sends with every webhook".into(),
        })?;
        config.webhook_token = WebhookToken::read(Path::new(&token_file)).map_err(|why| ConfigError {
            var: "INBOX_WEBHOOK_TOKEN_FILE",
            value: token_file.clone(),
            expected: format!(
                "a readable file holding one token of at least {} visible ASCII characters ({why})",
                WebhookToken::MIN_LEN
            ),
        })?;
        if let Some(v) = get("INBOX_LISTEN_ADDR") {
            config.listen_addr = v.trim().parse().map_err(|_| ConfigError {
                var: "INBOX_LISTEN_ADDR",
                value: v,
                expected: "an IP address and port such as 127.0.0.1:8082".into(),
            })?;
        }
        if let Some(v) = get("INBOX_RUNBOOKS_DIR") {
            config.runbooks_dir = PathBuf::from(v);
        }
        config.data_file = get("INBOX_DATA_FILE").map(PathBuf::from);
        if let Some(v) = get("INBOX_HEARTBEAT_MAX_AGE_SECONDS") {
            let secs: u64 = v.trim().parse().ok().filter(|s| *s > 0).ok_or(ConfigError {
                var: "INBOX_HEARTBEAT_MAX_AGE_SECONDS",
                value: v,
                expected: "a whole number of seconds greater than 0".into(),
            })?;
            config.heartbeat_max_age = Duration::from_secs(secs);
        }
        if let Some(v) = get("INBOX_MAX_NOTIFICATIONS") {
            config.max_notifications = v.trim().parse().ok().filter(|n| *n > 0).ok_or(ConfigError {
                var: "INBOX_MAX_NOTIFICATIONS",
                value: v,
                expected: "a whole number greater than 0".into(),
            })?;
        }
        if let Some(v) = get("INBOX_LOG_FORMAT") {
            config.log_json = match v.trim().to_ascii_lowercase().as_str() {
                "json" => true,
                "text" => false,
                _ => {
                    return Err(ConfigError {
                        var: "INBOX_LOG_FORMAT",
                        value: v,
                        expected: "text or json".into(),
                    })
                }
            };
        }
        if let Some(v) = get("INBOX_LOG_LEVEL") {
            config.log_level = v.trim().to_string();
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU32, Ordering};

    const TOKEN: &str = "config-test-token-0123456789";

    /// A token file of its own for each call (tests run in parallel), holding `text`.
    fn token_file(text: &str) -> String {
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "inbox-config-{}-{}.token",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    }

    fn lookup(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|name| vars.get(name).cloned())
    }

    /// `vars` plus a valid token file.
    fn config_from(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let file = token_file(&format!("{TOKEN}\n"));
        let mut all = vec![("INBOX_WEBHOOK_TOKEN_FILE", file.as_str())];
        all.extend_from_slice(vars);
        let config = lookup(&all);
        let _ = std::fs::remove_file(&file);
        config
    }

    #[test]
    fn defaults_apply_when_nothing_but_the_token_is_set() {
        let config = config_from(&[]).unwrap();
        assert_eq!(config.listen_addr.to_string(), "127.0.0.1:8082");
        assert_eq!(config.runbooks_dir, PathBuf::from("runbooks"));
        assert_eq!(config.data_file, None);
        assert_eq!(config.heartbeat_max_age, Duration::from_secs(180));
        assert_eq!(config.max_notifications, 10_000);
        assert!(
            config.webhook_token.matches(TOKEN.as_bytes()),
            "read and trimmed of its newline"
        );
    }

    #[test]
    fn without_a_usable_token_file_the_inbox_does_not_start() {
        let unset = lookup(&[]).unwrap_err();
        assert_eq!(unset.var, "INBOX_WEBHOOK_TOKEN_FILE");
        assert!(
            unset.to_string().starts_with("INBOX_WEBHOOK_TOKEN_FILE is not set"),
            "{unset}"
        );
        assert_eq!(
            lookup(&[("INBOX_WEBHOOK_TOKEN_FILE", " ")]).unwrap_err().var,
            "INBOX_WEBHOOK_TOKEN_FILE"
        );
        let missing = lookup(&[("INBOX_WEBHOOK_TOKEN_FILE", "/no/such/dir/webhook.token")]).unwrap_err();
        assert!(
            missing.to_string().contains("\"/no/such/dir/webhook.token\"") && missing.expected.contains("cannot read"),
            "{missing}"
        );
        for text in ["\n", "short\n", "two words but long enough\n"] {
            let file = token_file(text);
            let err = lookup(&[("INBOX_WEBHOOK_TOKEN_FILE", &file)]).unwrap_err();
            assert_eq!(err.var, "INBOX_WEBHOOK_TOKEN_FILE", "{text:?}");
            assert!(
                !err.to_string().contains("two words"),
                "the message does not quote the file: {err}"
            );
            std::fs::remove_file(&file).unwrap();
        }
    }

    #[test]
    fn the_token_never_reaches_debug_output() {
        let config = config_from(&[]).unwrap();
        let printed = format!("{config:?}");
        assert!(!printed.contains(TOKEN), "{printed}");
        assert!(printed.contains("WebhookToken(redacted)"), "{printed}");
    }

    #[test]
    fn every_variable_overrides_its_default() {
        let config = config_from(&[
            ("INBOX_LISTEN_ADDR", "127.0.0.1:0"),
            ("INBOX_RUNBOOKS_DIR", "/srv/runbooks"),
            ("INBOX_DATA_FILE", "inbox.jsonl"),
            ("INBOX_HEARTBEAT_MAX_AGE_SECONDS", "30"),
            ("INBOX_MAX_NOTIFICATIONS", "5"),
            ("INBOX_LOG_FORMAT", "JSON"),
            ("INBOX_LOG_LEVEL", "warn"),
        ])
        .unwrap();
        assert_eq!(config.listen_addr.port(), 0);
        assert_eq!(config.runbooks_dir, PathBuf::from("/srv/runbooks"));
        assert_eq!(config.data_file, Some(PathBuf::from("inbox.jsonl")));
        assert_eq!(config.heartbeat_max_age, Duration::from_secs(30));
        assert_eq!(config.max_notifications, 5);
        assert!(config.log_json);
        assert_eq!(config.log_level, "warn");
    }

    #[test]
    fn an_empty_variable_counts_as_unset() {
        let config = config_from(&[("INBOX_DATA_FILE", ""), ("INBOX_LISTEN_ADDR", " ")]).unwrap();
        assert_eq!(config.data_file, None);
        assert_eq!(config.listen_addr.port(), 8082);
    }

    #[test]
    fn a_bad_value_names_the_variable() {
        let err = config_from(&[("INBOX_HEARTBEAT_MAX_AGE_SECONDS", "3m")]).unwrap_err();
        assert_eq!(err.var, "INBOX_HEARTBEAT_MAX_AGE_SECONDS");
        assert!(err.to_string().contains("INBOX_HEARTBEAT_MAX_AGE_SECONDS=\"3m\""));
        assert_eq!(
            config_from(&[("INBOX_LISTEN_ADDR", "localhost")]).unwrap_err().var,
            "INBOX_LISTEN_ADDR"
        );
        assert_eq!(
            config_from(&[("INBOX_MAX_NOTIFICATIONS", "0")]).unwrap_err().var,
            "INBOX_MAX_NOTIFICATIONS"
        );
        assert_eq!(
            config_from(&[("INBOX_LOG_FORMAT", "yaml")]).unwrap_err().var,
            "INBOX_LOG_FORMAT"
        );
    }

    #[test]
    fn the_env_example_lists_every_variable_with_its_default() {
        let example = include_str!("../../../.env.example");
        let listed: Vec<(&str, &str)> = example
            .lines()
            .filter(|l| l.starts_with("INBOX_"))
            .filter_map(|l| l.split_once('='))
            .collect();
        let source = include_str!("config.rs");
        let mut read: Vec<&str> = source
            .split('"')
            .filter(|s| s.len() > 6 && s.starts_with("INBOX_") && s.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
            .collect();
        read.sort_unstable();
        read.dedup();
        let mut names: Vec<&str> = listed.iter().map(|(k, _)| *k).collect();
        names.sort_unstable();
        assert_eq!(names, read, ".env.example and the variables read here differ");
        // The token file has no default: the example leaves it empty, and the inbox refuses to start so.
        assert_eq!(
            listed.iter().find(|(k, _)| *k == "INBOX_WEBHOOK_TOKEN_FILE"),
            Some(&("INBOX_WEBHOOK_TOKEN_FILE", ""))
        );
        assert_eq!(lookup(&listed).unwrap_err().var, "INBOX_WEBHOOK_TOKEN_FILE");
        // The other listed values are the defaults: with a token added, reading the file gives the configuration
        // that reading nothing else gives.
        let others: Vec<(&str, &str)> = listed
            .iter()
            .copied()
            .filter(|(k, _)| *k != "INBOX_WEBHOOK_TOKEN_FILE")
            .collect();
        let from_file = config_from(&others).unwrap();
        let default = Config::default();
        assert_eq!(from_file.listen_addr, default.listen_addr);
        assert_eq!(from_file.runbooks_dir, default.runbooks_dir);
        assert_eq!(from_file.data_file, default.data_file);
        assert_eq!(from_file.heartbeat_max_age, default.heartbeat_max_age);
        assert_eq!(from_file.max_notifications, default.max_notifications);
        assert_eq!(from_file.log_json, default.log_json);
        assert_eq!(from_file.log_level, default.log_level);
    }
}
