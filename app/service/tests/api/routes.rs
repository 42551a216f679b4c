//! Every route of the API and every error case, as a client sees them.

use serde_json::{json, Value};

use crate::helpers::{encode, spawn_app};

async fn json_body(response: reqwest::Response) -> Value {
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "content-type {content_type}"
    );
    response.json().await.unwrap()
}

fn assert_error(body: &Value, message: &str) {
    assert_eq!(body["status"], "error", "{body}");
    assert_eq!(body["message"], message, "{body}");
}

#[tokio::test]
async fn helloworld_greets() {
    let app = spawn_app().await;
    let response = app.get("/helloworld").await;
    assert_eq!(response.status(), 200);
    assert_eq!(json_body(response).await, json!({"msg": "Hello World"}));
}

#[tokio::test]
async fn healthcheck_answers_ok_as_text() {
    let app = spawn_app().await;
    let response = app.get("/healthcheck").await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    assert_eq!(response.text().await.unwrap(), "OK");
}

#[tokio::test]
async fn status_reports_each_dependency_without_secrets() {
    let app = spawn_app().await;
    let response = app.get("/status").await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["status"], "Up");
    assert_eq!(body["version"], app::VERSION);
    assert_eq!(body["revision"], app::REVISION);
    assert!(body["uptime_seconds"].is_u64());
    for dependency in ["postgres", "redis"] {
        assert_eq!(body["checks"][dependency]["status"], "ok", "{body}");
        assert!(body["checks"][dependency]["latency_ms"].as_f64().unwrap() >= 0.0);
    }
    let url = app.config.database_url.expose();
    assert!(
        !text.contains(url) && !text.contains("postgres://") && !text.contains("redis://"),
        "{text}"
    );
}

#[tokio::test]
async fn home_stores_hello_and_reads_it_back() {
    let app = spawn_app().await;
    let response = app.get("/").await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let html = response.text().await.unwrap();
    assert!(html.contains("Initial set key on redis : Hello"), "{html}");
    assert!(html.contains("Value retrieved from redis: World!"), "{html}");
    for link in ["/helloworld", "/status", "/get/foo", "/openapi.json"] {
        assert!(html.contains(&format!("href=\"{link}\"")), "no link to {link}");
    }
    let response = app.get("/get/Hello").await;
    assert_eq!(json_body(response).await, json!({"key": "Hello", "value": "World!"}));
}

#[tokio::test]
async fn set_key_stores_and_answers_in_escaped_html() {
    let app = spawn_app().await;
    let key = app.key("foo");
    let response = app.get(&format!("/set_key/{key}/bar")).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert_eq!(response.text().await.unwrap(), format!("{key} is set to bar"));

    let key = app.key("<b>");
    let response = app
        .get(&format!("/set_key/{}/{}", encode(&key), encode("<script>x&y</script>")))
        .await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(!text.contains('<'), "{text}");
    assert!(
        text.ends_with("&lt;b&gt; is set to &lt;script&gt;x&amp;y&lt;/script&gt;"),
        "{text}"
    );
    // Stored as given, not escaped.
    let response = app.get(&format!("/get_key/{}", encode(&key))).await;
    assert_eq!(response.text().await.unwrap(), "<script>x&y</script>");
}

#[tokio::test]
async fn get_key_answers_text_or_not_found() {
    let app = spawn_app().await;
    let key = app.key("k");
    app.get(&format!("/set_key/{key}/value with spaces")).await;
    let response = app.get(&format!("/get_key/{key}")).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    assert_eq!(response.text().await.unwrap(), "value with spaces");

    let response = app.get(&format!("/get_key/{}", app.key("missing"))).await;
    assert_eq!(response.status(), 404);
    assert_eq!(response.text().await.unwrap(), "Key not found");
}

