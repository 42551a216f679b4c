//! The webhook's trust boundary: only a POST carrying the bearer token Alertmanager sends (its webhook
//! `http_config.authorization.credentials_file`) may store a notification or feed the heartbeat. Refusals are
//! counted by reason and logged at most once per interval, so a flood of them cannot flood the log either.
//! Reads (the page, the JSON API, metrics, runbooks) stay open: the inbox listens on loopback.

use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap};

use crate::limits::REJECTION_LOG_INTERVAL;
use crate::webhook::Receiver;

/// The bearer token webhook POSTs must carry. `Debug` prints a placeholder, so a config can be printed; the empty
/// default accepts no POST at all (an inbox built without a token is closed, not open).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct WebhookToken(String);

impl WebhookToken {
    /// The shortest token accepted: anything shorter is a placeholder, not a secret.
    pub const MIN_LEN: usize = 16;

    /// A token from its text; it must be at least [`Self::MIN_LEN`] visible ASCII characters (what a header can
    /// carry unchanged).
    pub fn new(token: impl Into<String>) -> Result<Self, String> {
        let token = token.into();
        if token.is_empty() {
            return Err("the token is empty".to_string());
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("the token holds a character other than visible ASCII".to_string());
        }
        if token.len() < Self::MIN_LEN {
            return Err(format!(
                "the token is {} characters long, at least {} are needed",
                token.len(),
                Self::MIN_LEN
            ));
        }
        Ok(WebhookToken(token))
    }

    /// Reads a token file: one token, with the newline after it (and any whitespace around it) ignored.
    pub fn read(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read it: {e}"))?;
        Self::new(text.trim())
    }

    /// Whether `presented` is this token, in time that depends on the lengths only, never on where they differ.
    /// The empty default matches nothing.
    pub fn matches(&self, presented: &[u8]) -> bool {
        !self.0.is_empty() && constant_time_eq(self.0.as_bytes(), presented)
    }
}

impl fmt::Debug for WebhookToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() {
            "WebhookToken(none)"
        } else {
            "WebhookToken(redacted)"
        })
    }
}

/// Compares every byte pair whatever the earlier ones were, so the time taken does not tell an attacker how long
/// a prefix of the token they have guessed; only the lengths can show.
fn constant_time_eq(expected: &[u8], presented: &[u8]) -> bool {
    let mut diff = u8::from(expected.len() != presented.len());
    for (i, e) in expected.iter().enumerate() {
        // Wrap around the presented bytes so the loop always runs over the whole expected token.
        let p = presented.get(i % presented.len().max(1)).copied().unwrap_or(0);
        diff |= e ^ p;
    }
    std::hint::black_box(diff) == 0
}

/// Why a webhook POST was refused: the `reason` label of `inbox_webhook_rejected_total`, a fixed set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rejection {
    /// 401: no `Authorization: Bearer …` header.
    MissingToken,
    /// 401: a bearer token that is not the inbox's.
    WrongToken,
    /// 413: a body over `limits::MAX_BODY_BYTES`.
    TooLarge,
}

impl Rejection {
    /// Every reason, in the order metrics list them.
    pub const ALL: [Rejection; 3] = [Rejection::MissingToken, Rejection::WrongToken, Rejection::TooLarge];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::MissingToken => "missing_token",
            Rejection::WrongToken => "wrong_token",
            Rejection::TooLarge => "too_large",
        }
    }

    fn index(self) -> usize {
        match self {
            Rejection::MissingToken => 0,
            Rejection::WrongToken => 1,
            Rejection::TooLarge => 2,
        }
    }
}

/// The token check, the refusal counters and the log's rate limit, shared by every webhook request.
#[derive(Debug)]
pub struct WebhookGuard {
    token: WebhookToken,
    rejected: [AtomicU64; 3],
    log: RateLimit,
}

impl WebhookGuard {
    pub fn new(token: WebhookToken) -> Self {
        WebhookGuard {
            token,
            rejected: Default::default(),
            log: RateLimit::new(REJECTION_LOG_INTERVAL),
        }
    }

    /// Checks the request's `Authorization` header; the scheme is case-insensitive (RFC 9110), the token is not.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), Rejection> {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Err(Rejection::MissingToken);
        };
        let value = value.as_bytes().trim_ascii();
        // `Bearer` alone (the server trims the space after it) is a bearer scheme with an empty, wrong token.
        let (scheme, presented) = match value.iter().position(|b| *b == b' ') {
            Some(space) => (&value[..space], value[space..].trim_ascii()),
            None => (value, &b""[..]),
        };
        if !scheme.eq_ignore_ascii_case(b"bearer") {
            return Err(Rejection::MissingToken);
        }
        if self.token.matches(presented) {
            Ok(())
        } else {
            Err(Rejection::WrongToken)
        }
    }

    /// Counts a refusal and logs it unless one was logged within the interval. Nothing the client sent is
    /// logged but the receiver, and only when it is one of ours.
    pub fn refused(&self, reason: Rejection, receiver: Option<Receiver>) {
        self.rejected[reason.index()].fetch_add(1, Ordering::Relaxed);
        if let Some(unlogged) = self.log.allow(Instant::now()) {
            tracing::warn!(
                reason = reason.as_str(),
                receiver = receiver.map_or("unknown", Receiver::as_str),
                refused_unlogged_before = unlogged,
                interval_seconds = REJECTION_LOG_INTERVAL.as_secs(),
                "refused a webhook POST (one line per interval at most; inbox_webhook_rejected_total counts them all)"
            );
        }
    }

    /// Refusals so far, by reason, every reason present.
    pub fn rejected(&self) -> Vec<(Rejection, u64)> {
        Rejection::ALL
            .iter()
            .map(|r| (*r, self.rejected[r.index()].load(Ordering::Relaxed)))
            .collect()
    }
}

