//! `opsctl`, the operator CLI of the SRE stack. One module per subcommand (`load`, `smoke`, `gameday`), sharing the typed
//! clients of the stack's APIs in `clients`; a new subcommand is a new module plus one variant of [`Command`].

pub mod clients;
pub mod duration;
pub mod gameday;
pub mod load;
pub mod secrets;
pub mod smoke;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Command line of `opsctl`.
#[derive(Debug, Parser)]
#[command(
    name = "opsctl",
    version,
    about = "Operator CLI of the SRE stack",
    propagate_version = true
)]
pub struct Cli {
    /// Directory of the stack's secret files (`make up` writes `$STATE_DIR/secrets/`): `web.password`,
    /// `webhook.token`, `app-admin.token`, `postgres.password`, `redis-admin.password`, each read once at
    /// startup. Without it no credentials are sent (an unauthenticated stack).
    #[arg(long, global = true, env = "STACK_SECRETS_DIR", value_name = "DIR")]
    pub secrets_dir: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Send steady read/write traffic to the app and report achieved rate, errors and latency percentiles.
    Load(load::LoadArgs),
    /// Check a running stack end to end; exits non-zero naming the first broken link.
    Smoke(smoke::SmokeArgs),
    /// Prove every alert live: inject each fault, see the alert fire, reach its receiver, and resolve.
    Gameday(Box<gameday::GamedayArgs>),
}
