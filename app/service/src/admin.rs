//! The admin listener: `/metrics` for Prometheus and `/fault` for drills. Kept off the API listener so that
//! neither is exposed where the API is, and so that scrapes do not count as API traffic.
//!
//! Loopback is not a security boundary: every local user, and every web page a local browser shows, can reach
//! it. So:
//! - **`/fault` needs the admin token** (`Authorization: Bearer <token>`, all methods; the token comes from
//!   `APP_ADMIN_TOKEN_FILE`, compared in constant time). Without a configured token it answers 403.
//! - **Only the listener's own address is accepted as `Host`** (421 otherwise), on every path: a page that
//!   rebinds its own DNS name to 127.0.0.1 still sends that name, and is refused. Accepted: the bound IP literal
//!   with the bound port; `localhost` with that port when bound to loopback; any IP literal with that port when
//!   bound to all addresses (a rebinding attack cannot send an IP literal); and the `host:port` entries of
//!   `APP_ADMIN_ALLOWED_HOSTS`, for a listener reached by name (compose's `app:8081`).
//! - **`/metrics` stays open**: Prometheus scrapes it without credentials, and it holds counts, not data.

use std::fmt::Write;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::middleware::{from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use crate::config::AdminToken;
use crate::error::{self, ApiError};
use crate::fault::{FaultInjector, FaultRequest, FaultStatus};
use crate::store::Store;
use crate::telemetry::metrics::{spec_of, write_header, Metrics, DB_CLIENT_CONNECTION_COUNT};
use crate::telemetry::process::ProcessCollector;

/// What the admin handlers share.
#[derive(Clone)]
pub struct AdminState {
    /// The recorder to render.
    pub metrics: Metrics,
    /// For the pool gauges.
    pub store: Arc<Store>,
    /// Fault injection.
    pub faults: FaultInjector,
    /// Process metrics.
    pub process: Arc<ProcessCollector>,
}

/// Who may use the admin listener: the `Host` values it answers to and the token `/fault` needs.
pub struct AdminAccess {
    /// The bound address (port 0 resolved).
    bound: SocketAddr,
    /// `APP_ADMIN_ALLOWED_HOSTS`, lowercased.
    extra_hosts: Vec<String>,
    token: Option<AdminToken>,
}

impl AdminAccess {
    /// The rules for a listener bound to `bound`.
    pub fn new(bound: SocketAddr, extra_hosts: Vec<String>, token: Option<AdminToken>) -> Self {
        AdminAccess {
            bound,
            extra_hosts: extra_hosts.into_iter().map(|h| h.to_ascii_lowercase()).collect(),
            token,
        }
    }

    /// Whether a request with this `Host` header is meant for this listener (see the module documentation).
    pub fn allows_host(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        if self.extra_hosts.contains(&host) {
            return true;
        }
        let Some((name, port)) = split_host_port(&host) else {
            return false;
        };
        if port != self.bound.port() {
            return false;
        }
        let ip = self.bound.ip();
        if name == "localhost" {
            return ip.is_loopback() || ip.is_unspecified();
        }
        match name.parse::<IpAddr>() {
            Ok(named) if ip.is_unspecified() => ip.is_ipv6() || named.is_ipv4(),
            Ok(named) => named == ip,
            Err(_) => false,
        }
    }

    /// The address to name in a refusal.
    fn own_address(&self) -> String {
        match self.bound.ip() {
            ip if ip.is_unspecified() => format!("127.0.0.1:{}", self.bound.port()),
            _ => self.bound.to_string(),
        }
    }
}

/// `host` and its port (80 when absent) from a `Host` value; `None` when it is not of that form.
fn split_host_port(host: &str) -> Option<(&str, u16)> {
    let port = |p: &str| {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            None
        } else {
            p.parse::<u16>().ok()
        }
    };
    if let Some(rest) = host.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        let port = match after {
            "" => 80,
            _ => port(after.strip_prefix(':')?)?,
        };
        // Only an IPv6 literal goes in brackets.
        return inside.parse::<std::net::Ipv6Addr>().is_ok().then_some((inside, port));
    }
    let (name, port) = match host.rsplit_once(':') {
        Some((name, p)) => (name, port(p)?),
        None => (host, 80),
    };
    (!name.is_empty() && !name.contains(':')).then_some((name, port))
}

/// The admin router: `/metrics`, and `/fault` behind the token; every path behind the `Host` check.
pub fn admin_router(state: AdminState, access: AdminAccess, max_body_bytes: usize) -> Router {
    let access = Arc::new(access);
    let fault = get(get_fault)
        .post(set_fault)
        .delete(clear_fault)
        .route_layer(from_fn_with_state(access.clone(), require_token));
    Router::new()
        .route("/metrics", get(metrics))
        .route("/fault", fault)
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(from_fn_with_state(access, check_host))
        .with_state(state)
}

/// Refuses requests whose `Host` is not this listener (421), and marks every answer `nosniff`.
async fn check_host(State(access): State<Arc<AdminAccess>>, req: Request, next: Next) -> Response {
    let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok());
    let mut response = if host.is_some_and(|h| access.allows_host(h)) {
        next.run(req).await
    } else {
        ApiError::MisdirectedRequest(format!(
            "the Host header must name this admin listener, such as {}",
            access.own_address()
        ))
        .into_response()
    };
    response
        .headers_mut()
        .insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

