//! `opsctl load` against the fake app: the mix, the pace, the accounting of errors and the exit status.

use std::process::Command;
use std::time::{Duration, Instant};

use clap::Parser;
use opsctl::load::{self, LoadArgs};

use crate::fake_stack::{FakeStack, Knobs};

fn load_args(argv: &[&str]) -> LoadArgs {
    match opsctl::Cli::try_parse_from(["opsctl", "load"].iter().copied().chain(argv.iter().copied()))
        .unwrap()
        .command
    {
        opsctl::Command::Load(args) => args,
        other => panic!("parsed as {other:?}"),
    }
}

#[tokio::test]
async fn load_keeps_the_rate_and_mix_and_reports_latency() {
    let stack = FakeStack::start(Knobs::default()).await;
    let args = load_args(&[
        "--url",
        &stack.base,
        "--rate",
        "200",
        "--duration",
        "2s",
        "--concurrency",
        "4",
        "--keys",
        "50",
        "--read-ratio",
        "0.8",
        "--missing-ratio",
        "0.25",
        "--quiet",
    ]);
    let started = Instant::now();
    let report = load::run(&args, std::future::pending()).await;
    let took = started.elapsed();

    assert_eq!(report.seeded_keys, 50);
    assert_eq!(stack.keys(), 50, "writes stay inside the key space");
    assert!((380..=401).contains(&report.sent), "sent {}", report.sent);
    assert_eq!(report.completed, report.sent);
    assert_eq!(report.errors, 0, "{:?}", report.errors_by_cause);
    assert!(report.achieved_rate > 150.0, "achieved {}", report.achieved_rate);
    assert!(took < Duration::from_secs(5), "took {took:?}");
    // 80% reads, a quarter of them to missing keys (404, counted as ok).
    let (reads, missing, writes) = stack.traffic();
    assert_eq!(writes - 50, report.ok_writes, "seeding wrote 50");
    assert_eq!(reads, report.ok_reads);
    assert_eq!(missing, report.ok_missing_reads);
    let read_share = (report.ok_reads + report.ok_missing_reads) as f64 / report.completed as f64;
    assert!((0.7..0.9).contains(&read_share), "read share {read_share}");
    let p50 = report.latency.p50.unwrap();
    assert!(p50 > 0.0 && p50 <= report.latency.p99.unwrap() && report.latency.p99 <= report.latency.max);
    assert!(report.text().contains("req/s achieved"));
}

#[tokio::test]
async fn errors_are_counted_by_status() {
    let stack = FakeStack::start(Knobs {
        writes_fail: true,
        ..Knobs::default()
    })
    .await;
    let args = load_args(&[
        "--url",
        &stack.base,
        "--rate",
        "100",
        "--duration",
        "1s",
        "--keys",
        "5",
        "--read-ratio",
        "0.5",
        "--quiet",
    ]);
    let report = load::run(&args, std::future::pending()).await;
    assert_eq!(report.seed_errors, 5);
    let write_errors = report.errors_by_cause.get("HTTP 503").copied().unwrap_or(0);
    // Nothing was seeded, so reads of "existing" keys answer 404 and count as errors too.
    let read_errors = report.errors_by_cause.get("HTTP 404").copied().unwrap_or(0);
    assert!(write_errors > 20 && read_errors > 20, "{:?}", report.errors_by_cause);
    assert_eq!(report.ok, 0);
}

#[test]
fn the_binary_fails_only_when_nothing_succeeded_or_arguments_are_bad() {
    // Nothing listens on port 9 of loopback: every request fails.
    let out = Command::new(env!("CARGO_BIN_EXE_opsctl"))
        // Hermetic: `make test` exports the test stack's secrets directory.
        .env_remove("STACK_SECRETS_DIR")
        .args([
            "load",
            "--url",
            "http://127.0.0.1:9",
            "--rate",
            "20",
            "--duration",
            "500ms",
            "--keys",
            "2",
            "--quiet",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no request succeeded"));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("connect error"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let out = Command::new(env!("CARGO_BIN_EXE_opsctl"))
        // Hermetic: `make test` exports the test stack's secrets directory.
        .env_remove("STACK_SECRETS_DIR")
        .args(["load", "--read-ratio", "2"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--read-ratio"));
}

#[tokio::test]
async fn the_json_report_is_machine_readable() {
    let stack = FakeStack::start(Knobs::default()).await;
    let base = stack.base.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_opsctl"))
            // Hermetic: `make test` exports the test stack's secrets directory.
            .env_remove("STACK_SECRETS_DIR")
            .args([
                "load",
                "--url",
                &base,
                "--rate",
                "50",
                "--duration",
                "1s",
                "--keys",
                "10",
                "--json",
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["achieved_rate"].as_f64().unwrap() > 0.0);
    assert!(report["latency"]["p99"].as_f64().is_some());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("keys written"), "progress goes to stderr: {stderr}");
}
