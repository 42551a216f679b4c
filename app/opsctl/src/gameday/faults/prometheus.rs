//! Faults of Prometheus's own inputs: a job's service discovery emptied, a rule file that fails to evaluate.

use std::time::{Duration, Instant};

use tokio::time::sleep;

use super::{Handle, Phase};
use crate::gameday::error::Error;
use crate::gameday::proofs::Proof;
use crate::gameday::stack::now_ms;

/// Replaces `job`'s file_sd target file with an empty list; writes the original back to clear, and is removed once
/// Prometheus scrapes the job again: the drills after it read the job's metrics (seen on CI: app-connections,
/// started 6 s after the app's targets came back, found no http_server_connection_max yet).
pub(super) async fn empty_targets(h: &mut Handle, job: &'static str) -> Result<Vec<Proof>, Error> {
    let ctx = h.ctx.clone();
    let path = ctx.args.prometheus_dir.join("targets").join(format!("{job}.yml"));
    let original = tokio::fs::read_to_string(&path).await.map_err(|source| Error::File {
        action: "read",
        path: path.clone(),
        source,
    })?;
    write_atomically(&path, "[]\n").await?;
    h.ready();
    h.until(Phase::Clear).await;
    write_atomically(&path, &original).await?;
    let removed = now_ms();
    let expr = format!("up{{job=\"{job}\"}}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while ctx.prometheus.query(&expr).await.map_or(true, |s| s.is_empty()) {
        if Instant::now() >= deadline {
            return Err(Error::NoValue { expr });
        }
        sleep(Duration::from_secs(1)).await;
    }
    h.cleared(Ok(removed));
    Ok(vec![])
}

/// Loads a rule file whose expression fails at every evaluation; removes it to clear.
pub(super) async fn broken_rule(h: &mut Handle) -> Result<Vec<Proof>, Error> {
    let ctx = h.ctx.clone();
    let dir = ctx.args.prometheus_dir.join("drills");
    let path = dir.join("gameday-broken-rule.yml");
    tokio::fs::create_dir_all(&dir).await.map_err(|source| Error::File {
        action: "create",
        path: dir.clone(),
        source,
    })?;
    // `on()` with several series on each side: "many-to-many matching not allowed" at every evaluation.
    let rule = "# Written by `opsctl gameday` for the broken-rule drill; removed when it ends.\n\
                    groups:\n  - name: gameday-broken-rule\n    rules:\n      - record: gameday:broken\n        \
                    expr: up * on () up\n";
    write_atomically(&path, rule).await?;
    ctx.prometheus.reload().await?;
    h.ready();
    h.until(Phase::Clear).await;
    tokio::fs::remove_file(&path).await.map_err(|source| Error::File {
        action: "remove",
        path: path.clone(),
        source,
    })?;
    ctx.prometheus.reload().await?;
    Ok(vec![])
}

async fn write_atomically(path: &std::path::Path, text: &str) -> Result<(), Error> {
    let tmp = path.with_extension("gameday-tmp");
    tokio::fs::write(&tmp, text).await.map_err(|source| Error::File {
        action: "write",
        path: tmp.clone(),
        source,
    })?;
    tokio::fs::rename(&tmp, path).await.map_err(|source| Error::File {
        action: "rename to",
        path: path.to_path_buf(),
        source,
    })
}
