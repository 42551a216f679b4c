//! The key routes. They all share one store, so a key set through one reads back through any other:
//! `/set_key` stores its value as a JSON string, which `/get/{key}` returns as a string.

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{header, Method, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;

use super::{json_body, AppState};
use crate::error::{ApiError, Message};

/// `GET /set_key/{key}/{value}`: stores `value` as a JSON string; answers `key is set to value`, HTML-escaped.
///
/// `HEAD` (which axum routes to the GET handler) validates and answers the same headers without storing: HEAD is
/// a safe method, and link checkers and prefetchers send it freely.
pub async fn set_key(
    method: Method,
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Html<String>, ApiError> {
    let Path((key, value)) = path?;
    state.limits.check_key(&key)?;
    if value.len() > state.limits.max_body_bytes {
        return Err(ApiError::PayloadTooLarge(format!(
            "value is larger than {} bytes",
            state.limits.max_body_bytes
        )));
    }
    let message = format!("{} is set to {}", escape_html(&key), escape_html(&value));
    if method != Method::HEAD {
        state.store.set(&key, &Value::String(value)).await?;
    }
    Ok(Html(message))
}

/// `GET /get_key/{key}`: the value as plain text (a string as is, anything else as JSON); 404 `Key not found`.
pub async fn get_key(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(key) = path?;
    state.limits.check_key(&key)?;
    let text = |status: StatusCode, body: String| {
        // Plain text and nosniff: a stored `<script>` is shown, never run.
        (
            status,
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            body,
        )
            .into_response()
    };
    Ok(match state.store.get(&key).await? {
        Some(Value::String(s)) => text(StatusCode::OK, s),
        Some(other) => text(StatusCode::OK, other.to_string()),
        None => text(StatusCode::NOT_FOUND, "Key not found".to_owned()),
    })
}

/// `POST /set` with `{"key": string, "value": any JSON but null}`. The body is taken as checked JSON text and
/// built by [`json_body`], which keeps numbers exact and refuses repeated member names.
pub async fn set(
    State(state): State<AppState>,
    body: Result<Json<Box<RawValue>>, JsonRejection>,
) -> Result<Json<Message>, ApiError> {
    let Json(raw) = body?;
    let body = json_body::parse(raw.get(), state.limits.max_body_bytes)?;
    let (key, value) = parse_set_body(body)?;
    state.limits.check_key(&key)?;
    state.store.set(&key, &value).await?;
    Ok(Json(Message {
        status: "success",
        message: "Key-value pair is set successfully".to_owned(),
    }))
}

/// The body of `/get/{key}`.
#[derive(Debug, Serialize)]
pub struct KeyValue {
    key: String,
    value: Value,
}

/// `GET /get/{key}`: `{"key": …, "value": …}` with the value as stored; 404 JSON when missing.
pub async fn get(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<KeyValue>, ApiError> {
    let Path(key) = path?;
    state.limits.check_key(&key)?;
    match state.store.get(&key).await? {
        Some(value) => Ok(Json(KeyValue { key, value })),
        None => Err(ApiError::NotFound("Key not found".to_owned())),
    }
}

/// The key (a string) and value (present, not null) of a `/set` body; anything else is `Invalid key pair`.
fn parse_set_body(body: Value) -> Result<(String, Value), ApiError> {
    let invalid = || ApiError::BadRequest("Invalid key pair".to_owned());
    let Value::Object(mut fields) = body else {
        return Err(invalid());
    };
    let key = match fields.remove("key") {
        Some(Value::String(key)) if !key.is_empty() => key,
        _ => return Err(invalid()),
    };
    match fields.remove("value") {
        Some(Value::Null) | None => Err(invalid()),
        Some(value) => Ok((key, value)),
    }
}

/// Escapes the five HTML-significant characters.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            escape_html(r#"<a href="x">&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#x27;&lt;/a&gt;"
        );
        assert_eq!(escape_html("foo"), "foo");
    }

    #[test]
    fn a_set_body_needs_a_string_key_and_a_non_null_value() {
        assert_eq!(
            parse_set_body(json!({"key": "k", "value": [1, {"a": null}]}))
                .unwrap()
                .1,
            json!([1, {"a": null}])
        );
        assert_eq!(
            parse_set_body(json!({"key": "k", "value": false})).unwrap().1,
            json!(false)
        );
        for body in [
            json!({"value": 1}),
            json!({"key": null, "value": 1}),
            json!({"key": 5, "value": 1}),
            json!({"key": "", "value": 1}),
            json!({"key": "k"}),
            json!({"key": "k", "value": null}),
            json!(["key", "value"]),
            json!("key"),
        ] {
            let err = parse_set_body(body.clone()).unwrap_err();
            assert_eq!(err.to_string(), "Invalid key pair", "{body}");
        }
    }
}
