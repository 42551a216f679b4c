//! The inbox's HTTP surface, built by one pure function so tests can drive it without a socket:
//! webhooks in (bearer token required, body bounded), the JSON API, the heartbeat, metrics, the HTML page and the
//! runbooks out (open: the inbox listens on loopback, and reading pages grants nothing).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::json;

use crate::auth::{Rejection, WebhookGuard};
use crate::error::ApiError;
use crate::limits::MAX_BODY_BYTES;
use crate::store::{Filter, Notification, Store};
use crate::telemetry::untrusted;
use crate::webhook::{Receiver, Status, WebhookPayload};
use crate::{metrics, page, runbooks};

/// What the handlers share.
#[derive(Debug)]
pub struct AppState {
    /// Notifications, counters and the heartbeat.
    pub store: Store,
    /// Where `/runbooks/` reads from.
    pub runbooks_dir: PathBuf,
    /// The webhook token check and its refusal counters.
    pub guard: WebhookGuard,
}

/// The state as handlers receive it.
pub type SharedState = Arc<AppState>;

/// Every route of the inbox.
pub fn router(state: SharedState) -> Router {
    Router::new()
        .route("/", get(home))
        .route("/healthcheck", get(|| async { "OK" }))
        .route("/hook/{receiver}", post(receive))
        .route("/api/notifications", get(list))
        .route("/api/heartbeat", get(heartbeat))
        .route("/metrics", get(render_metrics))
        .route("/runbooks/{file}", get(runbooks::get))
        .fallback(|| async { ApiError::NotFound("no such route".to_string()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .with_state(state)
}

/// `POST /hook/{receiver}`: stores an Alertmanager webhook call. The token is checked before anything else, the
/// receiver's name included, so a caller without it learns nothing and costs no more than the headers.
async fn receive(
    State(state): State<SharedState>,
    Path(receiver): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    let known: Option<Receiver> = receiver.parse().ok();
    if let Err(reason) = state.guard.check(&headers) {
        state.guard.refused(reason, known);
        return Err(ApiError::Unauthorized);
    }
    let receiver = known.ok_or_else(|| {
        ApiError::NotFound(format!(
            "unknown receiver {receiver:?}; expected pager, ticket or heartbeat"
        ))
    })?;
    let body = read_body(&state, &headers, body, receiver).await?;
    // The body is parsed by hand rather than by the `Json` extractor so that a missing Content-Type is no reason
    // to lose a page, and every parse failure gets the same JSON error.
    let payload: WebhookPayload = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("not an Alertmanager webhook payload: {e}")))?;
    let n = state.store.record(receiver, payload);
    tracing::info!(
        id = n.id,
        receiver = %n.receiver,
        status = n.status.as_str(),
        alertname = %untrusted(&n.alertname),
        alerts = n.webhook.alerts.len(),
        "notification received"
    );
    Ok(Json(json!({"status": "ok", "id": n.id})))
}

/// The body, up to [`MAX_BODY_BYTES`]: a declared length over it is refused before reading, an undeclared one
/// (chunked) once the limit is crossed.
async fn read_body(state: &AppState, headers: &HeaderMap, body: Body, receiver: Receiver) -> Result<Bytes, ApiError> {
    let too_large = || {
        state.guard.refused(Rejection::TooLarge, Some(receiver));
        ApiError::PayloadTooLarge(format!("the body is over the inbox's limit of {MAX_BODY_BYTES} bytes"))
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, MAX_BODY_BYTES).await.map_err(|e| {
        let over = std::error::Error::source(&e).is_some_and(|source| source.is::<http_body_util::LengthLimitError>());
        if over {
            too_large()
        } else {
            // The client went away mid-body; nobody reads the answer.
            ApiError::BadRequest(format!("the body could not be read: {e}"))
        }
    })
}

/// `GET /api/notifications?receiver=&alertname=&status=&after=&limit=`: newest first.
async fn list(
    State(state): State<SharedState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<impl IntoResponse, ApiError> {
    let filter = parse_filter(&params)?;
    let notifications = state.store.list(&filter);
    Ok(Json(NotificationList {
        count: notifications.len(),
        notifications,
    }))
}

/// The body of `GET /api/notifications` (a struct, so fields keep their documented order).
#[derive(Debug, Serialize)]
struct NotificationList {
    count: usize,
    notifications: Vec<Notification>,
}

fn parse_filter(params: &HashMap<String, String>) -> Result<Filter, ApiError> {
    let param = |name: &str| params.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());
    let number = |name: &str| -> Result<Option<u64>, ApiError> {
        param(name)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| ApiError::BadRequest(format!("{name} must be a whole number, got {v:?}")))
            })
            .transpose()
    };
    Ok(Filter {
        receiver: param("receiver")
            .map(|v| {
                v.parse().map_err(|()| {
                    ApiError::BadRequest(format!("unknown receiver {v:?}; expected pager, ticket or heartbeat"))
                })
            })
            .transpose()?,
        alertname: param("alertname").map(str::to_string),
        status: param("status")
            .map(|v| {
                v.parse::<Status>()
                    .map_err(|()| ApiError::BadRequest(format!("unknown status {v:?}; expected firing or resolved")))
            })
            .transpose()?,
        after: number("after")?,
        limit: number("limit")?.map(|n| n as usize),
    })
}

