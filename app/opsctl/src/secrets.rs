//! The stack's credentials as opsctl reads them: one file per secret in the directory `--secrets-dir` (or
//! `STACK_SECRETS_DIR`) names, as `make up` writes them into `$STATE_DIR/secrets/` (each holds one secret and a
//! trailing newline). Every file is read once, at startup; a command asks for the ones it needs and gets a
//! message naming the file when one cannot be used. Without a directory no credentials are sent at all, which is
//! what an unauthenticated stack (such as the tests' fake one) needs.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// A secret's text. `Debug` prints a placeholder, so structs holding one can be printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// A secret from its text (tests, and values read from a file).
    pub fn new(text: impl Into<String>) -> Self {
        Secret(text.into())
    }

    /// The text, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(redacted)")
    }
}

/// The secret files opsctl uses, named as `native/secrets.sh` writes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SecretFile {
    /// `web.password`: HTTP basic auth, user `admin`, of Prometheus and Alertmanager (every endpoint).
    WebPassword,
    /// `webhook.token`: the bearer token Alertmanager sends to the on-call inbox.
    WebhookToken,
    /// `app-admin.token`: the bearer token of the app's admin listener (`/fault`).
    AppAdminToken,
    /// `postgres.password`: the Postgres superuser `postgres`, over TCP.
    PostgresPassword,
    /// `redis-admin.password`: the Redis ACL user `admin` (every command).
    RedisAdminPassword,
}

impl SecretFile {
    /// Every file opsctl reads.
    pub const ALL: [SecretFile; 5] = [
        SecretFile::WebPassword,
        SecretFile::WebhookToken,
        SecretFile::AppAdminToken,
        SecretFile::PostgresPassword,
        SecretFile::RedisAdminPassword,
    ];

    /// The file's name in the secrets directory.
    pub fn file_name(self) -> &'static str {
        match self {
            SecretFile::WebPassword => "web.password",
            SecretFile::WebhookToken => "webhook.token",
            SecretFile::AppAdminToken => "app-admin.token",
            SecretFile::PostgresPassword => "postgres.password",
            SecretFile::RedisAdminPassword => "redis-admin.password",
        }
    }
}

/// The user of HTTP basic auth on Prometheus and Alertmanager.
pub const WEB_USER: &str = "admin";
/// The Postgres superuser the game day logs in as.
pub const POSTGRES_USER: &str = "postgres";
/// The Redis ACL user the game day's admin commands run as.
pub const REDIS_ADMIN_USER: &str = "admin";

/// What opsctl knows about the stack's credentials.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    dir: Option<PathBuf>,
    /// Each file's secret, or why it cannot be used; only filled when `dir` is set.
    files: BTreeMap<SecretFile, Result<Secret, String>>,
}

impl Secrets {
    /// No credentials: every request goes out without any.
    pub fn none() -> Self {
        Secrets::default()
    }

    /// Reads every file of `dir` once. A file that is missing or empty is not an error yet: only a command that
    /// needs it fails, naming it.
    pub fn load(dir: &Path) -> Self {
        let files = SecretFile::ALL
            .iter()
            .map(|f| (*f, read_secret(&dir.join(f.file_name()))))
            .collect();
        Secrets {
            dir: Some(dir.to_path_buf()),
            files,
        }
    }

    /// [`Secrets::load`] when a directory is given (an empty one counts as none), else [`Secrets::none`].
    pub fn from_dir(dir: Option<&Path>) -> Result<Self, String> {
        match dir.filter(|d| !d.as_os_str().is_empty()) {
            None => Ok(Secrets::none()),
            Some(dir) if dir.is_dir() => Ok(Secrets::load(dir)),
            Some(dir) => Err(format!(
                "the secrets directory {} does not exist or is not a directory (`make up` creates \
                 $STATE_DIR/secrets; reading it needs its owner, root)",
                dir.display()
            )),
        }
    }