#[tokio::test]
async fn set_then_get_round_trips_any_json_value() {
    let app = spawn_app().await;
    for (i, value) in [
        json!("text"),
        json!(42),
        json!(-1.5),
        json!(true),
        json!(false),
        json!([1, "two", null, {"three": 3}]),
        json!({"nested": {"list": [], "empty": {}}, "unicode": "héllo 🙂"}),
    ]
    .into_iter()
    .enumerate()
    {
        let key = app.key(&format!("v{i}"));
        let response = app.set(&key, value.clone()).await;
        assert_eq!(response.status(), 200);
        assert_eq!(
            json_body(response).await,
            json!({"status": "success", "message": "Key-value pair is set successfully"})
        );
        let response = app.get_key_json(&key).await;
        assert_eq!(response.status(), 200);
        assert_eq!(json_body(response).await, json!({"key": key, "value": value}));
    }
}

#[tokio::test]
async fn set_rejects_invalid_key_pairs() {
    let app = spawn_app().await;
    for body in [
        json!({"value": 1}),
        json!({"key": null, "value": 1}),
        json!({"key": 7, "value": 1}),
        json!({"key": ["k"], "value": 1}),
        json!({"key": app.key("k")}),
        json!({"key": app.key("k"), "value": null}),
        json!([1, 2]),
        json!("just a string"),
    ] {
        let response = app.post_json("/set", &body).await;
        assert_eq!(response.status(), 400, "{body}");
        assert_error(&json_body(response).await, "Invalid key pair");
    }
}

