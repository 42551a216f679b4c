//! `ceiling`: the upper bound `make bench` measures the app against. A bare axum server with no middleware (no
//! request id, no log line, no metrics, no fault injection, no body limit) answering the same bodies as the app:
//!
//! - `GET /helloworld`: `{"msg":"Hello World"}`, as the app's handler.
//! - `GET /get/{key}`: exactly one Redis `GET` of the app's cache entry, `app:kv:<epoch>:<key>`, through the same
//!   pool type the app uses (bb8 with bb8-redis), answered as `{"key":…,"value":…}` or 404
//!   `{"status":"error","message":"Key not found"}`. There is no Postgres fallback: the ceiling only measures the
//!   cache-hit path.
//!
//! Settings come from the environment: `CEILING_ADDR` (default `127.0.0.1:8090`), `CEILING_REDIS_URL` (default
//! `redis://127.0.0.1:6379`; with the secured stack `redis://app:<password>@…`, the app's own user) and
//! `CEILING_CACHE_EPOCH` (required), the app's cache epoch, the one row of Postgres' `kv_cache_epoch`. The bench
//! reads it after the app has filled the entry and passes it in, so that the ceiling links no Postgres client and
//! its hit path stays one `GET`; it is fixed for the ceiling's life (an epoch bump by the app would leave it reading
//! the old namespace, whose entries stay until their TTL). Bench-only: nothing deploys it.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bb8::Pool;
use bb8_redis::redis;
use bb8_redis::RedisConnectionManager;
use serde::Serialize;
use serde_json::Value;

/// Where the app keeps a key's cache entry, `"<version>:<json>"`, before the epoch (see `app/service/src/store/cache.rs`).
/// The bench fills the entries through the app, so both servers read the same bytes.
const KEY_PREFIX: &str = "app:kv:";

#[derive(Serialize)]
struct Hello {
    msg: &'static str,
}

#[derive(Serialize)]
struct KeyValue {
    key: String,
    value: Value,
}

#[derive(Serialize)]
struct Message {
    status: &'static str,
    message: &'static str,
}

type RedisPool = Pool<RedisConnectionManager>;

/// What a request needs: the pool, and the entries' prefix with the epoch in it, built once at startup so that a
/// hit formats its key as before the epoch existed. The prefix is a leaked `&'static str`, so cloning the state per
/// request costs what cloning the pool alone did.
#[derive(Clone)]
struct Ceiling {
    pool: RedisPool,
    /// `app:kv:<epoch>:`.
    prefix: &'static str,
}

async fn hello_world() -> Json<Hello> {
    Json(Hello { msg: "Hello World" })
}

async fn get_key(State(state): State<Ceiling>, Path(key): Path<String>) -> Response {
    let raw: Result<Option<String>, String> = async {
        let mut conn = state.pool.get().await.map_err(|e| e.to_string())?;
        redis::Cmd::get(format!("{}{key}", state.prefix))
            .query_async(&mut *conn)
            .await
            .map_err(|e| e.to_string())
    }
    .await;
    let error = |status: StatusCode, message: &'static str| {
        (
            status,
            Json(Message {
                status: "error",
                message,
            }),
        )
            .into_response()
    };
    match raw {
        Ok(Some(raw)) => match raw
            .split_once(':')
            .and_then(|(_, json)| serde_json::from_str(json).ok())
        {
            Some(value) => Json(KeyValue { key, value }).into_response(),
            None => error(StatusCode::INTERNAL_SERVER_ERROR, "malformed cache entry"),
        },
        Ok(None) => error(StatusCode::NOT_FOUND, "Key not found"),
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "redis unavailable"),
    }
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

#[tokio::main]
async fn main() {
    let addr: SocketAddr = env_or("CEILING_ADDR", "127.0.0.1:8090")
        .parse()
        .expect("CEILING_ADDR must be an IP address and port");
    let epoch: i64 = std::env::var("CEILING_CACHE_EPOCH")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .expect("CEILING_CACHE_EPOCH must be the app's cache epoch, a whole number (SELECT epoch FROM kv_cache_epoch)");
    let prefix: &'static str = Box::leak(format!("{KEY_PREFIX}{epoch}:").into_boxed_str());
    let manager = RedisConnectionManager::new(env_or("CEILING_REDIS_URL", "redis://127.0.0.1:6379"))
        .expect("CEILING_REDIS_URL must be a redis:// URL");
    // The app's pool size and timeout defaults. No PING on checkout: the ceiling is "one Redis GET per request".
    let pool = Pool::builder()
        .max_size(8)
        .connection_timeout(Duration::from_millis(250))
        .test_on_check_out(false)
        .build_unchecked(manager);
    let router = Router::new()
        .route("/helloworld", get(hello_world))
        .route("/get/{key}", get(get_key))
        .with_state(Ceiling { pool, prefix });
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .expect("cannot bind CEILING_ADDR");
    println!(
        "ceiling listening on {}, reading {prefix}<key>",
        listener.local_addr().expect("bound")
    );
    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .expect("server failed");
}
