//! The admin listener's access rules: `/fault` needs the bearer token, only the listener's own address is accepted
//! as `Host`, and fault injection does not start without a token.

use app::Application;
use serde_json::{json, Value};

use crate::helpers::{raw_request, spawn_app, test_config, ADMIN_TOKEN};

async fn status_and_body(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn fault_needs_the_bearer_token_for_every_method() {
    let app = spawn_app().await;
    let url = format!("{}/fault", app.admin);
    let body = json!({"error_ratio": 1.0, "duration_seconds": 60});
    for method in [reqwest::Method::GET, reqwest::Method::POST, reqwest::Method::DELETE] {
        let request = || app.client.request(method.clone(), &url).json(&body);
        for (what, request) in [
            ("no token", request()),
            ("a wrong token", request().bearer_auth("not-the-token-0123456789")),
            (
                "a prefix of the token",
                request().bearer_auth(&ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1]),
            ),
            ("another scheme", request().basic_auth("admin", Some(ADMIN_TOKEN))),
        ] {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 401, "{method} /fault with {what}");
            assert!(
                response.headers()["www-authenticate"]
                    .to_str()
                    .unwrap()
                    .starts_with("Bearer"),
                "{method} with {what}"
            );
            let (_, body) = status_and_body(response).await;
            assert_eq!(body["status"], "error", "{body}");
        }
        assert_eq!(
            app.get("/helloworld").await.status(),
            200,
            "an unauthorized {method} set a fault"
        );
    }
    let (status, fault) = status_and_body(app.set_fault(body.clone()).await).await;
    assert_eq!(status, 200);
    assert_eq!(fault["active"], true);
    assert_eq!(app.get("/helloworld").await.status(), 500);
    assert_eq!(app.get_fault().await.status(), 200);
    assert_eq!(app.clear_fault().await.status(), 200);
    assert_eq!(app.get("/helloworld").await.status(), 200);
}

#[tokio::test]
async fn metrics_need_no_token() {
    let app = spawn_app().await;
    let response = app.client.get(format!("{}/metrics", app.admin)).send().await.unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn the_admin_listener_answers_only_to_its_own_address() {
    let app = spawn_app().await;
    let port = app.admin.rsplit(':').next().unwrap().to_owned();
    let request = |host: &str, path: &str| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nConnection: close\r\n\r\n"
        )
    };
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("LocalHost:{port}"),
    ] {
        for path in ["/metrics", "/fault"] {
            let answer = raw_request(&app.admin, request(&host, path).as_bytes()).await;
            assert!(
                answer.starts_with(b"HTTP/1.1 200"),
                "Host {host} {path}: {}",
                head(&answer)
            );
        }
    }
    for host in [
        format!("evil.example:{port}"),
        format!("127.0.0.1.evil.example:{port}"),
        format!("localhost.evil.example:{port}"),
        "127.0.0.1:1".to_owned(),
        "127.0.0.1".to_owned(),
        format!("[::1]:{port}"),
        format!("127.0.0.1:{port}@evil.example"),
        String::new(),
    ] {
        for path in ["/metrics", "/fault", "/nope"] {
            let answer = raw_request(&app.admin, request(&host, path).as_bytes()).await;
            assert!(
                answer.starts_with(b"HTTP/1.1 421"),
                "Host {host:?} {path}: {}",
                head(&answer)
            );
            let text = String::from_utf8_lossy(&answer);
            assert!(
                text.contains("application/json") && text.contains(r#""status":"error""#),
                "{text}"
            );
        }
    }
    // Without a Host header at all (HTTP/1.0).
    let answer = raw_request(&app.admin, b"GET /metrics HTTP/1.0\r\n\r\n").await;
    assert!(
        answer.starts_with(b"HTTP/1.0 421") || answer.starts_with(b"HTTP/1.1 421"),
        "{}",
        head(&answer)
    );
}

fn head(answer: &[u8]) -> String {
    String::from_utf8_lossy(&answer[..answer.len().min(200)]).into_owned()
}

#[test]
fn fault_injection_without_a_token_file_does_not_start() {
    let lookup = |vars: &'static [(&'static str, &'static str)]| {
        move |name: &str| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
    };
    let err = app::Config::from_lookup(lookup(&[("APP_FAULT_INJECTION_ENABLED", "true")])).unwrap_err();
    assert!(err.to_string().contains("APP_ADMIN_TOKEN_FILE"), "{err}");
    let err = app::Config::from_lookup(lookup(&[
        ("APP_FAULT_INJECTION_ENABLED", "true"),
        ("APP_ADMIN_TOKEN_FILE", "/nonexistent/admin-token"),
    ]))
    .unwrap_err();
    assert!(err.to_string().contains("APP_ADMIN_TOKEN_FILE"), "{err}");
    // Disabled, no token is needed.
    assert!(app::Config::from_lookup(lookup(&[("APP_FAULT_INJECTION_ENABLED", "false")])).is_ok());
}

#[tokio::test]
async fn an_application_with_fault_injection_and_no_token_is_not_built() {
    let mut config = test_config();
    assert!(!format!("{config:?}").contains(ADMIN_TOKEN), "Debug shows the token");
    // A configuration put together in code, with fault injection on but no token.
    config = app::Config {
        fault_injection_enabled: true,
        ..app::Config::from_lookup(|name| match name {
            "APP_ADMIN_TOKEN_FILE" | "APP_FAULT_INJECTION_ENABLED" => None,
            _ => std::env::var(name).ok(),
        })
        .unwrap()
    };
    config.listen_addr = "127.0.0.1:0".parse().unwrap();
    config.admin_addr = "127.0.0.1:0".parse().unwrap();
    let err = match Application::build(config).await {
        Ok(_) => panic!("built without an admin token"),
        Err(e) => e,
    };
    assert!(err.to_string().contains("APP_ADMIN_TOKEN_FILE"), "{err}");
}
