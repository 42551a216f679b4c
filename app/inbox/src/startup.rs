//! Building the inbox from its config and serving it until a shutdown future completes.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::auth::WebhookGuard;
use crate::config::Config;
use crate::routes::{router, AppState};
use crate::store::Store;

/// A bound, ready-to-serve inbox.
pub struct Application {
    listener: TcpListener,
    state: Arc<AppState>,
}

impl Application {
    /// Opens the data file (replaying it) and binds the listener; port 0 picks a free port. Webhook POSTs need
    /// `config.webhook_token` (the default token accepts none).
    pub async fn build(config: &Config) -> io::Result<Self> {
        let store = match &config.data_file {
            Some(path) => Store::open(path, config.max_notifications, config.heartbeat_max_age)
                .map_err(|e| io::Error::new(e.kind(), format!("cannot use the data file {}: {e}", path.display())))?,
            None => Store::in_memory(config.max_notifications, config.heartbeat_max_age),
        };
        if !config.runbooks_dir.is_dir() {
            // Not fatal: the inbox's main job is receiving pages; the runbook links will answer 404.
            tracing::warn!(dir = %config.runbooks_dir.display(), "the runbooks folder does not exist");
        }
        let listener = TcpListener::bind(config.listen_addr)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {}: {e}", config.listen_addr)))?;
        let state = Arc::new(AppState {
            store,
            runbooks_dir: config.runbooks_dir.clone(),
            guard: WebhookGuard::new(config.webhook_token.clone()),
        });
        Ok(Application { listener, state })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// Serves until `shutdown` completes, then lets in-flight requests finish.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) -> io::Result<()> {
        axum::serve(self.listener, router(self.state))
            .with_graceful_shutdown(shutdown)
            .await
    }
}

/// Completes on SIGTERM (what the supervisor and `docker stop` send) or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown requested");
}
