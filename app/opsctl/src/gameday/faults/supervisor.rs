//! Faults of the supervisor's programs: one stopped, started again to clear.

use std::time::Duration;

use super::{Handle, Phase};
use crate::gameday::error::Error;
use crate::gameday::proofs::Proof;

/// Stops `program`; starts it again to clear (and, for the app, waits until it answers).
pub(super) async fn stop(h: &mut Handle, program: &'static str) -> Result<Vec<Proof>, Error> {
    let ctx = h.ctx.clone();
    ctx.supervisor("stop", program).await?;
    h.ready();
    h.until(Phase::Clear).await;
    ctx.supervisor("start", program).await?;
    if program.starts_with("app:") {
        ctx.wait_app_healthy(Duration::from_secs(30)).await?;
    }
    // HAProxy starts with every server marked up and checks them at once; its first answers must be real ones.
    if program == "haproxy" {
        for host in ctx.replica_names() {
            ctx.wait_replica_in_rotation(host.trim_start_matches("app:"), Duration::from_secs(30))
                .await?;
        }
    }
    Ok(vec![])
}
