//! Fault injection for drills: make a fraction of API responses 500 and/or delay them, until an expiry.
//!
//! Controlled from the admin listener only (`GET`/`POST`/`DELETE /fault`), and only when
//! `APP_FAULT_INJECTION_ENABLED=true`. It applies to every API route except `/healthcheck` and `/status`, the two
//! routes the SLOs exclude, so that liveness and readiness keep telling the truth during a drill. Errors are
//! spread evenly rather than at random: with `error_ratio` 0.25 exactly one request in four fails, so a drill
//! burns error budget at a predictable rate.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::telemetry::metrics::Metrics;

/// Longest injectable latency.
pub const MAX_LATENCY: Duration = Duration::from_secs(30);
/// Longest a fault may stay active.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);
/// How long a fault stays active when the request does not say.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(300);

/// Body of `POST /fault`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRequest {
    /// Fraction of responses that become 500, from 0 to 1 (default 0).
    #[serde(default)]
    pub error_ratio: f64,
    /// Delay added before each response, in milliseconds (default 0, at most 30000).
    #[serde(default)]
    pub latency_ms: u64,
    /// Seconds until the fault switches itself off (default 300, at most 86400).
    pub duration_seconds: Option<u64>,
}

/// What `GET /fault` (and the other two) answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FaultStatus {
    /// Whether the configuration allows fault injection.
    pub enabled: bool,
    /// Whether a fault is active now.
    pub active: bool,
    /// Fraction of API responses turned into 500 (0 when inactive).
    pub error_ratio: f64,
    /// Added latency in milliseconds (0 when inactive).
    pub latency_ms: u64,
    /// Seconds until the fault expires (0 when inactive).
    pub expires_in_seconds: f64,
}

#[derive(Debug, Clone, Copy)]
struct Fault {
    error_ratio: f64,
    latency: Duration,
    expires_at: Instant,
}

/// The current fault, shared by the admin handlers and the API middleware.
#[derive(Clone)]
pub struct FaultInjector {
    inner: Arc<Inner>,
}

struct Inner {
    enabled: bool,
    fault: Mutex<Option<Fault>>,
    /// Requests seen while a fault was active: spreads the errors evenly.
    seen: AtomicU64,
    metrics: Metrics,
}

impl FaultInjector {
    /// A disabled injector never injects and refuses to be set.
    pub fn new(enabled: bool, metrics: Metrics) -> Self {
        FaultInjector {
            inner: Arc::new(Inner {
                enabled,
                fault: Mutex::new(None),
                seen: AtomicU64::new(0),
                metrics,
            }),
        }
    }

    /// Whether the configuration allows fault injection.
    pub fn enabled(&self) -> bool {
        self.inner.enabled
    }

    /// Validates and activates a fault, replacing any active one.
    pub fn set(&self, request: &FaultRequest) -> Result<FaultStatus, ApiError> {
        self.ensure_enabled()?;
        if !(0.0..=1.0).contains(&request.error_ratio) {
            return Err(ApiError::BadRequest("error_ratio must be from 0 to 1".to_owned()));
        }
        let latency = Duration::from_millis(request.latency_ms);
        if latency > MAX_LATENCY {
            return Err(ApiError::BadRequest(format!(
                "latency_ms must be at most {}",
                MAX_LATENCY.as_millis()
            )));
        }
        if request.error_ratio == 0.0 && latency.is_zero() {
            return Err(ApiError::BadRequest(
                "set error_ratio above 0, latency_ms above 0, or both".to_owned(),
            ));
        }
        let duration = request.duration_seconds.map_or(DEFAULT_DURATION, Duration::from_secs);
        if duration.is_zero() || duration > MAX_DURATION {
            return Err(ApiError::BadRequest(format!(
                "duration_seconds must be from 1 to {}",
                MAX_DURATION.as_secs()
            )));
        }
        let fault = Fault {
            error_ratio: request.error_ratio,
            latency,
            expires_at: Instant::now() + duration,
        };
        *self.lock() = Some(fault);
        self.inner.seen.store(0, Ordering::Relaxed);
        tracing::warn!(
            error_ratio = request.error_ratio,
            latency_ms = request.latency_ms,
            duration_seconds = duration.as_secs(),
            "fault injection activated"
        );
        Ok(self.status())
    }

    /// Deactivates any fault.
    pub fn clear(&self) -> Result<FaultStatus, ApiError> {
        self.ensure_enabled()?;
        if self.lock().take().is_some() {
            tracing::warn!("fault injection cleared");
        }
        Ok(self.status())
    }