#[tokio::test]
async fn set_rejects_malformed_json_and_other_content_types() {
    let app = spawn_app().await;
    let url = format!("{}/set", app.api);
    let response = app
        .client
        .post(&url)
        .header("content-type", "application/json")
        .body("{\"key\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body = json_body(response).await;
    assert_eq!(body["status"], "error");
    assert!(
        body["message"].as_str().unwrap().starts_with("malformed JSON"),
        "{body}"
    );

    for content_type in [None, Some("text/plain"), Some("application/x-www-form-urlencoded")] {
        let mut request = app.client.post(&url).body(r#"{"key":"a","value":1}"#);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 415, "{content_type:?}");
        assert_eq!(json_body(response).await["status"], "error");
    }
}

#[tokio::test]
async fn bodies_over_the_limit_get_413_json() {
    let app = spawn_app().await;
    let big = "a".repeat(app.config.max_body_bytes);
    let response = app.set(&app.key("big"), json!(big)).await;
    assert_eq!(response.status(), 413);
    assert_error(&json_body(response).await, "request body is larger than the limit");
    // Just under the limit is fine.
    let fits = "a".repeat(app.config.max_body_bytes - 100);
    assert_eq!(app.set(&app.key("fits"), json!(fits)).await.status(), 200);
}

#[tokio::test]
async fn keys_over_the_limit_get_400_json_on_every_key_route() {
    let app = spawn_app().await;
    let long = "k".repeat(app.config.max_key_bytes + 1);
    let message = format!("key is longer than {} bytes", app.config.max_key_bytes);
    for path in [
        format!("/get/{long}"),
        format!("/get_key/{long}"),
        format!("/set_key/{long}/v"),
    ] {
        let response = app.get(&path).await;
        assert_eq!(response.status(), 400, "{path}");
        assert_error(&json_body(response).await, &message);
    }
    let response = app.set(&long, json!(1)).await;
    assert_eq!(response.status(), 400);
    assert_error(&json_body(response).await, &message);
    // A key of exactly the limit (in bytes, multi-byte characters included) is accepted.
    let prefix = app.key("");
    let fill = app.config.max_key_bytes - prefix.len();
    let exact = format!("{prefix}{}", "é".repeat(fill / 2) + &"x".repeat(fill % 2));
    assert_eq!(exact.len(), app.config.max_key_bytes);
    assert_eq!(app.set(&exact, json!(1)).await.status(), 200);
    assert_eq!(app.get_key_json(&exact).await.status(), 200);
}

#[tokio::test]
async fn values_postgres_cannot_hold_get_400() {
    let app = spawn_app().await;
    let response = app.set(&app.key("nul"), json!("a\u{0}b")).await;
    assert_eq!(response.status(), 400);
    assert_eq!(json_body(response).await["status"], "error");
}

#[tokio::test]
async fn get_answers_404_json_for_a_missing_key() {
    let app = spawn_app().await;
    let response = app.get_key_json(&app.key("missing")).await;
    assert_eq!(response.status(), 404);
    assert_error(&json_body(response).await, "Key not found");
}

#[tokio::test]
async fn all_key_routes_share_one_store() {
    let app = spawn_app().await;
    // /set_key → /get: a JSON string.
    let key = app.key("a");
    app.get(&format!("/set_key/{key}/bar")).await;
    assert_eq!(
        json_body(app.get_key_json(&key).await).await,
        json!({"key": key, "value": "bar"})
    );
    // /set (string) → /get_key: the string itself.
    let key = app.key("b");
    app.set(&key, json!("baz")).await;
    assert_eq!(app.get(&format!("/get_key/{key}")).await.text().await.unwrap(), "baz");
    // /set (object) → /get_key: its JSON text.
    let key = app.key("c");
    app.set(&key, json!({"x": [1, 2]})).await;
    assert_eq!(
        app.get(&format!("/get_key/{key}")).await.text().await.unwrap(),
        r#"{"x":[1,2]}"#
    );
    // A later write wins everywhere.
    app.get(&format!("/set_key/{key}/new")).await;
    assert_eq!(json_body(app.get_key_json(&key).await).await["value"], "new");
}

#[tokio::test]
async fn query_counts_repeated_characters() {
    let app = spawn_app().await;
    for (param, count) in [
        ("acx333x", 2),
        ("caiopa", 1),
        ("abc", 0),
        ("1Shimoon1111", 2),
        ("", 0),
        ("aAaA", 2),
    ] {
        let response = app.get(&format!("/query?param={}", encode(param))).await;
        assert_eq!(response.status(), 200, "{param}");
        assert_eq!(json_body(response).await, json!({"param": param, "count": count}));
    }
    let response = app.get(&format!("/query?param={}", encode("ééü🙂🙂"))).await;
    assert_eq!(json_body(response).await["count"], 2);
}

#[tokio::test]
async fn query_without_param_is_400_json() {
    let app = spawn_app().await;
    for path in ["/query", "/query?other=1"] {
        let response = app.get(path).await;
        assert_eq!(response.status(), 400, "{path}");
        assert_error(&json_body(response).await, "missing query parameter: param");
    }
}

#[tokio::test]
async fn unknown_paths_get_404_json() {
    let app = spawn_app().await;
    for path in ["/nope", "/get", "/get/a/b", "/set_key/only-key", "/helloworld/extra"] {
        let response = app.get(path).await;
        assert_eq!(response.status(), 404, "{path}");
        assert_error(&json_body(response).await, "not found");
    }
    let response = app.client.post(format!("{}/nope", app.api)).send().await.unwrap();
    assert_eq!(response.status(), 404);
}

#[tokio::test]
async fn wrong_methods_get_405_json_with_allow() {
    let app = spawn_app().await;
    for (method, path, allow) in [
        (reqwest::Method::GET, "/set", "POST"),
        (reqwest::Method::POST, "/helloworld", "GET,HEAD"),
        (reqwest::Method::DELETE, "/get/x", "GET,HEAD"),
        (reqwest::Method::PUT, "/", "GET,HEAD"),
    ] {
        let response = app
            .client
            .request(method.clone(), format!("{}{path}", app.api))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 405, "{method} {path}");
        assert_eq!(response.headers()["allow"], allow);
        assert_error(&json_body(response).await, "method not allowed");
    }
}

#[tokio::test]
async fn request_ids_are_echoed_or_generated() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(format!("{}/helloworld", app.api))
        .header("x-request-id", "drill-42")
        .send()
        .await;
    assert_eq!(response.unwrap().headers()["x-request-id"], "drill-42");
    let first = app.get("/nope").await.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let second = app.get("/nope").await.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(first.len(), 32);
    assert_ne!(first, second);
    // An unusable id (too long) is replaced.
    let long = "x".repeat(200);
    let response = app
        .client
        .get(format!("{}/healthcheck", app.api))
        .header("x-request-id", &long)
        .send()
        .await;
    assert_ne!(response.unwrap().headers()["x-request-id"], long.as_str());
}

#[tokio::test]
async fn the_admin_endpoints_are_not_on_the_api_listener() {
    let app = spawn_app().await;
    assert_eq!(app.get("/metrics").await.status(), 404);
    assert_eq!(app.get("/fault").await.status(), 404);
}
