//! `inbox`: reads its config from the environment, then serves until SIGTERM or Ctrl-C.

use std::process::ExitCode;

use inbox::{startup, telemetry, Application, Config};

#[tokio::main]
async fn main() -> ExitCode {
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("inbox: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = telemetry::init(config.log_json, &config.log_level) {
        eprintln!("inbox: {e}");
        return ExitCode::from(2);
    }
    let app = match Application::build(&config).await {
        Ok(app) => app,
        Err(e) => {
            tracing::error!(error = %e, "startup failed");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(
        addr = %app.local_addr(),
        runbooks = %config.runbooks_dir.display(),
        data_file = %config.data_file.as_deref().map_or("none (memory only)".into(), |p| p.display().to_string()),
        heartbeat_max_age_seconds = config.heartbeat_max_age.as_secs(),
        max_notifications_per_receiver = config.max_notifications,
        "inbox listening (webhook POSTs need the bearer token; reads are open)"
    );
    match app.run_until_stopped(startup::shutdown_signal()).await {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "server failed");
            ExitCode::FAILURE
        }
    }
}
