//! The metric contract, checked on a live scrape: names, types, labels, buckets, HELP text, promtool's lint, and
//! the bounded `http_route` label.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::json;

use crate::helpers::{spawn_app, spawn_with, test_config, TestApp};

/// The contract as alert rules and dashboards rely on it, written out independently of the code that
/// implements it: (name, type, label names).
const CONTRACT: &[(&str, &str, &[&str])] = &[
    (
        "http_server_request_duration_seconds",
        "histogram",
        &["http_request_method", "http_route", "http_response_status_code"],
    ),
    ("http_server_active_requests", "gauge", &["http_request_method"]),
    ("cache_requests_total", "counter", &["result"]),
    ("cache_operation_duration_seconds", "histogram", &["operation"]),
    (
        "db_client_operation_duration_seconds",
        "histogram",
        &["db_operation_name", "outcome"],
    ),
    // Exposed as untyped: promtool rejects a gauge whose name ends in _count; PromQL treats both alike.
    ("db_client_connection_count", "untyped", &["pool_name", "state"]),
    ("db_client_connection_max", "gauge", &["pool_name"]),
    ("db_client_connection_timeouts_total", "counter", &["pool_name"]),
    ("http_server_open_connections", "gauge", &["listener"]),
    ("http_server_connection_max", "gauge", &["listener"]),
    ("http_server_rejected_connections_total", "counter", &["listener"]),
    (
        "http_server_rejected_requests_total",
        "counter",
        &["listener", "reason"],
    ),
    ("http_server_idle_timeouts_total", "counter", &["listener"]),
    ("app_build_info", "gauge", &["version", "revision"]),
    ("app_fault_injection_active", "gauge", &["kind"]),
    ("process_cpu_seconds_total", "counter", &[]),
    ("process_resident_memory_bytes", "gauge", &[]),
    ("process_virtual_memory_bytes", "gauge", &[]),
    ("process_open_fds", "gauge", &[]),
    ("process_max_fds", "gauge", &[]),
    ("process_start_time_seconds", "gauge", &[]),
    ("process_threads", "gauge", &[]),
];

const HTTP_BUCKETS: &[&str] = &[
    "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf",
];

const ROUTE_TEMPLATES: &[&str] = &[
    "/",
    "/helloworld",
    "/healthcheck",
    "/status",
    "/set_key/{key}/{value}",
    "/get_key/{key}",
    "/set",
    "/get/{key}",
    "/query",
    "/openapi.json",
    "unmatched",
];

/// Sends a request to every route, so that every series has samples.
async fn exercise(app: &TestApp) {
    let key = app.key("k");
    app.get("/").await;
    app.get("/helloworld").await;
    app.get("/healthcheck").await;
    app.get("/status").await;
    app.get(&format!("/set_key/{key}/v")).await;
    app.get(&format!("/get_key/{key}")).await;
    app.set(&key, json!(1)).await;
    app.get_key_json(&key).await;
    app.get_key_json(&app.key("missing")).await;
    app.get("/query?param=aa").await;
    app.get("/openapi.json").await;
    app.get("/no/such/route").await;
}

/// The `# TYPE` of every family, and whether each has HELP text.
fn families(text: &str) -> (BTreeMap<String, String>, BTreeSet<String>) {
    let mut types = BTreeMap::new();
    let mut helped = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            types.insert(name.to_owned(), kind.to_owned());
        } else if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap();
            assert!(!help.trim().is_empty(), "empty HELP for {name}");
            helped.insert(name.to_owned());
        }
    }
    (types, helped)
}