/// `GET /api/heartbeat`: 200 while the Watchdog keeps arriving, 503 once it has gone missing, so a plain HTTP
/// check can watch it too; the body is the same either way.
async fn heartbeat(State(state): State<SharedState>) -> impl IntoResponse {
    let beat = state.store.heartbeat();
    let status = if beat.healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(beat))
}

async fn render_metrics(State(state): State<SharedState>) -> impl IntoResponse {
    let body = metrics::render(
        &state.store.counters(),
        &state.store.heartbeat(),
        &state.guard.rejected(),
    );
    ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], body)
}

async fn home(State(state): State<SharedState>) -> Html<String> {
    Html(page::render(&state.store))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use std::time::Duration;
    use tower::ServiceExt;

    const TOKEN: &str = "routes-test-token-0123456789";

    fn app() -> Router {
        router(Arc::new(AppState {
            store: Store::in_memory(100, Duration::from_secs(180)),
            runbooks_dir: PathBuf::from("no-such-dir"),
            guard: WebhookGuard::new(crate::auth::WebhookToken::new(TOKEN).unwrap()),
        }))
    }

    async fn call(app: Router, method: &str, uri: &str, body: &str) -> (StatusCode, String) {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .body(Body::from(body.to_string()))
            .unwrap();
        let response = app.oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn an_unknown_receiver_is_a_json_404() {
        let (status, body) = call(app(), "POST", "/hook/blackhole", r#"{"status":"firing","alerts":[]}"#).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(
            body.contains(r#""status":"error""#) && body.contains("blackhole"),
            "{body}"
        );
    }

    #[tokio::test]
    async fn malformed_json_is_a_json_400() {
        let (status, body) = call(app(), "POST", "/hook/pager", "{not json").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body.contains(r#""status":"error""#), "{body}");
    }

    #[tokio::test]
    async fn a_post_without_the_token_is_a_json_401_with_a_challenge() {
        let request = Request::builder()
            .method("POST")
            .uri("/hook/pager")
            .body(Body::from(r#"{"status":"firing","alerts":[]}"#))
            .unwrap();
        let response = app().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer");
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        assert!(String::from_utf8_lossy(&bytes).contains(r#""status":"error""#));
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_a_json_413_declared_or_not() {
        // `oneshot` sends no Content-Length: this is the body crossing the limit while it is read.
        let big = format!(
            r#"{{"status":"firing","alerts":[],"x":"{}"}}"#,
            "x".repeat(MAX_BODY_BYTES)
        );
        let (status, body) = call(app(), "POST", "/hook/pager", &big).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(body.contains(r#""status":"error""#), "{body}");
        // A declared length over the limit is refused before any of the body is read.
        let request = Request::builder()
            .method("POST")
            .uri("/hook/pager")
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .header(header::CONTENT_LENGTH, (MAX_BODY_BYTES + 1).to_string())
            .body(Body::from("{}"))
            .unwrap();
        let response = app().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        // At the limit, accepted.
        let mut fits = r#"{"status":"firing","alerts":[],"x":""}"#.to_string();
        fits.insert_str(fits.len() - 2, &"x".repeat(MAX_BODY_BYTES - fits.len()));
        assert_eq!(fits.len(), MAX_BODY_BYTES);
        assert_eq!(call(app(), "POST", "/hook/pager", &fits).await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn bad_filters_are_rejected_by_name() {
        for (uri, word) in [
            ("/api/notifications?receiver=boss", "receiver"),
            ("/api/notifications?status=open", "status"),
            ("/api/notifications?after=x", "after"),
        ] {
            let (status, body) = call(app(), "GET", uri, "").await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
            assert!(body.contains(word), "{body}");
        }
    }

    #[tokio::test]
    async fn unknown_routes_and_methods_answer_json() {
        let (status, body) = call(app(), "GET", "/nope", "").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body.contains(r#""status":"error""#));
        let (status, body) = call(app(), "GET", "/hook/pager", "").await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert!(body.contains(r#""status":"error""#));
    }
}
