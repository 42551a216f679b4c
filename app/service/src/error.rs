//! The one error type of the HTTP edge. Every error answers with JSON `{"status":"error","message":"…"}`; client
//! errors say what was wrong, server errors stay opaque and their cause chain is logged once, here. A write route's
//! 503 adds `"outcome"`: `not_applied` or `unknown` (see [`crate::store::Outcome`]).

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::store::admission::Refused;
use crate::store::{Outcome, StoreError, Unknown, WriteError};
use crate::telemetry::escape::bounded;

/// Longest error chain a log line carries: its messages may quote a request's input.
pub const MAX_LOGGED_ERROR_CHARS: usize = 1024;

/// The body of a successful write (`status` = `success`), fields in this order; errors have the same two fields
/// first (`status` = `error`), see [`ErrorBody`].
#[derive(Debug, Serialize)]
pub struct Message {
    /// `error` or `success`.
    pub status: &'static str,
    /// What happened.
    pub message: String,
}

/// The body of every error; `outcome` only on a write route's 503, saying whether the write took effect.
#[derive(Debug, Serialize)]
pub struct ErrorBody {
    /// `error`.
    pub status: &'static str,
    /// What happened.
    pub message: String,
    /// `not_applied` or `unknown`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<&'static str>,
}

/// What a handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed or a value is out of range.
    #[error("{0}")]
    BadRequest(String),
    /// 404: no such route or key.
    #[error("{0}")]
    NotFound(String),
    /// 405: the route exists, the method does not.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 413: the body (or a value in the path) is larger than the limit.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 415: the body is not `application/json`.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 403: the operation is switched off in the configuration.
    #[error("{0}")]
    Forbidden(String),
    /// 401: the admin listener's token is missing or wrong; answered with `WWW-Authenticate: Bearer`.
    #[error("{0}")]
    Unauthorized(String),
    /// 421: the `Host` header names another server than this listener (DNS rebinding, see `admin`).
    #[error("{0}")]
    MisdirectedRequest(String),
    /// 500 from fault injection (drills only).
    #[error("injected fault")]
    InjectedFault,
    /// 503: Postgres is unreachable or too slow; the message names the dependency, never its address.
    #[error("{0} unavailable")]
    Unavailable(&'static str, #[source] Box<dyn std::error::Error + Send + Sync>),
    /// 503 from a write: the store could not complete it, and the body's `outcome` says whether it took effect.
    /// The message is ours, never the cause's.
    #[error("{message}")]
    WriteFailed {
        /// What the client reads.
        message: &'static str,
        /// Whether the write took effect.
        outcome: Outcome,
        /// Why, for the log.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// 500: anything else. The client sees `internal error`; the cause is logged.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ApiError {
    /// The status code this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::MisdirectedRequest(_) => StatusCode::MISDIRECTED_REQUEST,
            ApiError::InjectedFault | ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Unavailable(..) | ApiError::WriteFailed { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            ApiError::Internal(_) => tracing::error!(error = %error_chain(&self), "request failed"),
            ApiError::Unavailable(..) => tracing::warn!(error = %error_chain(&self), "dependency unavailable"),
            ApiError::WriteFailed { outcome, .. } => {
                tracing::warn!(error = %error_chain(&self), outcome = outcome.as_str(), "write failed")
            }
            _ => {}
        }
        let outcome = match &self {
            ApiError::WriteFailed { outcome, .. } => Some(outcome.as_str()),
            _ => None,
        };
        let mut response = (
            self.status(),
            Json(ErrorBody {
                status: "error",
                message: self.to_string(),
                outcome,
            }),
        )
            .into_response();
        if let ApiError::Unauthorized(_) = self {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"admin\""),
            );
        }
        response
    }
}

/// The error and all its sources, `: `-separated, for one log field; cut to [`MAX_LOGGED_ERROR_CHARS`]
/// characters (with a marker), since a message may quote input. The log writer escapes control characters.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        out.push_str(": ");
        out.push_str(&e.to_string());
        source = e.source();
    }
    match bounded(&out, MAX_LOGGED_ERROR_CHARS) {
        std::borrow::Cow::Borrowed(_) => out,
        std::borrow::Cow::Owned(cut) => cut,
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(e) => ApiError::Unavailable("database", Box::new(e)),
            StoreError::InvalidValue(message) => ApiError::BadRequest(message),
            StoreError::Internal(e) => ApiError::Internal(Box::new(e)),
        }
    }
}

