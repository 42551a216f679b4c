//! What the API does with input it could silently change: numbers are stored and returned exactly, duplicate
//! member names and invalid UTF-8 are refused, HEAD has no side effect, and every answer carries `nosniff`.

use bb8_redis::redis::{self, AsyncCommands};
use serde_json::{json, Value};

use crate::helpers::{encode, raw_request, spawn_app, TestApp};

/// `POST /set` of a body written out by hand, so that the number text is exactly what a client sent.
async fn set_raw(app: &TestApp, body: &str) -> reqwest::Response {
    app.client
        .post(format!("{}/set", app.api))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .expect("the API answers")
}

/// The text of the value in the body of `GET /get/{key}`, as the server wrote it (`{"key":…,"value":…}`).
async fn value_text(app: &TestApp, key: &str) -> String {
    let response = app.get_key_json(key).await;
    assert_eq!(response.status(), 200, "GET /get/{key}");
    let body = response.text().await.unwrap();
    let prefix = format!("{{\"key\":{},\"value\":", json!(key));
    body.strip_prefix(&prefix)
        .and_then(|rest| rest.strip_suffix('}'))
        .unwrap_or_else(|| panic!("unexpected body {body}"))
        .to_owned()
}

async fn forget_cached(app: &TestApp, key: &str) {
    let client = redis::Client::open(crate::helpers::redis_admin_url(&app.config)).unwrap();
    let mut redis = client
        .get_multiplexed_async_connection()
        .await
        .expect("Redis is reachable");
    let entry = crate::helpers::cache_entry(&app.config, key).await;
    let deleted: i64 = redis.del(&entry).await.unwrap();
    assert_eq!(deleted, 1, "{entry} was cached");
}

