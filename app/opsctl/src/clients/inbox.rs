//! The on-call inbox's JSON API: the Watchdog heartbeat and the notifications it has received (open reads), and
//! its webhook, which takes the bearer token Alertmanager sends.

use reqwest::{Client, StatusCode};
use serde::Deserialize;

use super::{get_json, join, snippet, Auth, ClientError};
use crate::secrets::Secret;

/// The on-call inbox's JSON API.
#[derive(Debug, Clone)]
pub struct Inbox {
    client: Client,
    base: String,
    /// Sent with POSTs only: the inbox's reads are open.
    webhook_auth: Auth,
}

/// `/api/heartbeat`.
#[derive(Debug, Clone, Deserialize)]
pub struct Heartbeat {
    /// False once the Watchdog has been silent too long.
    pub healthy: bool,
    /// When the last Watchdog arrived (RFC 3339), if ever.
    pub last_received_at: Option<String>,
    /// Seconds since then.
    pub age_seconds: Option<f64>,
    /// The inbox's limit.
    pub max_age_seconds: f64,
}

/// A notification as the inbox lists it (`/api/notifications`).
#[derive(Debug, Clone, Deserialize)]
pub struct Notification {
    /// Increasing id; poll with `after`.
    pub id: u64,
    /// `pager`, `ticket` or `heartbeat`.
    pub receiver: String,
    /// Unix milliseconds of arrival.
    pub received_at_unix_ms: u64,
    /// `firing` or `resolved`.
    pub status: String,
    /// The alert it is about.
    pub alertname: String,
    /// The webhook payload as Alertmanager sent it (only the alerts are read).
    #[serde(default)]
    pub webhook: Webhook,
}

/// The parts of Alertmanager's webhook payload opsctl reads.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Webhook {
    /// Alertmanager's key of the notification's group (route and group labels).
    #[serde(default, rename = "groupKey")]
    pub group_key: String,
    /// The external URL of the Alertmanager peer that sent it: which peer notified.
    #[serde(default, rename = "externalURL")]
    pub external_url: String,
    /// The alerts of the notification's group, each `firing` or `resolved`.
    #[serde(default)]
    pub alerts: Vec<WebhookAlert>,
}

/// One alert of a webhook notification.
#[derive(Debug, Clone, Deserialize)]
pub struct WebhookAlert {
    /// `firing` or `resolved`.
    pub status: String,
    /// Its labels, `alertname` included.
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// Alertmanager's identity of the alert (a hash of its labels).
    #[serde(default)]
    pub fingerprint: String,
    /// When it started firing (RFC 3339): the same alert firing again later is a new one.
    #[serde(default, rename = "startsAt")]
    pub starts_at: String,
}

#[derive(Debug, Deserialize)]
struct Notifications {
    notifications: Vec<Notification>,
}

impl Inbox {
    /// A client for the inbox at `base` (e.g. `http://127.0.0.1:8082`).
    pub fn new(client: Client, base: &str) -> Self {
        Inbox {
            client,
            base: base.trim_end_matches('/').to_string(),
            webhook_auth: Auth::None,
        }
    }

    /// The same client, sending `token` (`webhook.token`) with every POST, as Alertmanager does.
    pub fn with_webhook_token(mut self, token: Option<Secret>) -> Self {
        self.webhook_auth = Auth::bearer(token);
        self
    }

    /// Whether POSTs carry a token.
    pub fn has_webhook_token(&self) -> bool {
        !matches!(self.webhook_auth, Auth::None)
    }

    /// POSTs `body` to `/hook/<receiver>` with the webhook token; returns the status and the beginning of the
    /// answer, whatever the status.
    pub async fn post_webhook(&self, receiver: &str, body: &str) -> Result<(StatusCode, String), ClientError> {
        let url = join(&self.base, &format!("/hook/{receiver}"));
        let request = self
            .client
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
        let response = self
            .webhook_auth
            .apply(request)
            .send()
            .await
            .map_err(|source| ClientError::Transport {
                url: url.clone(),
                source,
            })?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|source| ClientError::Transport { url, source })?;
        Ok((status, snippet(&bytes)))
    }

    /// The dead-man's switch (the inbox answers 503 while it is missing, with the same body).
    pub async fn heartbeat(&self) -> Result<Heartbeat, ClientError> {
        get_json(
            &self.client,
            &Auth::None,
            &join(&self.base, "/api/heartbeat"),
            &[StatusCode::SERVICE_UNAVAILABLE],
        )
        .await
    }

    /// Notifications, newest first; `query` is the filter as URL query pairs (`receiver`, `alertname`,
    /// `status`, `after`, `limit`).
    pub async fn notifications(&self, query: &[(&str, &str)]) -> Result<Vec<Notification>, ClientError> {
        let mut url =
            reqwest::Url::parse(&join(&self.base, "/api/notifications")).map_err(|e| ClientError::Decode {
                url: self.base.clone(),
                message: e.to_string(),
            })?;
        url.query_pairs_mut().extend_pairs(query);
        Ok(get_json::<Notifications>(&self.client, &Auth::None, url.as_str(), &[])
            .await?
            .notifications)
    }
}
