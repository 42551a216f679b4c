//! Startup and shutdown: [`Application::build`] binds both listeners and wires the state; [`Application::run_until_stopped`]
//! serves until the given future completes, then drains in-flight requests within the shutdown timeout.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::{admin_router, AdminAccess, AdminState};
use crate::config::Config;
use crate::connection::{self, ServeSettings};
use crate::fault::FaultInjector;
use crate::listener::{DrainingListener, PlainListener};
use crate::routes::{api_router, AppState, Limits};
use crate::store::Store;
use crate::telemetry::metrics::{ListenerMetrics, ListenerName, Metrics, PoolName};
use crate::telemetry::process::ProcessCollector;

/// How often histogram samples are folded into buckets when nobody scrapes.
const METRICS_UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Why the application could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// A listener could not bind.
    #[error("cannot listen on {addr} ({what})")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// `API` or `admin`.
        what: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Fault injection is enabled without an admin token: anyone who reaches the admin listener could use it.
    #[error(
        "fault injection is enabled but no admin token is configured: set APP_ADMIN_TOKEN_FILE to a file holding it"
    )]
    NoAdminToken,
}

/// A built application: listeners bound, state wired, background tasks running, not yet serving.
pub struct Application {
    api_listener: TcpListener,
    admin_listener: TcpListener,
    api_router: Router,
    admin_router: Router,
    api_serve: (ServeSettings, ListenerMetrics),
    admin_serve: (ServeSettings, ListenerMetrics),
    shutdown_timeout: Duration,
    background: BackgroundTasks,
}

impl Application {
    /// Binds both listeners (port 0 picks a free port) and creates the pools. Does not need Postgres or Redis:
    /// if Postgres is down, the schema is created by a background task once it answers.
    pub async fn build(config: Config) -> Result<Self, StartupError> {
        // `Config::from_env` refuses this too; a configuration put together in code must not slip past it.
        if config.fault_injection_enabled && config.admin_token.is_none() {
            return Err(StartupError::NoAdminToken);
        }
        let started = Instant::now();
        let metrics = Metrics::new(config.metrics_enabled, crate::VERSION, crate::REVISION);
        metrics.set_pool_max(PoolName::Postgres, config.db_pool_max_size);
        metrics.set_pool_max(PoolName::Redis, config.redis_pool_max_size);
        let store = Arc::new(Store::new(&config, metrics.clone()));
        let faults = FaultInjector::new(config.fault_injection_enabled, metrics.clone());
        let api_serve = (ServeSettings::api(&config), metrics.listener(ListenerName::Api));
        let admin_serve = (ServeSettings::admin(&config), metrics.listener(ListenerName::Admin));

        let bind = |addr: SocketAddr, what: &'static str| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartupError::Bind { addr, what, source })
        };
        let api_listener = bind(config.listen_addr, "API").await?;
        let admin_listener = bind(config.admin_addr, "admin").await?;
        // Every connection holds a descriptor: below the budget, accepts fail before the bound is reached, and the
        // admin listener with them.
        let needed = connection::fd_budget(&config);
        match connection::raise_fd_limit(needed) {
            Ok(limit) => {
                if let Some(before) = limit.raised_from {
                    tracing::info!(before, now = limit.soft, needed, "raised the open-file limit");
                }
            }
            Err(limit) => tracing::warn!(
                limit = limit.soft,
                needed,
                max_connections = config.max_connections,
                "the open-file limit is below what APP_MAX_CONNECTIONS needs: connections will fail at accept \
                 before the bound (raise the limit, or lower APP_MAX_CONNECTIONS)"
            ),
        }

        store.prepare().await;
        let background = BackgroundTasks(vec![
            tokio::spawn({
                let store = store.clone();
                async move { store.run_background().await }
            }),
            tokio::spawn({
                let metrics = metrics.clone();
                async move {
                    let mut tick = tokio::time::interval(METRICS_UPKEEP_INTERVAL);
                    loop {
                        tick.tick().await;
                        metrics.run_upkeep();
                    }
                }
            }),
        ]);

        let api_state = AppState {
            store: store.clone(),
            metrics: metrics.clone(),
            faults: faults.clone(),
            limits: Limits {
                max_body_bytes: config.max_body_bytes,
                max_key_bytes: config.max_key_bytes,
            },
            status_timeout: config.status_timeout,
            started,
        };
        let admin_access = AdminAccess::new(
            admin_listener.local_addr().expect("a bound listener has an address"),
            config.admin_allowed_hosts.clone(),
            config.admin_token.clone(),
        );
        let admin_state = AdminState {
            metrics,
            store,
            faults,
            process: Arc::new(ProcessCollector::new()),
        };
        Ok(Application {
            api_listener,
            admin_listener,
            api_serve,
            admin_serve,
            api_router: api_router(api_state),
            admin_router: admin_router(admin_state, admin_access, config.max_body_bytes),
            shutdown_timeout: config.shutdown_timeout,
            background,
        })
    }

    /// The bound API address.
    pub fn api_addr(&self) -> SocketAddr {
        self.api_listener.local_addr().expect("a bound listener has an address")
    }

    /// The bound admin address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves both listeners until `shutdown` completes; then stops accepting, lets in-flight requests finish for
    /// up to the shutdown timeout, and returns. Returns early with the error if a listener fails.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) -> io::Result<()> {
        let Application {
            api_listener,
            admin_listener,
            api_router,
            admin_router,
            api_serve,
            admin_serve,
            shutdown_timeout,
            background,
        } = self;
        let (stop_tx, stop_rx) = watch::channel(false);
        let stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        // The API listener serves its backlog before the server stops accepting (see `listener`). Each listener has
        // its own accept loop and bound, so the API's connections cannot keep the admin listener from answering.
        let (api_listener, drained_rx) = DrainingListener::new(api_listener, stop_rx.clone(), shutdown_timeout);
        let (api_settings, api_metrics) = api_serve;
        let api = connection::serve(api_listener, api_router, api_settings, api_metrics, stopped(drained_rx));
        let (admin_settings, admin_metrics) = admin_serve;
        let admin = connection::serve(
            PlainListener::new(admin_listener, "admin"),
            admin_router,
            admin_settings,
            admin_metrics,
            stopped(stop_rx),
        );
        let servers = async { tokio::try_join!(api, admin).map(|_| ()) };
        tokio::pin!(servers);

        tokio::select! {
            result = &mut servers => {
                drop(background);
                return result;
            }
            () = shutdown => {}
        }
        tracing::info!(
            timeout_seconds = shutdown_timeout.as_secs(),
            "shutting down: draining in-flight requests"
        );
        let _ = stop_tx.send(true);
        let result = match tokio::time::timeout(shutdown_timeout, &mut servers).await {
            Ok(result) => result,
            Err(_) => {
                tracing::warn!("in-flight requests did not finish within the shutdown timeout; stopping anyway");
                Ok(())
            }
        };
        drop(background);
        result
    }
}

/// Tasks that live as long as the application; aborted when it is dropped.
struct BackgroundTasks(Vec<JoinHandle<()>>);

impl Drop for BackgroundTasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// Completes on SIGTERM or ctrl-c: the shutdown future `main` passes to [`Application::run_until_stopped`].
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("ctrl-c received"),
        () = terminate => tracing::info!("SIGTERM received"),
    }
}