    /// The current state; also refreshes the `app_fault_injection_active` gauges (an expired fault reads as 0).
    pub fn status(&self) -> FaultStatus {
        let now = Instant::now();
        let active = self.active(now);
        self.inner.metrics.set_fault_active(
            active.is_some_and(|f| f.error_ratio > 0.0),
            active.is_some_and(|f| !f.latency.is_zero()),
        );
        FaultStatus {
            enabled: self.inner.enabled,
            active: active.is_some(),
            error_ratio: active.map_or(0.0, |f| f.error_ratio),
            latency_ms: active.map_or(0, |f| f.latency.as_millis() as u64),
            expires_in_seconds: active.map_or(0.0, |f| round_ms(f.expires_at.saturating_duration_since(now))),
        }
    }

    /// The active fault, if any; forgets an expired one.
    fn active(&self, now: Instant) -> Option<Fault> {
        let mut fault = self.lock();
        if fault.is_some_and(|f| f.expires_at <= now) {
            *fault = None;
            tracing::warn!("fault injection expired");
        }
        *fault
    }

    /// Whether the next request should fail: request n fails when floor(n·ratio) steps up.
    fn next_fails(&self, ratio: f64) -> bool {
        let n = self.inner.seen.fetch_add(1, Ordering::Relaxed) as f64;
        ((n + 1.0) * ratio).floor() > (n * ratio).floor()
    }

    /// 403 unless the configuration allows fault injection.
    pub fn ensure_enabled(&self) -> Result<(), ApiError> {
        if self.inner.enabled {
            Ok(())
        } else {
            Err(ApiError::Forbidden(
                "fault injection is disabled; start the service with APP_FAULT_INJECTION_ENABLED=true and \
                 APP_ADMIN_TOKEN_FILE"
                    .to_owned(),
            ))
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Fault>> {
        self.inner.fault.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn round_ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

/// Middleware on the API routes that fault injection covers: delays and/or fails the request while a fault is
/// active. Costs one uncontended lock per request otherwise.
pub async fn inject(State(faults): State<FaultInjector>, req: Request, next: Next) -> Response {
    if !faults.inner.enabled {
        return next.run(req).await;
    }
    if let Some(fault) = faults.active(Instant::now()) {
        if !fault.latency.is_zero() {
            tokio::time::sleep(fault.latency).await;
        }
        if fault.error_ratio > 0.0 && faults.next_fails(fault.error_ratio) {
            return ApiError::InjectedFault.into_response();
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn injector() -> FaultInjector {
        FaultInjector::new(true, Metrics::new(true, "0", "r"))
    }

    fn request(error_ratio: f64, latency_ms: u64) -> FaultRequest {
        FaultRequest {
            error_ratio,
            latency_ms,
            duration_seconds: Some(60),
        }
    }

    #[test]
    fn errors_are_spread_evenly_at_the_requested_ratio() {
        let faults = injector();
        faults.set(&request(0.25, 0)).unwrap();
        let failures: Vec<bool> = (0..8).map(|_| faults.next_fails(0.25)).collect();
        assert_eq!(failures.iter().filter(|f| **f).count(), 2);
        assert_eq!(failures, [false, false, false, true, false, false, false, true]);
        assert!((0..10).all(|_| faults.next_fails(1.0)));
    }

    #[test]
    fn out_of_range_requests_are_refused() {
        let faults = injector();
        assert!(faults.set(&request(1.5, 0)).is_err());
        assert!(faults.set(&request(0.0, 0)).is_err());
        assert!(faults.set(&request(0.0, 60_000)).is_err());
        assert!(faults
            .set(&FaultRequest {
                error_ratio: 0.5,
                latency_ms: 0,
                duration_seconds: Some(0)
            })
            .is_err());
        assert!(!faults.status().active);
    }

    #[test]
    fn a_disabled_injector_refuses_to_be_set() {
        let faults = FaultInjector::new(false, Metrics::new(true, "0", "r"));
        let err = faults.set(&request(0.5, 0)).unwrap_err();
        assert_eq!(err.status(), axum::http::StatusCode::FORBIDDEN);
        assert!(!faults.status().enabled);
    }

    #[test]
    fn status_reports_and_clear_removes_the_fault() {
        let faults = injector();
        let status = faults.set(&request(0.5, 200)).unwrap();
        assert!(status.active);
        assert_eq!(status.latency_ms, 200);
        assert!(status.expires_in_seconds > 59.0);
        assert!(!faults.clear().unwrap().active);
    }

    #[test]
    fn an_expired_fault_is_inactive() {
        let faults = injector();
        faults.set(&request(1.0, 0)).unwrap();
        let expired = faults.lock().map(|f| Fault {
            expires_at: Instant::now() - Duration::from_millis(1),
            ..f
        });
        *faults.lock() = expired;
        assert!(!faults.status().active);
    }
}