#[tokio::test]
async fn the_scrape_holds_exactly_the_contract() {
    let app = spawn_app().await;
    exercise(&app).await;
    let metrics = app.metrics().await;
    let (types, helped) = families(&metrics.0);

    let expected: BTreeMap<String, String> = CONTRACT
        .iter()
        .map(|(n, t, _)| (n.to_string(), t.to_string()))
        .collect();
    assert_eq!(types, expected, "metric families and their types");
    assert_eq!(helped, expected.keys().cloned().collect(), "every family has HELP text");

    for (name, kind, labels) in CONTRACT {
        let series_names: Vec<String> = if *kind == "histogram" {
            vec![format!("{name}_bucket"), format!("{name}_sum"), format!("{name}_count")]
        } else {
            vec![name.to_string()]
        };
        let samples: Vec<_> = metrics
            .samples()
            .into_iter()
            .filter(|(n, _, _)| series_names.contains(n))
            .collect();
        assert!(!samples.is_empty(), "{name} has no samples");
        let wanted: BTreeSet<&str> = labels.iter().copied().collect();
        for (series, label_set, _) in samples {
            let mut names: BTreeSet<&str> = label_set.iter().map(|(k, _)| k.as_str()).collect();
            if series.ends_with("_bucket") {
                assert!(names.remove("le"), "{series} without le");
            }
            assert_eq!(names, wanted, "labels of {series}");
        }
    }

    let buckets: BTreeSet<String> = metrics
        .samples()
        .into_iter()
        .filter(|(n, labels, _)| {
            n == "http_server_request_duration_seconds_bucket"
                && labels.contains(&("http_route".to_owned(), "/helloworld".to_owned()))
        })
        .flat_map(|(_, labels, _)| labels.into_iter().filter(|(k, _)| k == "le").map(|(_, v)| v))
        .collect();
    assert_eq!(
        buckets,
        HTTP_BUCKETS.iter().map(|s| s.to_string()).collect(),
        "request latency buckets"
    );

    let routes = metrics.label_values("http_server_request_duration_seconds_count", "http_route");
    assert_eq!(
        routes,
        ROUTE_TEMPLATES.iter().map(|s| s.to_string()).collect(),
        "every route template, nothing else"
    );
    assert_eq!(
        metrics.label_values("cache_requests_total", "result"),
        ["error", "hit", "miss"].map(String::from).into()
    );
    assert_eq!(
        metrics.label_values("cache_operation_duration_seconds_count", "operation"),
        ["get", "set"].map(String::from).into()
    );
    assert_eq!(
        metrics.label_values("db_client_operation_duration_seconds_count", "db_operation_name"),
        ["migrate", "ping", "select", "upsert"].map(String::from).into()
    );
    for pool in ["postgres", "redis"] {
        for state in ["idle", "used"] {
            assert!(metrics
                .value("db_client_connection_count", &[("pool_name", pool), ("state", state)])
                .is_some());
        }
    }
    assert_eq!(
        metrics.value("db_client_connection_max", &[("pool_name", "postgres")]),
        Some(app.config.db_pool_max_size as f64)
    );
    assert_eq!(
        metrics.value(
            "app_build_info",
            &[("version", app::VERSION), ("revision", app::REVISION)]
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn known_series_exist_before_any_traffic() {
    let app = spawn_app().await;
    let metrics = app.metrics().await;
    for result in ["hit", "miss", "error"] {
        assert_eq!(
            metrics.value("cache_requests_total", &[("result", result)]),
            Some(0.0),
            "{result}"
        );
    }
    for pool in ["postgres", "redis"] {
        assert_eq!(
            metrics.value("db_client_connection_timeouts_total", &[("pool_name", pool)]),
            Some(0.0)
        );
        assert!(metrics
            .value("db_client_connection_max", &[("pool_name", pool)])
            .is_some());
    }
    for kind in ["errors", "latency"] {
        assert_eq!(
            metrics.value("app_fault_injection_active", &[("kind", kind)]),
            Some(0.0)
        );
    }
    assert_eq!(
        metrics.value("http_server_active_requests", &[("http_request_method", "GET")]),
        Some(0.0)
    );
    for (listener, max) in [
        ("api", app.config.max_connections),
        ("admin", app::connection::ADMIN_MAX_CONNECTIONS),
    ] {
        let l = [("listener", listener)];
        assert_eq!(
            metrics.value("http_server_connection_max", &l),
            Some(max as f64),
            "{listener}"
        );
        assert_eq!(metrics.value("http_server_rejected_connections_total", &l), Some(0.0));
        assert_eq!(metrics.value("http_server_idle_timeouts_total", &l), Some(0.0));
        assert!(metrics.value("http_server_open_connections", &l).is_some());
        for reason in [
            "header_too_large",
            "uri_too_long",
            "malformed",
            "header_timeout",
            "body_timeout",
            "write_timeout",
        ] {
            assert_eq!(
                metrics.value(
                    "http_server_rejected_requests_total",
                    &[("listener", listener), ("reason", reason)]
                ),
                Some(0.0),
                "{listener} {reason}"
            );
        }
    }
}

#[tokio::test]
async fn promtool_finds_nothing_to_lint() {
    let app = spawn_app().await;
    exercise(&app).await;
    let metrics = app.metrics().await;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed (Debian package prometheus; native/install.sh installs it)");
    child.stdin.take().unwrap().write_all(metrics.0.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn a_thousand_random_unmatched_paths_add_only_the_unmatched_route() {
    let app = spawn_app().await;
    app.get("/helloworld").await;
    let before = app
        .metrics()
        .await
        .label_values("http_server_request_duration_seconds_count", "http_route");
    // Deterministic pseudo-random paths (xorshift), several segments, odd characters included.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    // No dots: the client would resolve `.` and `..` segments into real routes.
    let alphabet: Vec<char> = "abcXYZ019-_~%20é{}".chars().collect();
    let paths: Vec<String> = (0..1000)
        .map(|_| {
            let segments = 1 + next() % 4;
            let mut path = String::new();
            for _ in 0..segments {
                path.push('/');
                for _ in 0..1 + next() % 12 {
                    path.push(alphabet[(next() % alphabet.len() as u64) as usize]);
                }
            }
            // Some look like real routes with extra segments.
            match next() % 5 {
                0 => format!("/get{path}/x"),
                1 => format!("/helloworld{path}"),
                _ => format!("/zz{path}"),
            }
        })
        .collect();
    for chunk in paths.chunks(50) {
        let mut requests = tokio::task::JoinSet::new();
        for path in chunk {
            let url = format!("{}{path}", app.api);
            let client = app.client.clone();
            requests.spawn(async move { (client.get(&url).send().await.expect("answers").status(), url) });
        }
        while let Some(done) = requests.join_next().await {
            let (status, url) = done.unwrap();
            assert_eq!(status, 404, "{url}");
        }
    }
    let metrics = app.metrics().await;
    let after = metrics.label_values("http_server_request_duration_seconds_count", "http_route");
    let added: BTreeSet<_> = after.difference(&before).cloned().collect();
    assert_eq!(added, BTreeSet::from(["unmatched".to_owned()]));
    assert_eq!(
        metrics.value(
            "http_server_request_duration_seconds_count",
            &[
                ("http_request_method", "GET"),
                ("http_route", "unmatched"),
                ("http_response_status_code", "404")
            ]
        ),
        Some(1000.0)
    );
}

#[tokio::test]
async fn with_metrics_disabled_requests_are_not_measured() {
    let mut config = test_config();
    config.metrics_enabled = false;
    let app = spawn_with(config).await;
    app.assert_dependencies_up().await;
    exercise(&app).await;
    let metrics = app.metrics().await;
    assert!(
        metrics
            .samples()
            .iter()
            .all(|(n, _, _)| !n.starts_with("http_server_request_duration")),
        "{}",
        metrics.0
    );
    assert!(metrics
        .value(
            "app_build_info",
            &[("version", app::VERSION), ("revision", app::REVISION)]
        )
        .is_some());
    assert!(metrics.value("process_resident_memory_bytes", &[]).is_some());
}

#[tokio::test]
async fn the_admin_listener_answers_404_and_405_in_json() {
    let app = spawn_app().await;
    let response = app.client.get(format!("{}/nope", app.admin)).send().await.unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(response.json::<serde_json::Value>().await.unwrap()["status"], "error");
    let response = app.client.post(format!("{}/metrics", app.admin)).send().await.unwrap();
    assert_eq!(response.status(), 405);
}
