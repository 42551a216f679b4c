//! Fault injection, graceful shutdown, and the OpenAPI document against the live router.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_with, test_config};

#[tokio::test]
async fn fault_injection_fails_and_delays_api_routes_but_not_health() {
    let app = spawn_app().await;
    let response = app
        .set_fault(json!({"error_ratio": 1.0, "latency_ms": 50, "duration_seconds": 60}))
        .await;
    assert_eq!(response.status(), 200);
    let status: Value = response.json().await.unwrap();
    assert_eq!(status["active"], true);
    assert_eq!(status["error_ratio"], 1.0);

    let started = Instant::now();
    let response = app.get("/helloworld").await;
    assert!(started.elapsed() >= Duration::from_millis(50));
    assert_eq!(response.status(), 500);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"status": "error", "message": "injected fault"})
    );
    assert_eq!(app.get(&format!("/get/{}", app.key("x"))).await.status(), 500);
    assert_eq!(app.get("/healthcheck").await.status(), 200);
    assert_eq!(app.get("/status").await.status(), 200);

    let metrics = app.metrics().await;
    assert_eq!(
        metrics.value("app_fault_injection_active", &[("kind", "errors")]),
        Some(1.0)
    );
    assert_eq!(
        metrics.value("app_fault_injection_active", &[("kind", "latency")]),
        Some(1.0)
    );
    assert_eq!(
        metrics.value(
            "http_server_request_duration_seconds_count",
            &[
                ("http_request_method", "GET"),
                ("http_route", "/helloworld"),
                ("http_response_status_code", "500")
            ]
        ),
        Some(1.0),
        "injected errors are measured like real ones"
    );

    let response = app.clear_fault().await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap()["active"], false);
    assert_eq!(app.get("/helloworld").await.status(), 200);
    let metrics = app.metrics().await;
    assert_eq!(
        metrics.value("app_fault_injection_active", &[("kind", "errors")]),
        Some(0.0)
    );
}

#[tokio::test]
async fn a_partial_error_ratio_fails_that_fraction_of_requests() {
    let app = spawn_app().await;
    app.set_fault(json!({"error_ratio": 0.25, "duration_seconds": 60}))
        .await;
    let mut failed = 0;
    for _ in 0..20 {
        if app.get("/helloworld").await.status() == 500 {
            failed += 1;
        }
    }
    assert_eq!(failed, 5);
    let fault: Value = app.get_fault().await.json().await.unwrap();
    assert_eq!(fault["latency_ms"], 0);
    let metrics = app.metrics().await;
    assert_eq!(
        metrics.value("app_fault_injection_active", &[("kind", "latency")]),
        Some(0.0)
    );
}

#[tokio::test]
async fn a_fault_expires_on_its_own() {
    let app = spawn_app().await;
    app.set_fault(json!({"error_ratio": 1.0, "duration_seconds": 1})).await;
    assert_eq!(app.get("/helloworld").await.status(), 500);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(app.get("/helloworld").await.status(), 200);
    let metrics = app.metrics().await;
    assert_eq!(
        metrics.value("app_fault_injection_active", &[("kind", "errors")]),
        Some(0.0)
    );
}

#[tokio::test]
async fn bad_fault_requests_are_refused() {
    let app = spawn_app().await;
    for body in [
        json!({"error_ratio": 1.5}),
        json!({"error_ratio": -0.1}),
        json!({}),
        json!({"latency_ms": 60_000}),
        json!({"error_ratio": 0.5, "duration_seconds": 0}),
        json!({"error_ratio": 0.5, "unknown": true}),
    ] {
        let response = app.set_fault(body.clone()).await;
        assert_eq!(response.status(), 400, "{body}");
        assert_eq!(response.json::<Value>().await.unwrap()["status"], "error");
    }
}

#[tokio::test]
async fn fault_injection_is_refused_unless_enabled() {
    let mut config = test_config();
    config.fault_injection_enabled = false;
    let app = spawn_with(config).await;
    let response = app.set_fault(json!({"error_ratio": 1.0})).await;
    assert_eq!(response.status(), 403);
    let fault: Value = app.get_fault().await.json().await.unwrap();
    assert_eq!(fault["enabled"], false);
    assert_eq!(app.clear_fault().await.status(), 403);
    assert_eq!(app.get("/helloworld").await.status(), 200);
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish() {
    let mut app = spawn_app().await;
    // A request that takes a second: injected latency.
    app.set_fault(json!({"latency_ms": 1000, "duration_seconds": 60})).await;
    let url = format!("{}/helloworld", app.api);
    let client = app.client.clone();
    let in_flight = tokio::spawn(async move { client.get(url).send().await });
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (result, took) = app.shutdown().await;
    result.expect("clean shutdown");
    let response = in_flight.await.unwrap().expect("the in-flight request completes");
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap(), json!({"msg": "Hello World"}));
    assert!(
        took >= Duration::from_millis(500),
        "shutdown waited for the request ({took:?})"
    );
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
    // Stopped accepting.
    assert!(app.client.get(format!("{}/healthcheck", app.api)).send().await.is_err());
}

