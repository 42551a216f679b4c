//! The one error type of the HTTP edge: every failure answers `{"status":"error","message":"…"}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

/// Why a request failed; each variant documents the status it maps to.
#[derive(Debug)]
pub enum ApiError {
    /// 400: the request is malformed (bad JSON, an unknown filter value); the message says what is wrong.
    BadRequest(String),
    /// 401: a webhook POST without the inbox's bearer token; answered with `WWW-Authenticate: Bearer`.
    Unauthorized,
    /// 404: no such receiver, runbook or route.
    NotFound(String),
    /// 405: the path exists for another method.
    MethodNotAllowed,
    /// 413: a webhook body over the limit; the message names it.
    PayloadTooLarge(String),
    /// 500: something failed on our side; the cause is logged, the client gets an opaque message.
    Internal(Box<dyn std::error::Error + Send + Sync>),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let challenge = matches!(self, ApiError::Unauthorized);
        let body_unread = matches!(self, ApiError::Unauthorized | ApiError::PayloadTooLarge(_));
        let (status, message) = match self {
            ApiError::BadRequest(message) => (StatusCode::BAD_REQUEST, message),
            ApiError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "a webhook POST needs the header Authorization: Bearer <token> with the inbox's token".to_string(),
            ),
            ApiError::PayloadTooLarge(message) => (StatusCode::PAYLOAD_TOO_LARGE, message),
            ApiError::NotFound(message) => (StatusCode::NOT_FOUND, message),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method not allowed".to_string()),
            ApiError::Internal(cause) => {
                tracing::error!(error = %cause, "request failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal error".to_string())
            }
        };
        let mut response = (status, Json(serde_json::json!({"status": "error", "message": message}))).into_response();
        if challenge {
            // RFC 6750: a 401 names the scheme the client should use.
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if body_unread {
            // These answer before the body is read; the server then closes the connection rather than read the
            // rest, and says so, or the client would send its next request into a connection about to close.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}
