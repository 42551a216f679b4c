//! The routes kept from the original seed apps: hello world, liveness, the HTML home page and the query counter.

use std::borrow::Cow;
use std::collections::HashMap;

use axum::extract::State;
use axum::http::{Method, Uri};
use axum::response::Html;
use axum::Json;
use serde::Serialize;
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
///
/// `HEAD` (which axum routes here too) answers the page GET would answer without storing or reading anything:
/// HEAD is a safe method, and link checkers and prefetchers send it freely.
pub async fn home(method: Method, State(state): State<AppState>) -> Result<Html<String>, ApiError> {
    const KEY: &str = "Hello";
    const VALUE: &str = "World!";
    if method == Method::HEAD {
        return Ok(home_page(KEY, VALUE));
    }
    state.store.set(KEY, &Value::String(VALUE.to_owned())).await?;
    let value = match state.store.get(KEY).await? {
        Some(Value::String(s)) => s,
        Some(other) => other.to_string(),
        None => String::new(),
    };
    Ok(home_page(KEY, &value))
}

fn home_page(key: &str, value: &str) -> Html<String> {
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
    Html(format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>app</title></head><body>\n\
         <p>Initial set key on redis : {key}</p>\n<p>Value retrieved from redis: {value}</p>\n<ul>\n{links}\n</ul>\n\
         </body></html>\n",
        key = escape_html(key),
        value = escape_html(value),
    ))
}

/// `GET /query?param=S`: `{"param": S, "count": N}`, N = distinct characters that occur more than once.
pub async fn query(uri: Uri) -> Result<Json<QueryAnswer>, ApiError> {
    let param = query_param(uri.query().unwrap_or_default(), "param")?
        .ok_or_else(|| ApiError::BadRequest("missing query parameter: param".to_owned()))?;
    let count = repeated_chars(&param);
    Ok(Json(QueryAnswer { param, count }))
}

/// The value of `name` in a query string (`application/x-www-form-urlencoded`: `+` is a space, `%XX` a byte).
///
/// Decoded here rather than by axum's `Query`, which replaces bytes that are not UTF-8 with U+FFFD and answers
/// 200 for data it changed. Every name and value must be UTF-8 once decoded (400 otherwise), and `name` may occur
/// once (400 if repeated, as `Query` answered); other parameters are ignored.
pub fn query_param(query: &str, name: &str) -> Result<Option<String>, ApiError> {
    let mut found = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = form_decode(key)?;
        let value = form_decode(value)?;
        if key == name {
            if found.is_some() {
                return Err(ApiError::BadRequest(format!(
                    "query parameter {name} is given more than once"
                )));
            }
            found = Some(value);
        }
    }
    Ok(found)
}

fn form_decode(text: &str) -> Result<String, ApiError> {
    let spaced: Cow<'_, str> = if text.contains('+') {
        Cow::Owned(text.replace('+', " "))
    } else {
        Cow::Borrowed(text)
    };
    let bytes: Vec<u8> = percent_encoding::percent_decode_str(&spaced).collect();
    String::from_utf8(bytes)
        .map_err(|_| ApiError::BadRequest("the query string is not valid UTF-8 once percent-decoded".to_owned()))
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
    fn query_parameters_are_form_decoded_and_must_be_utf8() {
        assert_eq!(
            query_param("param=a%20b+c&x=1", "param").unwrap().as_deref(),
            Some("a b c")
        );
        assert_eq!(query_param("x=1&param", "param").unwrap().as_deref(), Some(""));
        assert_eq!(query_param("param=%2B%C3%A9", "param").unwrap().as_deref(), Some("+é"));
        assert_eq!(query_param("param=100%", "param").unwrap().as_deref(), Some("100%"));
        assert_eq!(query_param("other=1", "param").unwrap(), None);
        assert_eq!(query_param("", "param").unwrap(), None);
        for query in ["param=%FF%FE", "param=%C3", "param=ok&x=%ED%A0%80", "%FF=1"] {
            let err = query_param(query, "param").unwrap_err();
            assert!(err.to_string().contains("UTF-8"), "{query}: {err}");
        }
        assert!(query_param("param=a&param=b", "param").is_err());
    }

    #[test]
    fn counting_is_case_sensitive_and_by_scalar_value() {
        assert_eq!(repeated_chars("aA"), 0);
        assert_eq!(repeated_chars("ééü"), 1);
        assert_eq!(repeated_chars("🙂🙂"), 1);
    }
}