    /// Whether credentials are configured at all.
    pub fn configured(&self) -> bool {
        self.dir.is_some()
    }

    /// The secret of `file`: `None` without a secrets directory, an error naming the file when it is configured
    /// but the file cannot be used.
    pub fn get(&self, file: SecretFile) -> Result<Option<Secret>, String> {
        if self.dir.is_none() {
            return Ok(None);
        }
        match self.files.get(&file) {
            Some(Ok(secret)) => Ok(Some(secret.clone())),
            Some(Err(why)) => Err(why.clone()),
            None => Err(format!("{} was not read", file.file_name())),
        }
    }
}

/// One secret file: its content without the trailing newline (`\n` or `\r\n`). Only line endings are trimmed: a
/// space could be part of a password.
fn read_secret(path: &Path) -> Result<Secret, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("cannot read the secret file {}: {e}", path.display()))?;
    let secret = text.trim_end_matches(['\n', '\r']);
    if secret.is_empty() {
        return Err(format!("the secret file {} is empty", path.display()));
    }
    if secret.contains(['\n', '\r']) {
        return Err(format!(
            "the secret file {} holds more than one line; it must hold one secret",
            path.display()
        ));
    }
    Ok(Secret::new(secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("opsctl-secrets-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn without_a_directory_nothing_is_sent_and_nothing_is_missing() {
        let secrets = Secrets::from_dir(None).unwrap();
        assert!(!secrets.configured());
        for file in SecretFile::ALL {
            assert_eq!(secrets.get(file), Ok(None));
        }
        assert!(!Secrets::from_dir(Some(Path::new(""))).unwrap().configured());
    }

    #[test]
    fn each_file_is_read_once_and_trimmed_of_its_newline() {
        let dir = temp_dir("trim");
        std::fs::write(dir.join("web.password"), "s3cret\n").unwrap();
        std::fs::write(dir.join("app-admin.token"), "t0ken\r\n").unwrap();
        std::fs::write(dir.join("postgres.password"), " spaced pass\n").unwrap();
        let secrets = Secrets::load(&dir);
        // Read at load: changing the files afterwards changes nothing.
        std::fs::remove_file(dir.join("web.password")).unwrap();
        let get = |f| secrets.get(f).unwrap().unwrap().expose().to_string();
        assert_eq!(get(SecretFile::WebPassword), "s3cret");
        assert_eq!(get(SecretFile::AppAdminToken), "t0ken");
        assert_eq!(get(SecretFile::PostgresPassword), " spaced pass");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_or_unusable_file_is_an_error_naming_it() {
        let dir = temp_dir("missing");
        std::fs::write(dir.join("webhook.token"), "\n").unwrap();
        std::fs::write(dir.join("redis-admin.password"), "one\ntwo\n").unwrap();
        let secrets = Secrets::load(&dir);
        let missing = secrets.get(SecretFile::PostgresPassword).unwrap_err();
        assert!(
            missing.contains(&dir.join("postgres.password").display().to_string()),
            "{missing}"
        );
        assert!(missing.contains("cannot read"), "{missing}");
        let empty = secrets.get(SecretFile::WebhookToken).unwrap_err();
        assert!(empty.contains("webhook.token") && empty.contains("empty"), "{empty}");
        let lines = secrets.get(SecretFile::RedisAdminPassword).unwrap_err();
        assert!(lines.contains("more than one line"), "{lines}");
        assert!(!lines.contains("two"), "the message does not quote the file: {lines}");
        std::fs::remove_dir_all(&dir).unwrap();
        let gone = Secrets::from_dir(Some(&dir)).unwrap_err();
        assert!(gone.contains(&dir.display().to_string()), "{gone}");
    }

    #[test]
    fn secrets_never_print() {
        let dir = temp_dir("debug");
        std::fs::write(dir.join("web.password"), "do-not-print-me\n").unwrap();
        let secrets = Secrets::load(&dir);
        assert!(!format!("{secrets:?}").contains("do-not-print-me"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
