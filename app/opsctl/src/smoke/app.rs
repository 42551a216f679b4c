//! The app's routes, each tried the way the service issue specifies it.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use super::{Check, Failure, Smoke};
use crate::clients::{describe_transport, join, snippet};

/// Every route template the OpenAPI document must describe (the document need not describe itself).
const DOCUMENTED_ROUTES: [&str; 9] = [
    "/",
    "/helloworld",
    "/healthcheck",
    "/status",
    "/set_key/{key}/{value}",
    "/get_key/{key}",
    "/set",
    "/get/{key}",
    "/query",
];

/// An answer, read whole.
struct Answer {
    status: StatusCode,
    body: String,
}

impl Answer {
    fn expect(&self, status: StatusCode) -> Check {
        if self.status == status {
            Ok(())
        } else {
            Err(format!(
                "expected HTTP {status}, got HTTP {}: {}",
                self.status,
                snippet(self.body.as_bytes())
            ))
        }
    }

    fn json(&self) -> Check<Value> {
        serde_json::from_str(&self.body)
            .map_err(|e| format!("body is not JSON ({e}): {}", snippet(self.body.as_bytes())))
    }

    /// The status, and a JSON body equal to `expected`.
    fn expect_json(&self, status: StatusCode, expected: &Value) -> Check {
        self.expect(status)?;
        let body = self.json()?;
        if &body == expected {
            Ok(())
        } else {
            Err(format!("expected {expected}, got {body}"))
        }
    }

    /// The status, and the JSON error shape `{"status":"error","message":…}`.
    fn expect_json_error(&self, status: StatusCode) -> Check {
        self.expect(status)?;
        let body = self.json()?;
        if body["status"] == "error" && body["message"].is_string() {
            Ok(())
        } else {
            Err(format!("expected {{\"status\":\"error\",\"message\":…}}, got {body}"))
        }
    }
}

async fn call(smoke: &Smoke<'_>, method: Method, path: &str, json_body: Option<&str>) -> Check<Answer> {
    let url = join(&smoke.args.app, path);
    let mut request = smoke.client.request(method.clone(), &url);
    if let Some(body) = json_body {
        request = request
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
    }
    let response = request
        .send()
        .await
        .map_err(|e| format!("{method} {url}: {}", describe_transport(&e)))?;
    let status = response.status();
    let body = response
        .text()
        .await
        .map_err(|e| format!("{method} {url}: {}", describe_transport(&e)))?;
    Ok(Answer { status, body })
}

async fn get(smoke: &Smoke<'_>, path: &str) -> Check<Answer> {
    call(smoke, Method::GET, path, None).await
}

/// A key no earlier run has used.
fn fresh_key(what: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    format!("smoke-{what}-{now}-{:08x}", fastrand::u32(..))
}