#[tokio::test]
async fn shutdown_is_bounded_by_its_timeout() {
    let mut config = test_config();
    config.shutdown_timeout = Duration::from_secs(1);
    let mut app = spawn_with(config).await;
    app.set_fault(json!({"latency_ms": 10_000, "duration_seconds": 60}))
        .await;
    let url = format!("{}/helloworld", app.api);
    let client = app.client.clone();
    let in_flight = tokio::spawn(async move { client.get(url).send().await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (result, took) = app.shutdown().await;
    result.expect("shutdown returns Ok even when it gives up on a request");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "took {took:?}"
    );
    in_flight.abort();
}

/// Connections the kernel accepted before shutdown are served, not reset. Eight clients open a connection per
/// request as fast as they can while the app shuts down, five times; a plain graceful shutdown resets a few of
/// them each time (those still queued in the listen backlog when the listener closes).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_under_connection_churn_resets_no_connection() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[derive(Default, Debug)]
    struct Tally {
        answered: u64,
        refused: u64,
        reset: u64,
        other: Vec<String>,
    }
    let mut total = Tally::default();
    for _ in 0..5 {
        // /helloworld touches no dependency: Postgres and Redis play no part here.
        let mut app = spawn_with(test_config()).await;
        let addr = app.api.trim_start_matches("http://").to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..8)
            .map(|_| {
                let (addr, stop) = (addr.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut t = Tally::default();
                    while !stop.load(Ordering::Relaxed) {
                        let mut stream = match tokio::net::TcpStream::connect(&addr).await {
                            Ok(stream) => stream,
                            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                                t.refused += 1;
                                tokio::time::sleep(Duration::from_millis(1)).await;
                                continue;
                            }
                            Err(e) => {
                                t.other.push(format!("connect: {e}"));
                                continue;
                            }
                        };
                        let mut answer = Vec::new();
                        let exchange = async {
                            stream
                                .write_all(b"GET /helloworld HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
                                .await?;
                            stream.read_to_end(&mut answer).await
                        };
                        match exchange.await {
                            Ok(_) if answer.starts_with(b"HTTP/1.1 200") => t.answered += 1,
                            Ok(_) => t.other.push(format!("answer: {:?}", String::from_utf8_lossy(&answer))),
                            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => t.reset += 1,
                            Err(e) => t.other.push(format!("exchange: {e}")),
                        }
                    }
                    t
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (result, _) = app.shutdown().await;
        result.expect("clean shutdown");
        tokio::time::sleep(Duration::from_millis(100)).await;
        stop.store(true, Ordering::Relaxed);
        for client in clients {
            let t = client.await.unwrap();
            total.answered += t.answered;
            total.refused += t.refused;
            total.reset += t.reset;
            total.other.extend(t.other);
        }
    }
    assert!(total.answered > 0, "{total:?}");
    assert_eq!(total.reset, 0, "connections reset unanswered: {total:?}");
    assert!(total.other.is_empty(), "{total:?}");
}

#[tokio::test]
async fn every_documented_operation_is_served_under_its_template() {
    let app = spawn_app().await;
    let response = app.get("/openapi.json").await;
    assert_eq!(response.status(), 200);
    let document: Value = response.json().await.unwrap();
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    let key = app.key("doc");
    // The read routes come before the write routes in the document's (sorted) order.
    app.set(&key, json!(0)).await;
    let mut documented = BTreeSet::new();
    for (template, item) in document["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.insert(template.clone());
            let mut path = template.replace("{key}", &key).replace("{value}", "v");
            if template == "/query" {
                path.push_str("?param=abca");
            }
            let request = app
                .client
                .request(method.to_uppercase().parse().unwrap(), format!("{}{path}", app.api));
            let request = match template.as_str() {
                "/set" => request.json(&json!({"key": key, "value": 1})),
                _ => request,
            };
            let response = request.send().await.unwrap();
            assert!(response.status().is_success(), "{method} {path}: {}", response.status());
        }
    }
    // Each documented path is exactly a route template the metrics know.
    let routes = app
        .metrics()
        .await
        .label_values("http_server_request_duration_seconds_count", "http_route");
    assert_eq!(routes, documented);
}
