//! Shared helpers: start the real application on port 0 against the real Postgres and Redis, with a key prefix
//! of its own (or a Postgres schema of its own), stop it gracefully or abruptly, and read its metrics.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use app::{Application, Config};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running application and a client for it.
pub struct TestApp {
    /// `http://127.0.0.1:<port>` of the API.
    pub api: String,
    /// `http://127.0.0.1:<port>` of the admin listener.
    pub admin: String,
    /// A client without connection reuse surprises: plain HTTP/1.1, short timeout.
    pub client: reqwest::Client,
    /// The configuration it runs with.
    pub config: Config,
    prefix: String,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
}

/// The admin token of every test application (see [`admin_token_file`]).
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef";

/// A file holding [`ADMIN_TOKEN`] (with a trailing newline, as `echo` writes it), one per test process. Created
/// new (never through a link another user placed in the shared temporary directory) under a name with the process
/// id and the time in it, mode 0600.
pub fn admin_token_file() -> PathBuf {
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    FILE.get_or_init(|| {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
        let path = std::env::temp_dir().join(format!("app-test-admin-token-{}-{nanos:x}", std::process::id()));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .expect("a new file in the temporary directory");
        writeln!(file, "{ADMIN_TOKEN}").expect("the token file is written");
        path
    })
    .clone()
}

/// The configuration of a test application: the environment's (`APP_DATABASE_URL` and `APP_REDIS_URL` default to
/// the native stack's), on free ports, with fault injection allowed and the admin token of [`admin_token_file`].
pub fn test_config() -> Config {
    let token_file = admin_token_file();
    let mut config = Config::from_lookup(|name| match name {
        "APP_ADMIN_TOKEN_FILE" => Some(token_file.display().to_string()),
        _ => std::env::var(name).ok(),
    })
    .expect("the APP_* variables of the test environment are valid");
    config.listen_addr = "127.0.0.1:0".parse().unwrap();
    config.admin_addr = "127.0.0.1:0".parse().unwrap();
    config.fault_injection_enabled = true;
    config
}

/// The test configuration with a Postgres schema of its own (through the connection's `search_path`): its own
/// `kv_store` and its own cache epoch, for tests that bump the epoch or count its bumps, which would otherwise
/// turn other tests' cache hits into misses.
pub async fn isolated_config() -> Config {
    let mut config = test_config();
    let schema = format!("t_{}", unique_prefix().replace('-', "_"));
    // The app's role may not create schemas (it owns only its own): an administrator makes one it owns.
    let app_role: String = postgres(&config)
        .await
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    postgres_admin(&config)
        .await
        .batch_execute(&format!("CREATE SCHEMA {schema} AUTHORIZATION \"{app_role}\""))
        .await
        .expect("the test schema is created");
    let url = config.database_url.expose();
    let separator = if url.contains('?') { '&' } else { '?' };
    config.database_url = app::config::SecretUrl::new(format!("{url}{separator}options=-csearch_path%3D{schema}"));
    config
}

/// A Postgres session as an administrator where the environment names one (`TEST_DATABASE_ADMIN_URL`, which
/// `make test` sets to the superuser), else as the app.
pub async fn postgres_admin(config: &Config) -> tokio_postgres::Client {
    let Ok(url) = std::env::var("TEST_DATABASE_ADMIN_URL") else {
        return postgres(config).await;
    };
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("Postgres is reachable as its administrator");
    tokio::spawn(connection);
    client
}

/// The URL of a Redis connection that may inspect and change what the app may not (TTL, CLIENT PAUSE, …): the
/// stack's admin user where the environment names it (`TEST_REDIS_ADMIN_URL`, set by `make test`), else the app's.
pub fn redis_admin_url(config: &Config) -> String {
    std::env::var("TEST_REDIS_ADMIN_URL").unwrap_or_else(|_| config.redis_url.expose().to_owned())
}

/// A Postgres session of the test's own, beside the application's pool (to lock rows, delete them by hand, or
/// read what was committed).
pub async fn postgres(config: &Config) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(config.database_url.expose(), tokio_postgres::NoTls)
        .await
        .expect("Postgres is reachable from the test");
    tokio::spawn(connection);
    client
}

/// The Redis key of `key`'s cache entry, `app:kv:<epoch>:<key>`, under the epoch Postgres holds now.
pub async fn cache_entry(config: &Config, key: &str) -> String {
    let epoch: i64 = postgres(config)
        .await
        .query_one("SELECT epoch FROM kv_cache_epoch", &[])
        .await
        .expect("the cache epoch can be read")
        .get(0);
    format!("app:kv:{epoch}:{key}")
}

/// Starts the application with the test configuration and checks that Postgres and Redis are reachable: a test
/// environment without them fails here, loudly, instead of skipping.
pub async fn spawn_app() -> TestApp {
    let app = spawn_with(test_config()).await;
    app.assert_dependencies_up().await;
    app
}