/// Lets a `/fault` request through only with the admin token: 401 without it or with another, 403 when no token
/// is configured (then fault injection is disabled too: the configuration refuses one without the other).
async fn require_token(State(access): State<Arc<AdminAccess>>, req: Request, next: Next) -> Response {
    let Some(token) = &access.token else {
        return ApiError::Forbidden(
            "fault injection is disabled; start the service with APP_FAULT_INJECTION_ENABLED=true and \
             APP_ADMIN_TOKEN_FILE"
                .to_owned(),
        )
        .into_response();
    };
    let (reason, message) = match bearer_token(req.headers()) {
        Some(candidate) if token.matches(candidate) => return next.run(req).await,
        Some(_) => ("wrong token", "invalid bearer token"),
        None => (
            "no token",
            "missing bearer token: send Authorization: Bearer <the token in APP_ADMIN_TOKEN_FILE>",
        ),
    };
    // Never the candidate itself: a near miss would be most of the token.
    tracing::warn!(method = %req.method(), reason, "refused a /fault request");
    ApiError::Unauthorized(message.to_owned()).into_response()
}

/// The credentials of `Authorization: Bearer <token>` (scheme case-insensitive), if that is what was sent.
fn bearer_token(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, token) = value.split_at(value.iter().position(|b| *b == b' ')?);
    scheme.eq_ignore_ascii_case(b"bearer").then(|| token.trim_ascii())
}

/// `GET /metrics`: the recorder's series, with the scrape-time ones (pools, faults, process) refreshed first.
async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    // Refreshes the fault gauges, so an expired fault reads 0 without a timer.
    state.faults.status();
    let pools = state.store.pool_stats();
    for pool in &pools {
        state.metrics.set_pool_max(pool.pool, pool.max);
    }
    let mut body = state.metrics.render();
    write_header(&mut body, spec_of(DB_CLIENT_CONNECTION_COUNT));
    for pool in &pools {
        for (label, value) in [("idle", pool.idle), ("used", pool.used)] {
            let _ = writeln!(
                body,
                "{DB_CLIENT_CONNECTION_COUNT}{{pool_name=\"{}\",state=\"{label}\"}} {value}",
                pool.pool.as_str()
            );
        }
    }
    state.process.render(&mut body);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        body,
    )
}

/// `GET /fault`: the current fault.
async fn get_fault(State(state): State<AdminState>) -> Json<FaultStatus> {
    Json(state.faults.status())
}

/// `POST /fault` with `{"error_ratio": 0.5, "latency_ms": 500, "duration_seconds": 60}`: replaces the fault.
async fn set_fault(
    State(state): State<AdminState>,
    body: Result<Json<FaultRequest>, JsonRejection>,
) -> Result<Json<FaultStatus>, ApiError> {
    state.faults.ensure_enabled()?;
    let Json(request) = body?;
    Ok(Json(state.faults.set(&request)?))
}

/// `DELETE /fault`: ends the fault.
async fn clear_fault(State(state): State<AdminState>) -> Result<Json<FaultStatus>, ApiError> {
    Ok(Json(state.faults.clear()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(bound: &str, extra: &[&str]) -> AdminAccess {
        AdminAccess::new(
            bound.parse().unwrap(),
            extra.iter().map(|h| h.to_string()).collect(),
            None,
        )
    }

    #[test]
    fn a_loopback_listener_answers_to_its_address_and_localhost() {
        let a = access("127.0.0.1:8081", &[]);
        for host in ["127.0.0.1:8081", "localhost:8081", "LOCALHOST:8081"] {
            assert!(a.allows_host(host), "{host}");
        }
        for host in [
            "evil.example:8081",
            "localhost.evil.example:8081",
            "127.0.0.1.nip.io:8081",
            "127.0.0.1:8082",
            "127.0.0.1",
            "127.0.0.2:8081",
            "[::1]:8081",
            "127.0.0.1:+8081",
            "127.0.0.1:",
            ":8081",
            "",
        ] {
            assert!(!a.allows_host(host), "{host}");
        }
        let v6 = access("[::1]:8081", &[]);
        assert!(v6.allows_host("[::1]:8081") && v6.allows_host("localhost:8081"));
        assert!(!v6.allows_host("127.0.0.1:8081") && !v6.allows_host("::1:8081"));
    }

    #[test]
    fn a_listener_on_all_addresses_answers_to_ip_literals_and_listed_names_only() {
        let a = access("0.0.0.0:8081", &["App:8081"]);
        for host in ["127.0.0.1:8081", "10.1.2.3:8081", "localhost:8081", "app:8081"] {
            assert!(a.allows_host(host), "{host}");
        }
        for host in ["evil.example:8081", "app:8082", "prometheus:8081", "[::1]:8081"] {
            assert!(!a.allows_host(host), "{host}");
        }
        assert!(access("[::]:8081", &[]).allows_host("[fd00::1]:8081"));
        assert!(access("10.0.0.5:80", &[]).allows_host("10.0.0.5"));
        assert!(!access("10.0.0.5:8081", &[]).allows_host("localhost:8081"));
    }

    #[test]
    fn only_a_bearer_authorization_yields_a_token() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, value.parse().unwrap());
            bearer_token(&headers).map(|t| String::from_utf8(t.to_vec()).unwrap())
        };
        assert_eq!(with("Bearer abc").as_deref(), Some("abc"));
        assert_eq!(with("bearer  abc ").as_deref(), Some("abc"));
        assert_eq!(with("Basic YWRtaW46eA=="), None);
        assert_eq!(with("Bearer"), None);
        assert_eq!(bearer_token(&HeaderMap::new()), None);
    }
}
