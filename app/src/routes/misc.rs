//! The routes kept from the original seed apps: hello world, liveness, the HTML home page and the query counter.

use std::collections::HashMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::Html;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::keys::escape_html;
use super::AppState;
use crate::error::ApiError;

/// `GET /helloworld`: touches no dependency.
pub async fn hello_world() -> Json<Hello> {
    Json(Hello { msg: "Hello World" })
}

/// The body of `/helloworld`.
#[derive(Debug, Serialize)]
pub struct Hello {
    msg: &'static str,
}

/// The body of `/query`, fields in this order.
#[derive(Debug, Serialize)]
pub struct QueryAnswer {
    param: String,
    count: usize,
}

/// `GET /healthcheck`: liveness only; touches no dependency, so an outage shows in `/status` and the alerts
/// instead of getting the process restarted.
pub async fn healthcheck() -> &'static str {
    "OK"
}

/// `GET /`: stores `Hello` = `World!`, reads it back through the cache, and links to every route.
pub async fn home(State(state): State<AppState>) -> Result<Html<String>, ApiError> {
    const KEY: &str = "Hello";
    state.store.set(KEY, &Value::String("World!".to_owned())).await?;
    let value = match state.store.get(KEY).await? {
        Some(Value::String(s)) => s,
        Some(other) => other.to_string(),
        None => String::new(),
    };
    let links = [
        ("/helloworld", "hello world"),
        ("/healthcheck", "liveness"),
        ("/status", "readiness: Postgres and Redis"),
        ("/set_key/foo/bar", "set foo to bar"),
        ("/get_key/foo", "get foo as text"),
        ("/get/foo", "get foo as JSON"),
        ("/query?param=acx333x", "count repeated characters"),
        ("/openapi.json", "OpenAPI document (POST /set takes JSON)"),
    ]
    .iter()
    .map(|(href, text)| format!("<li><a href=\"{href}\">{href}</a> {text}</li>"))
    .collect::<Vec<_>>()
    .join("\n");
    Ok(Html(format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>app</title></head><body>\n\
         <p>Initial set key on redis : {key}</p>\n<p>Value retrieved from redis: {value}</p>\n<ul>\n{links}\n</ul>\n\
         </body></html>\n",
        key = escape_html(KEY),
        value = escape_html(&value),
    )))
}

/// Query string of `/query`.
#[derive(Debug, Deserialize)]
pub struct QueryParams {
    param: Option<String>,
}

/// `GET /query?param=S`: `{"param": S, "count": N}`, N = distinct characters that occur more than once.
pub async fn query(query: Result<Query<QueryParams>, QueryRejection>) -> Result<Json<QueryAnswer>, ApiError> {
    let Query(params) = query?;
    let param = params
        .param
        .ok_or_else(|| ApiError::BadRequest("missing query parameter: param".to_owned()))?;
    let count = repeated_chars(&param);
    Ok(Json(QueryAnswer { param, count }))
}

/// Number of distinct characters (Unicode scalar values, case-sensitive) that occur more than once.
pub fn repeated_chars(s: &str) -> usize {
    let mut seen: HashMap<char, u32> = HashMap::new();
    for c in s.chars() {
        *seen.entry(c).or_default() += 1;
    }
    seen.values().filter(|n| **n > 1).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_distinct_characters_that_repeat() {
        assert_eq!(repeated_chars("acx333x"), 2);
        assert_eq!(repeated_chars("caiopa"), 1);
        assert_eq!(repeated_chars("abc"), 0);
        assert_eq!(repeated_chars("1Shimoon1111"), 2);
        assert_eq!(repeated_chars(""), 0);
    }

    #[test]
    fn counting_is_case_sensitive_and_by_scalar_value() {
        assert_eq!(repeated_chars("aA"), 0);
        assert_eq!(repeated_chars("ééü"), 1);
        assert_eq!(repeated_chars("🙂🙂"), 1);
    }
}
