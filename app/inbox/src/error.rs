//! The one error type of the HTTP edge: every failure answers `{"status":"error","message":"…"}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// Why a request failed; each variant documents the status it maps to.
#[derive(Debug)]
pub enum ApiError {
    /// 400: the request is malformed (bad JSON, an unknown filter value); the message says what is wrong.
    BadRequest(String),
    /// 404: no such receiver, runbook or route.
    NotFound(String),
    /// 405: the path exists for another method.
    MethodNotAllowed,
    /// 500: something failed on our side; the cause is logged, the client gets an opaque message.
    Internal(Box<dyn std::error::Error + Send + Sync>),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            ApiError::BadRequest(message) => (StatusCode::BAD_REQUEST, message),
            ApiError::NotFound(message) => (StatusCode::NOT_FOUND, message),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method not allowed".to_string()),
            ApiError::Internal(cause) => {
                tracing::error!(error = %cause, "request failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal error".to_string())
            }
        };
        (status, Json(serde_json::json!({"status": "error", "message": message}))).into_response()
    }
}
