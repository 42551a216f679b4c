//! `opsctl`: parses the command line and runs one subcommand. Exit status: 0 success, 1 the check or run
//! failed, 2 bad arguments.

use std::process::ExitCode;

use clap::Parser;
use opsctl::secrets::Secrets;
use opsctl::{gameday, load, smoke, Cli, Command};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let secrets = match Secrets::from_dir(cli.secrets_dir.as_deref()) {
        Ok(secrets) => secrets,
        Err(e) => {
            eprintln!("opsctl: --secrets-dir: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Command::Load(args) => {
            let stop = async {
                let _ = tokio::signal::ctrl_c().await;
            };
            let report = load::run(&args, stop).await;
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).expect("the report serializes")
                );
            } else {
                print!("{}", report.text());
            }
            if report.ok == 0 {
                eprintln!("load: no request succeeded (is the app at {} running?)", args.url);
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Command::Smoke(args) => {
            let started = std::time::Instant::now();
            match smoke::run(&args, &secrets).await {
                Ok(passed) => {
                    println!(
                        "smoke: all {passed} checks passed in {}",
                        opsctl::duration::format_duration(started.elapsed())
                    );
                    ExitCode::SUCCESS
                }
                Err(failure) => {
                    eprintln!("smoke: FAILED at {failure}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Gameday(args) => match gameday::run(*args, &secrets).await {
            Ok(outcome) if outcome.passed => ExitCode::SUCCESS,
            Ok(_) => ExitCode::FAILURE,
            Err(reason) => {
                eprintln!("gameday: could not run: {reason}");
                ExitCode::FAILURE
            }
        },
    }
}