/// A failed write: a 503 carries its outcome; a 400 (a value Postgres cannot hold) or a 500 means nothing was
/// written, like any other error without an `outcome`.
impl From<WriteError> for ApiError {
    fn from(error: WriteError) -> Self {
        let outcome = error.outcome();
        let (message, source): (_, Box<dyn std::error::Error + Send + Sync>) = match error {
            WriteError::NotApplied(StoreError::Unavailable(e)) => ("database unavailable", Box::new(e)),
            WriteError::NotApplied(other) => return other.into(),
            WriteError::NotAdmitted(e @ Refused::Busy(_)) => ("too many writes of this key in flight", Box::new(e)),
            WriteError::NotAdmitted(e @ Refused::Full(_)) => ("too many writes in flight", Box::new(e)),
            WriteError::Unknown(e @ Unknown::CacheNotInvalidated(_)) => (
                "written, but reads may return the previous value for a while",
                Box::new(e),
            ),
            WriteError::Unknown(e) => ("database did not confirm the write", Box::new(e)),
        };
        ApiError::WriteFailed {
            message,
            outcome,
            source,
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::MissingJsonContentType(_) => {
                ApiError::UnsupportedMediaType("expected a body with content-type application/json".to_owned())
            }
            JsonRejection::JsonSyntaxError(e) => ApiError::BadRequest(format!("malformed JSON: {}", source_text(&e))),
            JsonRejection::JsonDataError(e) => ApiError::BadRequest(format!("invalid JSON body: {}", source_text(&e))),
            other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::PayloadTooLarge("request body is larger than the limit".to_owned())
            }
            other => ApiError::BadRequest(other.body_text()),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::BadRequest(rejection.body_text())
    }
}

/// The innermost message of a rejection (serde's, with line and column), without axum's generic prefix.
fn source_text(error: &dyn std::error::Error) -> String {
    let mut current = error;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

/// 404 for requests that match no route.
pub async fn not_found() -> ApiError {
    ApiError::NotFound("not found".to_owned())
}

/// 405 for a known route with another method.
pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_do_not_show_their_cause() {
        let error = ApiError::Internal("password authentication failed for user app".into());
        assert_eq!(error.to_string(), "internal error");
        assert_eq!(error.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn long_error_chains_are_cut_for_the_log() {
        let error = ApiError::Internal("x".repeat(5000).into());
        let chain = error_chain(&error);
        assert!(chain.starts_with("internal error: xxx"), "{chain}");
        assert!(chain.chars().count() < MAX_LOGGED_ERROR_CHARS + 40, "{}", chain.len());
        assert!(chain.contains("cut"), "{chain}");
    }

    #[test]
    fn unauthorized_answers_say_how_to_authenticate() {
        let response = ApiError::Unauthorized("missing token".to_owned()).into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer realm=\"admin\"");
    }

    #[test]
    fn a_failed_write_says_whether_it_took_effect() {
        let pool_timeout = StoreError::Unavailable(crate::store::Unavailable::PoolTimeout);
        let not_applied = ApiError::from(WriteError::NotApplied(pool_timeout));
        assert_eq!(not_applied.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(matches!(
            not_applied,
            ApiError::WriteFailed {
                outcome: Outcome::NotApplied,
                ..
            }
        ));
        assert_eq!(not_applied.to_string(), "database unavailable");
        let unknown = ApiError::from(WriteError::Unknown(Unknown::Timeout(std::time::Duration::from_secs(2))));
        assert!(matches!(
            unknown,
            ApiError::WriteFailed {
                outcome: Outcome::Unknown,
                ..
            }
        ));
        let refused = ApiError::from(WriteError::NotApplied(StoreError::InvalidValue("bad".to_owned())));
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn unavailable_names_the_dependency_only() {
        let error = ApiError::Unavailable("database", "connect to 10.0.0.5:5432 refused".into());
        assert_eq!(error.to_string(), "database unavailable");
        assert_eq!(error.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(error_chain(&error).contains("refused"));
    }
}