async fn error_message(response: reqwest::Response) -> String {
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "content-type {content_type}"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "error", "{body}");
    body["message"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn numbers_come_back_exactly_from_the_cache_and_from_postgres() {
    let app = spawn_app().await;
    let max_double = format!("17976931348623155{}", "0".repeat(292));
    let smallest_double = format!("0.{}5", "0".repeat(323));
    for (i, (sent, stored)) in [
        ("1.7976931348623155e308", max_double.as_str()),
        ("18446744073709551617", "18446744073709551617"),
        (
            "0.1000000000000000055511151231257827",
            "0.1000000000000000055511151231257827",
        ),
        (
            "-123456789012345678901234567890.123456789",
            "-123456789012345678901234567890.123456789",
        ),
        ("5e-324", smallest_double.as_str()),
        ("1.50", "1.50"),
        ("1E+2", "100"),
        ("-1.5e-3", "-0.0015"),
        ("-0", "0"),
        ("-0.0", "0.0"),
        ("0.000e5", "0"),
        ("0e-5", "0.00000"),
        ("1.50e1", "15.0"),
        ("100e-2", "1.00"),
        ("[1e2,{\"n\":0.10}]", "[100,{\"n\":0.10}]"),
    ]
    .into_iter()
    .enumerate()
    {
        let key = app.key(&format!("n{i}"));
        let response = set_raw(&app, &format!("{{\"key\":{},\"value\":{sent}}}", json!(key))).await;
        assert_eq!(response.status(), 200, "{sent}: {}", response.text().await.unwrap());
        // Just written: read from Redis.
        assert_eq!(value_text(&app, &key).await, stored, "{sent} through the cache");
        // Not cached: read from Postgres.
        forget_cached(&app, &key).await;
        assert_eq!(value_text(&app, &key).await, stored, "{sent} through Postgres");
        // And the fill it caused reads the same.
        assert_eq!(
            value_text(&app, &key).await,
            stored,
            "{sent} through the refilled cache"
        );
    }
    // The written-out double is still the same double.
    assert_eq!(max_double.parse::<f64>().unwrap(), 1.7976931348623155e308);
}

#[tokio::test]
async fn numbers_postgres_cannot_hold_are_refused_with_400() {
    let app = spawn_app().await;
    for number in ["1e131072", "1e-16384", "0e-16384", "1e99999999999999999999"] {
        let key = app.key("big");
        let response = set_raw(&app, &format!("{{\"key\":{},\"value\":{number}}}", json!(key))).await;
        assert_eq!(response.status(), 400, "{number}");
        let message = error_message(response).await;
        assert!(message.contains("cannot be stored"), "{number}: {message}");
        assert_eq!(app.get_key_json(&key).await.status(), 404, "{number} was stored");
    }
}

#[tokio::test]
async fn numbers_that_would_grow_past_the_body_limit_are_refused_with_413() {
    let app = spawn_app().await;
    // 1e1000 is a thousand and one digits once written out: seventy of them exceed 64 KiB.
    let numbers = vec!["1e1000"; 70].join(",");
    let key = app.key("grows");
    let response = set_raw(&app, &format!("{{\"key\":{},\"value\":[{numbers}]}}", json!(key))).await;
    assert_eq!(response.status(), 413);
    error_message(response).await;
    assert_eq!(app.get_key_json(&key).await.status(), 404);
}

#[tokio::test]
async fn duplicate_member_names_are_refused_at_any_depth() {
    let app = spawn_app().await;
    let key = app.key("dup");
    let k = json!(key);
    for (body, name) in [
        (format!("{{\"key\":{k},\"key\":\"other\",\"value\":1}}"), "key"),
        (format!("{{\"key\":{k},\"value\":1,\"value\":2}}"), "value"),
        (format!("{{\"key\":{k},\"value\":{{\"a\":1,\"a\":2}}}}"), "a"),
        (
            format!("{{\"key\":{k},\"value\":[{{\"b\":{{\"c\":1,\"d\":0,\"c\":1}}}}]}}"),
            "c",
        ),
        // The same name, once escaped: still a duplicate.
        (format!("{{\"key\":{k},\"value\":{{\"e\":1,\"\\u0065\":2}}}}"), "e"),
    ] {
        let response = set_raw(&app, &body).await;
        assert_eq!(response.status(), 400, "{body}");
        let message = error_message(response).await;
        assert!(
            message.contains("duplicate") && message.contains(&format!("\"{name}\"")),
            "{body}: {message}"
        );
    }
    assert_eq!(app.get_key_json(&key).await.status(), 404);
    // Equal names in different objects are fine.
    let response = set_raw(
        &app,
        &format!("{{\"key\":{k},\"value\":{{\"a\":{{\"a\":1}},\"b\":[{{\"a\":2}}]}}}}"),
    )
    .await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn member_names_the_json_library_would_misread_are_refused() {
    let app = spawn_app().await;
    let key = app.key("names");
    // Read back through serde_json's `Value` (as the store reads Redis and Postgres), this object is the number 1.
    let body = format!(
        "{{\"key\":{},\"value\":{{\"$serde_json::private::Number\":\"1\"}}}}",
        json!(key)
    );
    let response = set_raw(&app, &body).await;
    assert_eq!(response.status(), 400);
    assert!(error_message(response).await.contains("reserved"));
    assert_eq!(app.get_key_json(&key).await.status(), 404);
    // Names that merely look alike are stored and read back as sent.
    let body = format!("{{\"key\":{},\"value\":{{\"$serde_json\":\"1\"}}}}", json!(key));
    assert_eq!(set_raw(&app, &body).await.status(), 200);
    assert_eq!(value_text(&app, &key).await, r#"{"$serde_json":"1"}"#);
}

#[tokio::test]
async fn invalid_utf8_in_the_query_path_or_body_is_refused_with_400_json() {
    let app = spawn_app().await;
    for path in ["/query?param=%FF%FE", "/query?param=%C3", "/query?param=a&other=%FF"] {
        let response = app.get(path).await;
        assert_eq!(response.status(), 400, "{path}");
        let message = error_message(response).await;
        assert!(message.contains("UTF-8"), "{path}: {message}");
    }
    // Valid percent-encoded UTF-8 and `+` for a space still work.
    let response = app.get("/query?param=%C3%A9+%C3%A9").await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"param": "é é", "count": 1})
    );

    for path in ["/get/%FF", "/get_key/%FF%FE", "/set_key/k/%FF", "/set_key/%C3/v"] {
        let response = app.get(path).await;
        assert_eq!(response.status(), 400, "{path}");
        error_message(response).await;
    }

    let mut body = format!("{{\"key\":{},\"value\":\"", json!(app.key("bytes"))).into_bytes();
    body.extend_from_slice(b"\xff\xfe\"}");
    let response = app
        .client
        .post(format!("{}/set", app.api))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    error_message(response).await;
    assert_eq!(app.get_key_json(&app.key("bytes")).await.status(), 404);
}

