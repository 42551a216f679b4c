//! `opsctl smoke` passes on a healthy stack and names the first broken link otherwise.

use std::process::Command;

use clap::Parser;
use opsctl::smoke::{self, SmokeArgs};

use crate::fake_stack::{FakeStack, Knobs};

fn args_for(stack: &FakeStack, timeout: &str) -> SmokeArgs {
    let argv = [
        "smoke",
        "--app",
        &stack.base,
        "--admin",
        &stack.base,
        "--prometheus",
        &stack.base,
        "--alertmanager",
        &stack.base,
        "--inbox",
        &stack.inbox,
        "--timeout",
        timeout,
        "--heartbeat-timeout",
        timeout,
    ];
    match opsctl::Cli::try_parse_from(std::iter::once("opsctl").chain(argv))
        .unwrap()
        .command
    {
        opsctl::Command::Smoke(args) => args,
        other => panic!("parsed as {other:?}"),
    }
}

#[tokio::test]
async fn a_healthy_stack_passes_every_check() {
    let stack = FakeStack::start(Knobs::default()).await;
    stack.send_heartbeat().await;
    let passed = smoke::run(&args_for(&stack, "5s"))
        .await
        .expect("the smoke test passes");
    assert!(passed >= 15, "only {passed} checks ran");
}

#[tokio::test]
async fn each_broken_link_is_named() {
    let cases: Vec<(Knobs, &str, &str)> = vec![
        (
            Knobs {
                wrong_hello: true,
                ..Knobs::default()
            },
            "app GET /helloworld",
            "Hello World",
        ),
        (
            Knobs {
                degraded: true,
                ..Knobs::default()
            },
            "app GET /status",
            "Degraded",
        ),
        (
            Knobs {
                no_histogram: true,
                ..Knobs::default()
            },
            "app admin GET /metrics",
            "http_server_request_duration_seconds_bucket",
        ),
        (
            Knobs {
                down_job: Some("redis".into()),
                ..Knobs::default()
            },
            "prometheus targets",
            "job redis",
        ),
        (
            Knobs {
                rule_error: Some("RedisDown".into()),
                ..Knobs::default()
            },
            "prometheus rules",
            "RedisDown",
        ),
        (
            Knobs {
                no_heartbeat_receiver: true,
                ..Knobs::default()
            },
            "alertmanager config",
            "heartbeat",
        ),
        (
            Knobs {
                no_runbook_url: Some("AppTargetDown".into()),
                ..Knobs::default()
            },
            "runbook of AppTargetDown",
            "no runbook_url",
        ),
        (
            Knobs {
                broken_runbook: Some("RedisDown".into()),
                ..Knobs::default()
            },
            "runbook of RedisDown",
            "404",
        ),
    ];
    for (knobs, link, detail) in cases {
        let stack = FakeStack::start(knobs.clone()).await;
        stack.send_heartbeat().await;
        let failure = smoke::run(&args_for(&stack, "1s")).await.expect_err(link);
        assert!(
            failure.link.starts_with(link),
            "{knobs:?}: expected link {link:?}, got {failure}"
        );
        assert!(
            failure.detail.contains(detail),
            "{knobs:?}: expected {detail:?} in {failure}"
        );
    }
}

#[tokio::test]
async fn a_missing_heartbeat_is_traced_to_the_hop_that_lost_it() {
    // Watchdog fires and Alertmanager holds it, but nothing reached the inbox.
    let stack = FakeStack::start(Knobs::default()).await;
    let failure = smoke::run(&args_for(&stack, "1s")).await.unwrap_err();
    assert_eq!(failure.link, "alertmanager → inbox (heartbeat receiver)", "{failure}");
    assert!(failure.detail.contains("no Watchdog heartbeat"), "{failure}");

    let stack = FakeStack::start(Knobs {
        watchdog_silent: true,
        ..Knobs::default()
    })
    .await;
    let failure = smoke::run(&args_for(&stack, "1s")).await.unwrap_err();
    assert_eq!(failure.link, "prometheus Watchdog alert", "{failure}");
}

#[tokio::test]
async fn the_binary_exits_non_zero_and_names_the_link_on_stderr() {
    let stack = FakeStack::start(Knobs {
        down_job: Some("postgres".into()),
        ..Knobs::default()
    })
    .await;
    stack.send_heartbeat().await;
    let base = stack.base.clone();
    let inbox = stack.inbox.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_opsctl"))
            .args([
                "smoke",
                "--app",
                &base,
                "--admin",
                &base,
                "--prometheus",
                &base,
                "--alertmanager",
                &base,
            ])
            .args(["--inbox", &inbox, "--timeout", "1s", "--heartbeat-timeout", "1s"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("smoke: FAILED at prometheus targets") && stderr.contains("job postgres"),
        "{stderr}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("ok  app GET /helloworld"), "{stdout}");

    // And a healthy one exits 0.
    let healthy = FakeStack::start(Knobs::default()).await;
    healthy.send_heartbeat().await;
    let (base, inbox) = (healthy.base.clone(), healthy.inbox.clone());
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_opsctl"))
            .args([
                "smoke",
                "--app",
                &base,
                "--admin",
                &base,
                "--prometheus",
                &base,
                "--alertmanager",
                &base,
            ])
            .args(["--inbox", &inbox, "--timeout", "2s", "--heartbeat-timeout", "2s"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("checks passed"));
}
