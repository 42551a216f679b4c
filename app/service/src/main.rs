//! `app`: reads its configuration from the environment, then serves until SIGTERM or ctrl-c.

use std::process::ExitCode;

use app::{startup, telemetry, Application, Config};

#[tokio::main]
async fn main() -> ExitCode {
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("app: {e}");
            return ExitCode::from(2);
        }
    };
    // Held to the end of main: dropping it writes out the buffered log lines.
    let _logs = telemetry::init_logging(config.log_format, &config.log_level);
    let app = match Application::build(config.clone()).await {
        Ok(app) => app,
        Err(e) => {
            tracing::error!(error = %app::error::error_chain(&e), "startup failed");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(
        api = %app.api_addr(),
        admin = %app.admin_addr(),
        database = %config.database_url,
        redis = %config.redis_url,
        version = app::VERSION,
        revision = app::REVISION,
        metrics_enabled = config.metrics_enabled,
        fault_injection_enabled = config.fault_injection_enabled,
        "listening"
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
