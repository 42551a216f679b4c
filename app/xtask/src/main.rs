//! `xtask`: the repository's developer tasks. `generate` writes every generated file from its one source;
//! `generate --check` writes nothing and fails when a file on disk differs from what would be generated (`make
//! check` runs it, so a hand edit of a generated file, or a source change without `make generate`, fails CI).
//!
//! Each generator is a module returning [`generated::Output`]s; a new one is a module and a line in
//! [`generated::all`].

mod generated;
mod slo;
mod slo_dashboard;
mod slo_runbooks;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "xtask", about = "The repository's generator and static checks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write every generated file from its source (`make generate`).
    Generate {
        /// Write nothing; exit 1 listing every generated file that is stale.
        #[arg(long)]
        check: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let root = stack::repo_root();
    match cli.command {
        Command::Generate { check } => match generated::run(&root, check) {
            Ok(report) => {
                eprint!("{report}");
                if report.stale.is_empty() || !check {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            Err(e) => {
                eprintln!("xtask generate: {e}");
                ExitCode::from(2)
            }
        },
    }
}
