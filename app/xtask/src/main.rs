//! `xtask`: the repository's developer tasks.
//! - `generate` writes every generated file from its one source; `generate --check` writes nothing and fails
//!   when a file on disk differs from what would be generated (`make check` runs it, so a hand edit of a
//!   generated file, or a source change without `make generate`, fails CI). Each generator is a module returning
//!   [`generated::Output`]s; a new one is a module and a line in [`generated::all`].
//! - `lint` checks the monitoring sources without a stack: rules, their tests and routing, runbooks,
//!   dashboards, Grafana's provisioning, and that every metric they use is declared. One module per
//!   concern; PromQL is parsed only in [`promql`].
//! - `live` checks them against a running Prometheus: metric names exist, panels return data.

mod alert_tables;
mod dashboards;
mod exists;
mod finding;
mod generated;
mod grafana;
mod known;
mod kubernetes;
mod links;
mod live;
mod promql;
mod promtool;
mod provisioning;
mod repo;
mod rules;
mod runbooks;
mod slo;
mod slo_dashboard;
mod slo_runbooks;
mod topology;
mod uses;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::finding::Findings;
use crate::repo::Repo;

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
    /// Static checks of rules, rule tests, routing table, runbooks, dashboards and provisioning,
    /// and that every metric they use is declared. Exit 1 on any finding.
    Lint {
        /// Run only these checks (default: all): rules, runbooks, links, dashboards, provisioning,
        /// metrics. Unreadable files are always reported.
        #[arg(value_name = "CHECK", value_parser = clap::builder::PossibleValuesParser::new(CHECKS))]
        only: Vec<String>,
        /// Also parse every dashboard query and runbook block with this promtool (`promtool check rules`).
        #[arg(long, value_name = "PATH")]
        promtool: Option<PathBuf>,
    },
    /// Checks against a running Prometheus: every metric used exists, every job pinned has series, every panel
    /// query is accepted (and, with --require-data, returns data). Exit 1 on a finding, 2 when Prometheus cannot
    /// be queried.
    Live {
        /// Base URL of Prometheus, e.g. http://127.0.0.1:9090.
        #[arg(long, value_name = "URL")]
        prometheus: String,
        /// File holding Prometheus's basic-auth password for user admin (default: $PROMETHEUS_PASSWORD_FILE,
        /// which native/env.sh sets).
        #[arg(long, value_name = "FILE", env = "PROMETHEUS_PASSWORD_FILE")]
        password_file: Option<PathBuf>,
        /// Fail panels whose queries all return nothing (run after traffic, when every panel should have data).
        #[arg(long)]
        require_data: bool,
        /// Value of $__rate_interval.
        #[arg(long, default_value = "1m")]
        rate_interval: String,
        /// Value of $__interval, also the step of range queries.
        #[arg(long, default_value = "15s")]
        interval: String,
        /// Value of $__range, also the window of range queries.
        #[arg(long, default_value = "5m")]
        range: String,
        /// Seconds per HTTP request.
        #[arg(long, default_value_t = 15)]
        timeout: u64,
    },
}

/// The static checks, in the order they run and print.
const CHECKS: [&str; 6] = ["rules", "runbooks", "links", "dashboards", "provisioning", "metrics"];

/// Runs the static checks named in `only` (all when it is empty).
fn lint(repo: &Repo, only: &[String]) -> Vec<(&'static str, Findings)> {
    let mut out = vec![("files", Findings(repo.unreadable.clone()))];
    for name in CHECKS
        .into_iter()
        .filter(|c| only.is_empty() || only.iter().any(|o| o == c))
    {
        let found = match name {
            "rules" => rules::check(repo),
            "runbooks" => runbooks::check(repo),
            "links" => links::check(repo),
            "dashboards" => dashboards::check(repo),
            "provisioning" => provisioning::check(repo),
            _ => exists::check(repo),
        };
        out.push((name, found));
    }
    out
}

fn print(checks: &[(&str, Findings)]) -> usize {
    let mut total = 0;
    for (name, found) in checks {
        for f in &found.0 {
            println!("FAIL [{name}] {f}");
        }
        total += found.0.len();
    }
    total
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
        Command::Lint { only, promtool } => {
            let repo = Repo::load(&root);
            let mut checks = lint(&repo, &only);
            if let Some(p) = &promtool {
                checks.push(("promtool", promtool::check(&repo, p)));
            }
            let total = print(&checks);
            let ran: Vec<&str> = checks.iter().skip(1).map(|(name, _)| *name).collect();
            println!(
                "lint ({}): {} alerts, {} recording rules, {} dashboards, {} runbooks, {} expressions; {total} finding(s){}",
                ran.join(", "),
                repo.alerts().len(),
                repo.records().len(),
                repo.dashboards.len(),
                repo.runbooks.len(),
                uses::all(&repo, &grafana::Builtins::default()).len(),
                if promtool.is_some() || !ran.contains(&"dashboards") {
                    ""
                } else {
                    " (no --promtool: queries parsed by promql-parser only)"
                }
            );
            if total == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Command::Live {
            prometheus,
            password_file,
            require_data,
            rate_interval,
            interval,
            range,
            timeout,
        } => {
            let fail = |e: String| {
                eprintln!("xtask live: {e}");
                ExitCode::from(2)
            };
            let builtins = match grafana::Builtins::live(&rate_interval, &interval, &range) {
                Ok(b) => b,
                Err(e) => return fail(e),
            };
            let password = match password_file.map(std::fs::read_to_string).transpose() {
                Ok(p) => p.map(|p| p.trim().to_owned()),
                Err(e) => return fail(format!("cannot read the password file: {e}")),
            };
            let prom = match live::Prometheus::new(&prometheus, password, Duration::from_secs(timeout)) {
                Ok(p) => p,
                Err(e) => return fail(e),
            };
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(r) => r,
                Err(e) => return fail(e.to_string()),
            };
            let repo = Repo::load(&root);
            let opts = live::Options { require_data, builtins };
            match runtime.block_on(live::run(&repo, &prom, &opts)) {
                Err(e) => fail(format!("{prometheus}: {e}")),
                Ok(out) => {
                    let total = print(&[("files", Findings(repo.unreadable.clone())), ("live", out.findings)]);
                    for w in &out.warnings {
                        println!("WARN {w}");
                    }
                    for n in &out.notes {
                        println!("note {n}");
                    }
                    println!("{} against {prometheus}; {total} finding(s)", out.summary);
                    if total == 0 {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lint_runs_only_the_checks_named_and_always_reports_unreadable_files() {
        let repo = repo::tests::real();
        let names = |only: &[&str]| -> Vec<&str> {
            let only: Vec<String> = only.iter().map(|s| s.to_string()).collect();
            lint(&repo, &only).into_iter().map(|(n, _)| n).collect()
        };
        assert_eq!(names(&["runbooks", "rules"]), ["files", "rules", "runbooks"]);
        assert_eq!(names(&[]).len(), CHECKS.len() + 1);
    }

    #[test]
    fn the_real_repository_passes_every_static_check() {
        let found: Vec<_> = lint(&repo::tests::real(), &[])
            .into_iter()
            .flat_map(|(_, f)| f.0)
            .collect();
        assert!(found.is_empty(), "{found:#?}");
    }
}