#[tokio::test]
async fn head_has_no_side_effect() {
    let app = spawn_app().await;
    let upserts = |metrics: &crate::helpers::Metrics| {
        metrics.value_or_zero(
            "db_client_operation_duration_seconds_count",
            &[("db_operation_name", "upsert"), ("outcome", "ok")],
        )
    };
    let before = upserts(&app.metrics().await);
    let key = app.key("head");
    let response = app
        .client
        .head(format!("{}/set_key/{}/v", app.api, encode(&key)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let response = app.client.head(format!("{}/", app.api)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        app.get_key_json(&key).await.status(),
        404,
        "HEAD /set_key stored the key"
    );
    assert_eq!(
        upserts(&app.metrics().await),
        before,
        "a HEAD request wrote to Postgres"
    );
    // GET still writes.
    app.get(&format!("/set_key/{}/v", encode(&key))).await;
    assert_eq!(app.get_key_json(&key).await.status(), 200);
    assert_eq!(upserts(&app.metrics().await), before + 1.0);
}

#[tokio::test]
async fn a_null_value_is_refused_as_the_openapi_document_says() {
    let app = spawn_app().await;
    let key = app.key("null");
    let response = app.set(&key, Value::Null).await;
    assert_eq!(response.status(), 400);
    assert_eq!(error_message(response).await, "Invalid key pair");
    assert_eq!(app.get_key_json(&key).await.status(), 404);
    // Nulls inside a value are values like any other.
    assert_eq!(app.set(&key, json!([null, {"a": null}])).await.status(), 200);

    let document: Value = app.get("/openapi.json").await.json().await.unwrap();
    let schema = &document["components"]["schemas"]["SetRequest"];
    assert_eq!(schema["required"], json!(["key", "value"]));
    let value = &schema["properties"]["value"];
    // OpenAPI 3.0 has no null type: a schema refuses null when it lists its types and is not nullable.
    assert_eq!(value["nullable"], false, "{value}");
    let types: Vec<&str> = value["anyOf"]
        .as_array()
        .unwrap_or_else(|| panic!("value lists no types: {value}"))
        .iter()
        .map(|t| t["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["string", "number", "boolean", "array", "object"]);
}

#[tokio::test]
async fn every_api_response_says_nosniff() {
    let app = spawn_app().await;
    let key = app.key("sniff");
    app.set(&key, json!("<html>")).await;
    let mut responses = vec![
        app.get("/helloworld").await,
        app.get(&format!("/get/{key}")).await,
        app.get(&format!("/get_key/{key}")).await,
        app.get("/query?param=%3Cscript%3E").await,
        app.get("/query").await,
        app.get("/nope%3Cscript%3E").await,
        app.get("/set").await,
        app.get("/status").await,
        app.get("/openapi.json").await,
        app.set(&key, json!(1)).await,
        app.post_json("/set", &json!({"key": "<script>"})).await,
    ];
    responses.push(app.client.get(format!("{}/metrics", app.admin)).send().await.unwrap());
    responses.push(app.get_fault().await);
    for response in responses {
        assert_eq!(
            response
                .headers()
                .get("x-content-type-options")
                .map(|v| v.to_str().unwrap()),
            Some("nosniff"),
            "{}",
            response.url()
        );
    }
}

#[tokio::test]
async fn an_unknown_long_method_is_answered_and_its_label_stays_bounded() {
    let app = spawn_app().await;
    let method = "X".repeat(8000);
    let answer = raw_request(
        &app.api,
        format!("{method} /helloworld HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(
        answer.starts_with(b"HTTP/1.1 405"),
        "{}",
        String::from_utf8_lossy(&answer[..40.min(answer.len())])
    );
    let methods = app
        .metrics()
        .await
        .label_values("http_server_request_duration_seconds_count", "http_request_method");
    assert!(
        methods.contains("_OTHER") && methods.iter().all(|m| m.len() <= 8),
        "{methods:?}"
    );
}
