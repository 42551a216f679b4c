//! The SLO drill: bad requests until the page legs' 1h ratios cross, then healthy traffic to clear them; and the
//! healthy traffic ([`Dilution`]) that also clears pages earlier faults left standing.

use std::time::Duration;

use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::sleep;

use super::app::set_fault;
use super::{background_load, Handle, Phase};
use crate::gameday::error::Error;
use crate::gameday::proofs::Proof;
use crate::gameday::stack::{now_ms, Ctx};
use crate::load::{self, LoadArgs};

/// Waits until `expr` (one series) is above `threshold`, for at most `limit`.
async fn wait_above(ctx: &Ctx, expr: &str, threshold: f64, limit: Duration) -> Result<f64, Error> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Ok(samples) = ctx.prometheus.query(expr).await {
            if let Some(v) = samples.first().map(|s| s.number()) {
                if v > threshold {
                    return Ok(v);
                }
            }
        }
        if tokio::time::Instant::now() > deadline {
            return Err(Error::Threshold {
                expr: expr.to_string(),
                threshold,
                limit,
            });
        }
        sleep(Duration::from_secs(2)).await;
    }
}

/// The SLOs the drills spend (monitoring/slos.yml, embedded by the stack crate): `latency` and `availability`.
fn slo(name: &str) -> &'static ::stack::slo::Slo {
    ::stack::slo::spec()
        .slo(name)
        .unwrap_or_else(|| panic!("monitoring/slos.yml declares no `{name}` SLO"))
}

/// The page's two legs (monitoring/slos.yml): the fast one (1h/5m at 14.4x), which the SLO drill crosses, and the
/// slow one (6h/30m at 6x), whose short window holds the page once a fault is over.
fn page_legs() -> (&'static ::stack::slo::Pair, &'static ::stack::slo::Pair) {
    let page = ::stack::slo::spec()
        .tier("critical")
        .expect("monitoring/slos.yml declares a critical tier");
    (&page.pairs[0], page.pairs.last().expect("a tier has a pair"))
}

/// API requests over a window, and the slow (over 0.25 s) and failed (5xx) ones among them.
#[derive(Debug, Clone, Copy)]
struct SloWindow {
    requests: f64,
    slow: f64,
    errors: f64,
}

async fn slo_window(ctx: &Ctx, window: &str) -> Result<SloWindow, Error> {
    let sum = |selector: String| {
        let expr = format!("sum(increase({selector}[{window}]))");
        async move {
            let samples = ctx.prometheus.query(&expr).await.map_err(|source| Error::Query {
                expr: expr.clone(),
                source,
            })?;
            Ok::<f64, Error>(
                samples
                    .first()
                    .map(|s| s.number())
                    .filter(|v| v.is_finite())
                    .unwrap_or(0.0),
            )
        }
    };
    let spec = ::stack::slo::spec();
    let requests = sum(spec.total()).await?;
    let fast = sum(slo("latency").counter(spec)).await?;
    let errors = sum(slo("availability").counter(spec)).await?;
    Ok(SloWindow {
        requests,
        slow: (requests - fast).max(0.0),
        errors,
    })
}

