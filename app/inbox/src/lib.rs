//! The on-call inbox of the SRE stack: Alertmanager posts its webhooks here, one path per receiver (pager,
//! ticket, heartbeat); the inbox keeps them, shows them (HTML and JSON), exports its own metrics, serves the
//! runbooks that alerts link to, and is the dead-man's switch for the always-firing Watchdog alert. Only a POST
//! with the bearer token Alertmanager sends is stored (`auth`); what is stored and logged is bounded (`limits`).

pub mod auth;
pub mod clock;
pub mod config;
pub mod error;
pub mod limits;
pub mod metrics;
pub mod page;
pub mod routes;
pub mod runbooks;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod webhook;

pub use config::Config;
pub use startup::Application;