/// Lets one event through per interval and counts the ones it held back in between.
#[derive(Debug)]
struct RateLimit {
    interval: Duration,
    state: Mutex<(Option<Instant>, u64)>,
}

impl RateLimit {
    fn new(interval: Duration) -> Self {
        RateLimit {
            interval,
            state: Mutex::new((None, 0)),
        }
    }

    /// `Some(held back since the last one let through)` when this event may be logged.
    fn allow(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (last, held) = &mut *state;
        if last.is_some_and(|at| now.saturating_duration_since(at) < self.interval) {
            *held += 1;
            return None;
        }
        *last = Some(now);
        Some(std::mem::take(held))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const TOKEN: &str = "0123456789abcdef-token";

    fn guard() -> WebhookGuard {
        WebhookGuard::new(WebhookToken::new(TOKEN).unwrap())
    }

    fn with_authorization(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn only_the_bearer_token_itself_passes() {
        let guard = guard();
        assert_eq!(guard.check(&with_authorization(&format!("Bearer {TOKEN}"))), Ok(()));
        assert_eq!(guard.check(&with_authorization(&format!("BEARER  {TOKEN} "))), Ok(()));
        assert_eq!(guard.check(&HeaderMap::new()), Err(Rejection::MissingToken));
        assert_eq!(guard.check(&with_authorization(TOKEN)), Err(Rejection::MissingToken));
        assert_eq!(
            guard.check(&with_authorization(&format!("Basic {TOKEN}"))),
            Err(Rejection::MissingToken)
        );
        assert_eq!(guard.check(&with_authorization("Bearer")), Err(Rejection::WrongToken));
        for wrong in [&TOKEN[1..], &format!("{TOKEN}0"), &TOKEN.to_uppercase(), ""] {
            assert_eq!(
                guard.check(&with_authorization(&format!("Bearer {wrong}"))),
                Err(Rejection::WrongToken),
                "{wrong}"
            );
        }
    }

    #[test]
    fn the_default_token_matches_nothing() {
        let guard = WebhookGuard::new(WebhookToken::default());
        assert_eq!(guard.check(&with_authorization("Bearer")), Err(Rejection::WrongToken));
        assert!(!WebhookToken::default().matches(b""));
    }

    #[test]
    fn tokens_must_look_like_secrets_and_never_print() {
        assert!(WebhookToken::new("short").unwrap_err().contains("at least 16"));
        assert!(WebhookToken::new("with a space in it, long").is_err());
        assert!(WebhookToken::new("").is_err());
        let token = WebhookToken::new(TOKEN).unwrap();
        assert_eq!(format!("{token:?}"), "WebhookToken(redacted)");
    }

    #[test]
    fn a_token_file_is_trimmed_of_its_newline() {
        let path = std::env::temp_dir().join(format!("inbox-token-{}", std::process::id()));
        std::fs::write(&path, format!("{TOKEN}\n")).unwrap();
        assert!(WebhookToken::read(&path).unwrap().matches(TOKEN.as_bytes()));
        std::fs::remove_file(&path).unwrap();
        assert!(WebhookToken::read(&path).unwrap_err().contains("cannot read"));
    }

    #[test]
    fn comparison_covers_every_length() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"abc", b"abcabc"));
        assert!(!constant_time_eq(b"abc", b""));
    }

    #[test]
    fn the_rate_limit_lets_one_event_through_per_interval_and_counts_the_rest() {
        let limit = RateLimit::new(Duration::from_secs(60));
        let start = Instant::now();
        assert_eq!(limit.allow(start), Some(0));
        assert_eq!(limit.allow(start + Duration::from_secs(1)), None);
        assert_eq!(limit.allow(start + Duration::from_secs(59)), None);
        assert_eq!(limit.allow(start + Duration::from_secs(60)), Some(2));
        assert_eq!(limit.allow(start + Duration::from_secs(61)), None);
    }

    #[test]
    fn refusals_are_counted_by_reason() {
        let guard = guard();
        guard.refused(Rejection::WrongToken, Some(Receiver::Pager));
        guard.refused(Rejection::WrongToken, None);
        guard.refused(Rejection::TooLarge, None);
        assert_eq!(
            guard.rejected(),
            vec![
                (Rejection::MissingToken, 0),
                (Rejection::WrongToken, 2),
                (Rejection::TooLarge, 1)
            ]
        );
    }
}
