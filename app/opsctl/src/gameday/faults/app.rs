//! Faults of the app itself: SIGTERMs under load, its API connection limit held, reads of missing keys; and the
//! fault-injection endpoint the SLO drill drives.

use reqwest::StatusCode;

use super::{background_load, Handle, Phase};
use crate::gameday::error::Error;
use crate::gameday::proofs::{self, Proof};
use crate::gameday::stack::Ctx;
use crate::load::LoadArgs;

/// Two SIGTERMs to the app under load (with its proof); over once injected.
pub(super) async fn sigterm(h: &mut Handle) -> Result<Vec<Proof>, Error> {
    let ctx = h.ctx.clone();
    let proof = proofs::sigterm_twice(ctx.clone()).await?;
    h.ready();
    h.until(Phase::Clear).await;
    Ok(vec![proof])
}

/// Holds most of the app's API connection limit open (with its proof at the bound).
pub(super) async fn connections(h: &mut Handle) -> Result<Vec<Proof>, Error> {
    let ctx = h.ctx.clone();
    let held = crate::gameday::connections::hold(&ctx).await?;
    ctx.say(&format!(
        "app-connections: holding {} keep-alive connections (limit {}), each sending GET /healthcheck \
         every 30 s",
        held.count, held.limit
    ));
    h.ready();
    h.until(Phase::Clear).await;
    // The bound is proven once the ticket has arrived: at the limit every other client's new connection is refused
    // too, so the moment is kept short and comes after the alert's proof.
    let proof = held.prove_the_bound(&ctx).await;
    let reopened = held.release().await;
    ctx.say(&format!(
        "app-connections: released; {reopened} held connection(s) had to be reopened meanwhile"
    ));
    Ok(vec![proof])
}

/// Reads keys that do not exist at 60/s.
pub(super) async fn cache_misses(h: &mut Handle) -> Result<Vec<Proof>, Error> {
    let ctx = h.ctx.clone();
    let (stop, load) = background_load(LoadArgs {
        rate: 60.0,
        concurrency: 16,
        read_ratio: 1.0,
        missing_ratio: 1.0,
        key_prefix: "gameday-miss".to_string(),
        ..ctx.load_args()
    });
    h.ready();
    h.until(Phase::Clear).await;
    let _ = stop.send(true);
    let report = load.await?;
    ctx.say(&format!(
        "cache-misses: {} reads of missing keys, {} errors",
        report.completed, report.errors
    ));
    Ok(vec![])
}

/// Sets (or, with `None`, removes) the same injected fault on every replica: the SLO counts the service's requests,
/// and HAProxy spreads them over all replicas.
pub(super) async fn set_fault(ctx: &Ctx, body: Option<serde_json::Value>) -> Result<(), Error> {
    for admin in &ctx.args.admin {
        set_fault_on(ctx, admin, body.as_ref()).await?;
    }
    Ok(())
}

async fn set_fault_on(ctx: &Ctx, admin: &str, body: Option<&serde_json::Value>) -> Result<(), Error> {
    let url = format!("{}/fault", admin.trim_end_matches('/'));
    let request = match body {
        Some(b) => ctx.http.post(&url).json(b),
        None => ctx.http.delete(&url),
    };
    let request = ctx.admin_auth.apply(request);
    let response = request.send().await.map_err(|source| Error::Http {
        what: url.clone(),
        source,
    })?;
    let status = response.status();
    if status != StatusCode::OK {
        let text = response.text().await.unwrap_or_default();
        let hint = if status == StatusCode::UNAUTHORIZED {
            "the admin token is missing or wrong: --secrets-dir's app-admin.token"
        } else {
            "is APP_FAULT_INJECTION_ENABLED=true?"
        };
        return Err(Error::AppFault {
            url,
            status,
            body: text,
            hint,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::Secrets;
    use serde_json::json;
    use std::sync::Arc;

    fn gameday_args(argv: &[&str]) -> crate::gameday::GamedayArgs {
        let argv = ["opsctl", "gameday"].iter().chain(argv).copied();
        match <crate::Cli as clap::Parser>::try_parse_from(argv).unwrap().command {
            crate::Command::Gameday(args) => *args,
            other => panic!("parsed as {other:?}"),
        }
    }

    #[tokio::test]
    async fn fault_injection_sends_the_admin_token() {
        use axum::http::HeaderMap;
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = seen.clone();
        let app = axum::Router::new().route(
            "/fault",
            axum::routing::post(move |headers: HeaderMap| {
                let record = record.clone();
                async move {
                    let authorization = headers.get("authorization").map(|v| v.to_str().unwrap().to_string());
                    record.lock().unwrap().push(authorization.unwrap_or_default());
                    "{}"
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });

        let dir = super::super::temp_dir("admin-token");
        for file in crate::secrets::SecretFile::ALL {
            std::fs::write(dir.join(file.file_name()), format!("{}-value\n", file.file_name())).unwrap();
        }
        let ctx = Ctx::new(gameday_args(&["--admin", &base]), &Secrets::load(&dir)).unwrap();
        set_fault(&ctx, Some(json!({"error_ratio": 0.5}))).await.unwrap();
        let plain = Ctx::new(gameday_args(&["--admin", &base]), &Secrets::none()).unwrap();
        set_fault(&plain, Some(json!({"error_ratio": 0.5}))).await.unwrap();
        assert_eq!(
            *seen.lock().unwrap(),
            vec!["Bearer app-admin.token-value".to_string(), String::new()]
        );

        // A file the game day needs that is missing stops it before anything runs, naming the file.
        std::fs::remove_file(dir.join("redis-admin.password")).unwrap();
        let err = Ctx::new(gameday_args(&[]), &Secrets::load(&dir)).err().unwrap();
        assert!(matches!(&err, Error::Secret(_)), "{err:?}");
        assert!(err.to_string().contains("redis-admin.password"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