/// Starts the application with `config`, whatever the state of its dependencies.
pub async fn spawn_with(config: Config) -> TestApp {
    app::telemetry::init_test_logging();
    let application = Application::build(config.clone())
        .await
        .expect("the application builds");
    let api = format!("http://{}", application.api_addr());
    let admin = format!("http://{}", application.admin_addr());
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(application.run_until_stopped(async {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    TestApp {
        api,
        admin,
        client,
        config,
        prefix: unique_prefix(),
        stop: Some(stop),
        server: Some(server),
    }
}

fn unique_prefix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_nanos();
    format!(
        "t{}-{nanos:x}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

impl TestApp {
    /// A key that belongs to this test only.
    pub fn key(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    /// Fails the test unless `/status` reports both dependencies up.
    pub async fn assert_dependencies_up(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let body: serde_json::Value = match self.get("/status").await.json().await {
                Ok(body) => body,
                Err(e) => panic!("/status did not answer JSON: {e}"),
            };
            if body["status"] == "Up" {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "Postgres or Redis is unreachable ({}, {}): start them (native/up.sh etcd postgres redis) or set \
                 APP_DATABASE_URL / APP_REDIS_URL. /status said: {body}",
                self.config.database_url,
                self.config.redis_url,
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// GET on the API.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.api))
            .send()
            .await
            .expect("the API answers")
    }

    /// POST of a JSON body to the API.
    pub async fn post_json(&self, path: &str, body: &serde_json::Value) -> reqwest::Response {
        self.client
            .post(format!("{}{path}", self.api))
            .json(body)
            .send()
            .await
            .expect("the API answers")
    }

    /// `POST /set` of one key.
    pub async fn set(&self, key: &str, value: serde_json::Value) -> reqwest::Response {
        self.post_json("/set", &serde_json::json!({"key": key, "value": value}))
            .await
    }

    /// `GET /get/{key}`, with the key percent-encoded.
    pub async fn get_key_json(&self, key: &str) -> reqwest::Response {
        self.get(&format!("/get/{}", encode(key))).await
    }

    /// The admin listener's `/metrics`.
    pub async fn metrics(&self) -> Metrics {
        let response = self
            .client
            .get(format!("{}/metrics", self.admin))
            .send()
            .await
            .expect("admin answers");
        assert_eq!(response.status(), 200);
        Metrics(response.text().await.unwrap())
    }

    /// A request to the admin listener that carries the admin token.
    pub fn admin_request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.admin))
            .bearer_auth(ADMIN_TOKEN)
    }

    /// Sets a fault through the admin listener.
    pub async fn set_fault(&self, body: serde_json::Value) -> reqwest::Response {
        self.admin_request(reqwest::Method::POST, "/fault")
            .json(&body)
            .send()
            .await
            .expect("admin answers")
    }

    /// `GET /fault` with the admin token.
    pub async fn get_fault(&self) -> reqwest::Response {
        self.admin_request(reqwest::Method::GET, "/fault")
            .send()
            .await
            .expect("admin answers")
    }

    /// `DELETE /fault` with the admin token.
    pub async fn clear_fault(&self) -> reqwest::Response {
        self.admin_request(reqwest::Method::DELETE, "/fault")
            .send()
            .await
            .expect("admin answers")
    }

    /// Stops the application the way SIGKILL would: its tasks are dropped where they stand, with no graceful
    /// shutdown and no chance to finish background work.
    #[allow(dead_code)] // used by tests/outage.rs only
    pub async fn kill(&mut self) {
        let server = self.server.take().expect("not shut down yet");
        server.abort();
        let _ = server.await;
        // Only now: a dropped sender would have started a graceful shutdown.
        self.stop.take();
    }

    /// Triggers shutdown and waits for `run_until_stopped` to return; gives its result and how long it took.
    pub async fn shutdown(&mut self) -> (std::io::Result<()>, Duration) {
        let started = Instant::now();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let server = self.server.take().expect("not shut down yet");
        let result = tokio::time::timeout(Duration::from_secs(30), server)
            .await
            .expect("run_until_stopped returns")
            .expect("the server task does not panic");
        (result, started.elapsed())
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Sends `request` as is over a new connection to `base` (`http://host:port`) and returns everything the server
/// answered until it closed the connection: for requests no HTTP client would send.
pub async fn raw_request(base: &str, request: &[u8]) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(base.trim_start_matches("http://"))
        .await
        .expect("the listener accepts");
    stream.write_all(request).await.expect("the request is sent");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("the server answers and closes")
        .expect("the answer is read");
    answer
}

/// Percent-encodes everything but unreserved characters, for keys in paths.
pub fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One sample: metric name, label pairs, value.
pub type Sample = (String, BTreeSet<(String, String)>, f64);

/// A scrape of `/metrics`.
pub struct Metrics(pub String);

impl Metrics {
    /// The value of the series `name{labels}` (labels given in any order, all of them), if present.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples().into_iter().find_map(|(n, l, v)| {
            let wanted: BTreeSet<(String, String)> =
                labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            (n == name && l == wanted).then_some(v)
        })
    }

    /// Like [`Metrics::value`], 0 when absent.
    pub fn value_or_zero(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels).unwrap_or(0.0)
    }

    /// Every sample: name, label set, value.
    pub fn samples(&self) -> Vec<Sample> {
        self.0
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|line| {
                let (series, value) = line.rsplit_once(' ').expect("a sample has a value");
                let (name, labels) = match series.split_once('{') {
                    Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}').expect("closing brace"))),
                    None => (series, BTreeSet::new()),
                };
                (name.to_owned(), labels, value.parse().expect("a numeric value"))
            })
            .collect()
    }

    /// The label values of `label` across the samples of `name`.
    pub fn label_values(&self, name: &str, label: &str) -> BTreeSet<String> {
        self.samples()
            .into_iter()
            .filter(|(n, _, _)| n == name)
            .flat_map(|(_, labels, _)| labels.into_iter().filter(|(k, _)| k == label).map(|(_, v)| v))
            .collect()
    }
}

/// Parses `a="x",b="y"` (values hold no escaped quotes here).
fn parse_labels(s: &str) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    let mut rest = s;
    while let Some((key, after)) = rest.split_once("=\"") {
        let end = after.find('"').expect("closing quote");
        out.insert((key.trim_start_matches(',').to_owned(), after[..end].to_owned()));
        rest = &after[end + 1..];
    }
    out
}