/// Every route of the service issue, in the order a new user would try them.
pub async fn check_routes(smoke: &Smoke<'_>) -> Result<(), Failure> {
    smoke
        .once("app GET /healthcheck", async {
            let answer = get(smoke, "/healthcheck").await?;
            answer.expect(StatusCode::OK)?;
            if answer.body.trim() == "OK" {
                Ok(())
            } else {
                Err(format!("expected OK, got {:?}", answer.body))
            }
        })
        .await?;
    smoke
        .once("app GET /helloworld", async {
            get(smoke, "/helloworld")
                .await?
                .expect_json(StatusCode::OK, &json!({"msg": "Hello World"}))
        })
        .await?;
    // Readiness depends on Postgres and Redis, which may still be starting.
    smoke
        .wait("app GET /status (Postgres and Redis reachable)", || async {
            let answer = get(smoke, "/status").await?;
            let body = answer.json().unwrap_or(Value::Null);
            if answer.status == StatusCode::OK && body["status"] == "Up" {
                Ok(())
            } else {
                Err(format!(
                    "expected HTTP 200 with \"status\":\"Up\", got HTTP {}: {}",
                    answer.status,
                    snippet(answer.body.as_bytes())
                ))
            }
        })
        .await?;
    smoke
        .once("app GET / (home page)", async {
            let answer = get(smoke, "/").await?;
            answer.expect(StatusCode::OK)?;
            if answer.body.contains("Hello") && answer.body.contains("World!") {
                Ok(())
            } else {
                Err(format!(
                    "the page does not show Hello / World!: {}",
                    snippet(answer.body.as_bytes())
                ))
            }
        })
        .await?;

    let key = fresh_key("json");
    let value = json!({"smoke": true, "list": [1, "two", null]});
    smoke
        .once("app POST /set then GET /get/{key}", async {
            let body = json!({"key": key, "value": value}).to_string();
            call(smoke, Method::POST, "/set", Some(&body)).await?.expect_json(
                StatusCode::OK,
                &json!({"status": "success", "message": "Key-value pair is set successfully"}),
            )?;
            get(smoke, &format!("/get/{key}"))
                .await?
                .expect_json(StatusCode::OK, &json!({"key": key, "value": value}))
        })
        .await?;

    let key = fresh_key("text");
    smoke
        .once(
            "app GET /set_key/{key}/{value} then GET /get_key/{key} and /get/{key}",
            async {
                let answer = get(smoke, &format!("/set_key/{key}/bar")).await?;
                answer.expect(StatusCode::OK)?;
                let want = format!("{key} is set to bar");
                if answer.body.trim() != want {
                    return Err(format!("expected {want:?}, got {:?}", answer.body));
                }
                let answer = get(smoke, &format!("/get_key/{key}")).await?;
                answer.expect(StatusCode::OK)?;
                if answer.body.trim() != "bar" {
                    return Err(format!("/get_key: expected \"bar\", got {:?}", answer.body));
                }
                // One store behind every key route.
                get(smoke, &format!("/get/{key}"))
                    .await?
                    .expect_json(StatusCode::OK, &json!({"key": key, "value": "bar"}))
            },
        )
        .await?;

    let missing = fresh_key("missing");
    smoke
        .once("app missing key → 404", async {
            get(smoke, &format!("/get/{missing}")).await?.expect_json(
                StatusCode::NOT_FOUND,
                &json!({"status": "error", "message": "Key not found"}),
            )?;
            get(smoke, &format!("/get_key/{missing}"))
                .await?
                .expect(StatusCode::NOT_FOUND)
        })
        .await?;
    smoke
        .once("app GET /query", async {
            get(smoke, "/query?param=acx333x")
                .await?
                .expect_json(StatusCode::OK, &json!({"param": "acx333x", "count": 2}))?;
            get(smoke, "/query?param=abc")
                .await?
                .expect_json(StatusCode::OK, &json!({"param": "abc", "count": 0}))?;
            get(smoke, "/query")
                .await?
                .expect(StatusCode::BAD_REQUEST)
                .map_err(|e| format!("without param: {e}"))
        })
        .await?;
    smoke
        .once("app errors are JSON (bad body 400, unknown route 404)", async {
            call(smoke, Method::POST, "/set", Some("{\"key\": "))
                .await?
                .expect_json_error(StatusCode::BAD_REQUEST)?;
            get(smoke, &format!("/{}", fresh_key("no-such-route")))
                .await?
                .expect_json_error(StatusCode::NOT_FOUND)
        })
        .await?;
    smoke
        .once("app GET /openapi.json", async {
            let answer = get(smoke, "/openapi.json").await?;
            answer.expect(StatusCode::OK)?;
            let doc = answer.json()?;
            if !doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")) {
                return Err(format!("not an OpenAPI 3 document: openapi = {}", doc["openapi"]));
            }
            let undocumented: Vec<&str> = DOCUMENTED_ROUTES
                .iter()
                .copied()
                .filter(|route| doc["paths"].get(*route).is_none())
                .collect();
            if undocumented.is_empty() {
                Ok(())
            } else {
                Err(format!("routes missing from paths: {}", undocumented.join(", ")))
            }
        })
        .await?;
    Ok(())
}
