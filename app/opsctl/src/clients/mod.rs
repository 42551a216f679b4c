//! Small typed clients for the stack's HTTP APIs — Prometheus, Alertmanager and the on-call inbox — shared by the
//! subcommands, plus the HTTP helpers under them and the credentials they send ([`Auth`]). Each type holds only the
//! fields opsctl reads and tolerates everything else.

mod alertmanager;
mod inbox;
mod prometheus;

pub use alertmanager::{Alertmanager, AlertmanagerAlert, AlertmanagerConfig, AlertmanagerStatus};
pub use inbox::{Heartbeat, Inbox, Notification, Webhook, WebhookAlert};
pub use prometheus::{AlertmanagerTarget, Prometheus, PrometheusAlert, Rule, RuleGroup, Sample, Target};

use std::fmt;
use std::time::Duration;

use reqwest::{Client, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;

use crate::secrets::Secret;

/// How requests to one of the stack's APIs prove who sends them. `None` sends nothing: an unauthenticated stack
/// (the tests' fake one) needs no credentials, and none are configured without `--secrets-dir`.
#[derive(Debug, Clone, Default)]
pub enum Auth {
    #[default]
    None,
    /// HTTP basic auth: Prometheus and Alertmanager (user `admin`, `web.password`).
    Basic { user: String, password: Secret },
    /// `Authorization: Bearer <token>`: the app's admin listener, the inbox's webhooks.
    Bearer(Secret),
}

impl Auth {
    /// Basic auth as `user` when there is a password, else nothing.
    pub fn basic(user: &str, password: Option<Secret>) -> Self {
        password.map_or(Auth::None, |password| Auth::Basic {
            user: user.to_string(),
            password,
        })
    }

    /// A bearer token when there is one, else nothing.
    pub fn bearer(token: Option<Secret>) -> Self {
        token.map_or(Auth::None, Auth::Bearer)
    }

    /// Adds the credentials to a request (reqwest marks the header sensitive, so it is not printed either).
    pub fn apply(&self, request: RequestBuilder) -> RequestBuilder {
        match self {
            Auth::None => request,
            Auth::Basic { user, password } => request.basic_auth(user, Some(password.expose())),
            Auth::Bearer(token) => request.bearer_auth(token.expose()),
        }
    }
}

/// An HTTP client for loopback use: bounded request time, no proxies (the stack is local by design).
pub fn http_client(timeout: Duration, max_idle_per_host: usize) -> Client {
    Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(2)))
        .pool_max_idle_per_host(max_idle_per_host)
        .no_proxy()
        .build()
        .expect("a client without TLS or proxies always builds")
}

/// Why a call to one of the stack's APIs failed.
#[derive(Debug)]
pub enum ClientError {
    /// No response: connection refused, timeout, reset.
    Transport { url: String, source: reqwest::Error },
    /// A response with an unexpected status; `body` is its beginning.
    Status {
        url: String,
        status: StatusCode,
        body: String,
    },
    /// A 2xx response whose body is not what the API documents.
    Decode { url: String, message: String },
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Transport { url, source } => write!(f, "GET {url}: {}", describe_transport(source)),
            ClientError::Status { url, status, body } if *status == StatusCode::UNAUTHORIZED => write!(
                f,
                "GET {url}: HTTP {status}: {body} (credentials missing or wrong: see --secrets-dir / STACK_SECRETS_DIR)"
            ),
            ClientError::Status { url, status, body } => write!(f, "GET {url}: HTTP {status}: {body}"),
            ClientError::Decode { url, message } => write!(f, "GET {url}: unexpected answer: {message}"),
        }
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClientError::Transport { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// A short reason for a transport failure: reqwest's own message hides the useful part in its source chain.
pub fn describe_transport(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out".to_string();
    }
    if e.is_connect() {
        return "connection refused or unreachable".to_string();
    }
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        message = format!("{message}: {s}");
        source = s.source();
    }
    message
}

/// GETs `url` with `auth` and decodes a JSON body; any status other than `accept` is an error.
pub async fn get_json<T: DeserializeOwned>(
    client: &Client,
    auth: &Auth,
    url: &str,
    accept: &[StatusCode],
) -> Result<T, ClientError> {
    let response = auth
        .apply(client.get(url))
        .send()
        .await
        .map_err(|source| ClientError::Transport {
            url: url.to_string(),
            source,
        })?;
    let status = response.status();
    let bytes = response.bytes().await.map_err(|source| ClientError::Transport {
        url: url.to_string(),
        source,
    })?;
    if !(status.is_success() || accept.contains(&status)) {
        return Err(ClientError::Status {
            url: url.to_string(),
            status,
            body: snippet(&bytes),
        });
    }
    serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
        url: url.to_string(),
        message: e.to_string(),
    })
}

/// The beginning of a body, on one line, for error messages.
pub fn snippet(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &one_line[..i]),
        None => one_line,
    }
}

/// Joins a base URL and a path without doubling the slash.
pub fn join(base: &str, path: &str) -> String {
    format!("{}{path}", base.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_bodies_are_cut_for_messages() {
        let long = "x".repeat(500);
        assert_eq!(snippet(long.as_bytes()).chars().count(), 201);
        assert_eq!(snippet(b"a\n  b"), "a b");
        assert_eq!(join("http://h:1/", "/x"), "http://h:1/x");
    }

    /// A server that answers every GET with `body` and keeps the `Authorization` header of each request.
    async fn recording_server(body: &'static str) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
        use axum::http::HeaderMap;
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = seen.clone();
        let app = axum::Router::new().fallback(move |headers: HeaderMap| {
            let record = record.clone();
            async move {
                let authorization = headers.get("authorization").map(|v| v.to_str().unwrap().to_string());
                record.lock().unwrap().push(authorization.unwrap_or_default());
                ([("content-type", "application/json")], body)
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (base, seen)
    }

    #[tokio::test]
    async fn prometheus_and_alertmanager_send_basic_auth_only_when_configured() {
        let (base, seen) = recording_server(r#"{"status":"success","data":{"alerts":[]}}"#).await;
        let client = http_client(Duration::from_secs(5), 1);
        let password = Some(Secret::new("s3cret"));
        Prometheus::new(client.clone(), &base).alerts().await.unwrap();
        Prometheus::new(client.clone(), &base)
            .with_auth(Auth::basic("admin", password.clone()))
            .alerts()
            .await
            .unwrap();
        // Alertmanager's answer is a list; the recording is what counts here, not the decoding.
        let _ = Alertmanager::new(client, &base)
            .with_auth(Auth::basic("admin", password))
            .alerts()
            .await;
        // "admin:s3cret" in base64.
        let basic = "Basic YWRtaW46czNjcmV0".to_string();
        assert_eq!(*seen.lock().unwrap(), vec![String::new(), basic.clone(), basic]);
    }

    #[test]
    fn no_secret_means_no_credentials() {
        assert!(matches!(Auth::basic("admin", None), Auth::None));
        assert!(matches!(Auth::bearer(None), Auth::None));
        let printed = format!("{:?}", Auth::bearer(Some(Secret::new("t0ken"))));
        assert!(!printed.contains("t0ken"), "{printed}");
    }
}
