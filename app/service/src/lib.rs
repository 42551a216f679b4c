//! `app`: the stack's service. A key-value API on Postgres (source of truth) with a Redis read-through cache,
//! instrumented to the metric contract in [`telemetry::metrics`], with fault injection for drills.
//!
//! `main.rs` only loads the [`Config`], sets up logging and runs an [`Application`]; everything else lives here
//! so that tests and other binaries can reuse it.

pub mod admin;
pub mod config;
pub mod connection;
pub mod error;
pub mod fault;
pub mod listener;
pub mod routes;
pub mod startup;
pub mod store;
pub mod telemetry;

pub use config::Config;
pub use startup::Application;

/// The package version, as exported by `app_build_info` and `/status`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The source revision the binary was built from (`unknown` outside a git checkout), see `build.rs`.
pub const REVISION: &str = env!("APP_REVISION");