/// The SLO drill. The page legs need their 1h ratios above 14.4x the budget, so the number of bad requests the
/// drill must serve grows with the hour of traffic already in the window (a stack that needed warm-up traffic to
/// settle has much more). The drill reads that hour from Prometheus and sizes its extra load to cross in about a
/// minute (with a margin), then holds the app's own traffic at 5% errors while the `for` runs out; the ramp's
/// length counts towards the bound to fire (`Expect::after_ramp`).
///
/// After the fault, the 6x leg holds the page until the 30m ratios fall under 6x: up to 30 minutes at a steady
/// rate, which is the bound. Healthy traffic shortens it, as a real service's volume would: the drill reads how
/// many bad requests the 30m window holds and sends enough `GET /helloworld` to bring both ratios under the
/// threshold in about three minutes, as far as the machine keeps up.
pub(super) async fn burn(h: &mut Handle) -> Result<Vec<Proof>, Error> {
    let ctx = h.ctx.clone();
    let (fast, _) = page_legs();
    let hour = slo_window(&ctx, fast.long.as_str()).await?;
    let slow_target = slo("latency").threshold(fast) * 1.2;
    let slow_needed = slow_target * hour.requests / (1.0 - slow_target);
    let ramp_rate = (slow_needed / 60.0).clamp(60.0, 400.0);
    ctx.say(&format!(
        "slo-burn: the last hour holds {:.0} API requests; ramping at {ramp_rate:.0}/s",
        hour.requests
    ));
    let (stop_extra, extra) = background_load(LoadArgs {
        rate: ramp_rate,
        // Every response takes 400 ms: enough requests in flight for the rate, and some to spare.
        concurrency: (ramp_rate * 0.4 * 1.5) as u32 + 16,
        read_ratio: 1.0,
        ..ctx.load_args()
    });
    let limit = Duration::from_secs(300);
    set_fault(&ctx, Some(json!({"latency_ms": 400, "duration_seconds": 1800}))).await?;
    let spec = ::stack::slo::spec();
    let latency = wait_above(&ctx, &slo("latency").ratio_record(spec, &fast.long), slow_target, limit).await?;
    set_fault(
        &ctx,
        Some(json!({"error_ratio": 0.5, "latency_ms": 400, "duration_seconds": 1800})),
    )
    .await?;
    let error_target = slo("availability").threshold(fast) * 1.3;
    let errors = wait_above(
        &ctx,
        &slo("availability").ratio_record(spec, &fast.long),
        error_target,
        limit,
    )
    .await?;
    let _ = stop_extra.send(true);
    let _ = extra.await;
    set_fault(
        &ctx,
        Some(json!({"error_ratio": 0.05, "latency_ms": 400, "duration_seconds": 1800})),
    )
    .await?;
    ctx.say(&format!(
        "slo-burn: 1h ratios crossed (slow {latency:.3}, errors {errors:.4}); holding 5% errors and 400 ms"
    ));
    h.ready();
    h.until(Phase::Clear).await;
    set_fault(&ctx, None).await?;
    let removed = now_ms();
    let dilution = Dilution::start(&ctx, "slo-burn").await?;
    h.cleared(Ok(removed));
    h.until(Phase::Finish).await;
    dilution.stop(&ctx, "after the fault").await?;
    Ok(vec![])
}

/// Healthy traffic sized to bring the 30m SLO windows under the page's 6x leg in about three minutes (100 to 1,000
/// requests/s): after the SLO drill's fault, and before it when an earlier fault's failed or slow requests hold a
/// page open (their 30m window would, for half an hour). `GET /helloworld` touches neither the cache nor Postgres,
/// so it dilutes only the SLO windows (reads of cached keys would also hold the cache hit ratio up for the next five
/// minutes).
pub struct Dilution {
    who: String,
    stop: watch::Sender<bool>,
    task: JoinHandle<load::stats::Report>,
}

impl Dilution {
    pub async fn start(ctx: &Ctx, who: &str) -> Result<Dilution, Error> {
        let (_, slow) = page_legs();
        let window = slo_window(ctx, slow.short.as_str()).await?;
        let needed = (window.slow / (slo("latency").threshold(slow) * 0.8))
            .max(window.errors / (slo("availability").threshold(slow) * 0.8));
        let rate = ((needed - window.requests) / 180.0).clamp(100.0, 1000.0);
        ctx.say(&format!(
            "{who}: the 30m window holds {:.0} requests, {:.0} slow, {:.0} failed; healthy traffic at {rate:.0}/s",
            window.requests, window.slow, window.errors
        ));
        let (stop, task) = background_load(LoadArgs {
            rate,
            concurrency: 64,
            hello_ratio: 1.0,
            ..ctx.load_args()
        });
        Ok(Dilution {
            who: who.to_string(),
            stop,
            task,
        })
    }

    pub async fn stop(self, ctx: &Ctx, when: &str) -> Result<(), Error> {
        let _ = self.stop.send(true);
        let report = self.task.await?;
        ctx.say(&format!(
            "{}: healthy traffic {when}: {} requests at {:.0}/s, {} errors",
            self.who, report.completed, report.achieved_rate, report.errors
        ));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slo_drill_finds_its_slos_and_the_page_legs_in_the_spec() {
        // The drill counts slow requests as total minus fast (a `good` SLI) and failed ones directly (`errors`).
        assert!(matches!(slo("latency").sli(), ::stack::slo::Sli::Good(_)));
        assert!(matches!(slo("availability").sli(), ::stack::slo::Sli::Errors(_)));
        let (fast, slow) = page_legs();
        assert!(fast.factor > slow.factor && fast.long < slow.long);
        // Each threshold the drill aims at is an error ratio it can reach (50% errors, every request slow).
        assert!(slo("availability").threshold(fast) * 1.3 < 0.5);
        assert!(slo("latency").threshold(fast) * 1.2 < 1.0);
    }
}
