//! `opsctl smoke` passes on a healthy stack and names the first broken link otherwise.

use std::process::Command;

use clap::Parser;
use opsctl::secrets::Secrets;
use opsctl::smoke::{self, SmokeArgs};

use crate::fake_stack::{FakeStack, Knobs, ADMIN_TOKEN};

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
    let passed = smoke::run(&args_for(&stack, "5s"), &Secrets::none())
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
            "app admin GET http",
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
        let failure = smoke::run(&args_for(&stack, "1s"), &Secrets::none())
            .await
            .expect_err(link);
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
    let failure = smoke::run(&args_for(&stack, "1s"), &Secrets::none()).await.unwrap_err();
    assert_eq!(failure.link, "alertmanager → inbox (heartbeat receiver)", "{failure}");
    assert!(failure.detail.contains("no Watchdog heartbeat"), "{failure}");

    let stack = FakeStack::start(Knobs {
        watchdog_silent: true,
        ..Knobs::default()
    })
    .await;
    let failure = smoke::run(&args_for(&stack, "1s"), &Secrets::none()).await.unwrap_err();
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
            // Hermetic: `make test` exports the test stack's secrets directory.
            .env_remove("STACK_SECRETS_DIR")
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
            // Hermetic: `make test` exports the test stack's secrets directory.
            .env_remove("STACK_SECRETS_DIR")
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

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("opsctl-it-secrets-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[tokio::test]
async fn a_secured_stack_gets_each_credential_from_the_secrets_directory() {
    let stack = FakeStack::start(Knobs {
        web_password: Some("fake-web-password".into()),
        ..Knobs::default()
    })
    .await;
    stack.send_heartbeat().await;
    let dir = temp_dir("secured");
    stack.write_secrets(&dir);
    let args = args_for(&stack, "1s");

    let passed = smoke::run(&args, &Secrets::load(&dir))
        .await
        .expect("the smoke test passes");
    assert!(passed >= 16, "only {passed} checks ran");
    let sent = stack.admin_authorizations();
    assert!(
        !sent.is_empty() && sent.iter().all(|a| *a == format!("Bearer {ADMIN_TOKEN}")),
        "the admin listener gets the admin token: {sent:?}"
    );

    // Without the secrets, Prometheus refuses, and the message says where credentials come from.
    let failure = smoke::run(&args, &Secrets::none()).await.unwrap_err();
    assert!(failure.link.starts_with("prometheus targets"), "{failure}");
    assert!(
        failure.detail.contains("401") && failure.detail.contains("--secrets-dir"),
        "{failure}"
    );

    // A webhook token the inbox does not hold is named as the inbox's link, before the heartbeat's.
    std::fs::write(dir.join("webhook.token"), "not-the-inbox-token-0123456789\n").unwrap();
    let failure = smoke::run(&args, &Secrets::load(&dir)).await.unwrap_err();
    assert_eq!(
        failure.link, "inbox accepts the webhook token (webhook.token)",
        "{failure}"
    );
    assert!(failure.detail.contains("401"), "{failure}");

    // A file the smoke test needs that is missing stops it first, naming the file.
    std::fs::remove_file(dir.join("web.password")).unwrap();
    let failure = smoke::run(&args, &Secrets::load(&dir)).await.unwrap_err();
    assert_eq!(failure.link, "credentials", "{failure}");
    assert!(
        failure.detail.contains(&dir.join("web.password").display().to_string()),
        "{failure}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn the_binary_reads_the_secrets_directory_from_the_flag_or_the_environment() {
    let stack = FakeStack::start(Knobs {
        web_password: Some("fake-web-password".into()),
        ..Knobs::default()
    })
    .await;
    stack.send_heartbeat().await;
    let dir = temp_dir("binary");
    stack.write_secrets(&dir);
    let (base, inbox) = (stack.base.clone(), stack.inbox.clone());
    // `flag` passes --secrets-dir after the subcommand (it is a global option), `env` sets STACK_SECRETS_DIR.
    let run = move |flag: Option<std::path::PathBuf>, env: Option<std::path::PathBuf>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_opsctl"));
        command.env_remove("STACK_SECRETS_DIR");
        if let Some(dir) = env {
            command.env("STACK_SECRETS_DIR", dir);
        }
        command.args([
            "smoke",
            "--app",
            &base,
            "--admin",
            &base,
            "--prometheus",
            &base,
            "--alertmanager",
            &base,
        ]);
        command.args(["--inbox", &inbox, "--timeout", "2s", "--heartbeat-timeout", "2s"]);
        if let Some(dir) = flag {
            command.arg("--secrets-dir").arg(dir);
        }
        command.output().unwrap()
    };
    let outputs = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || {
            [
                run(Some(dir.clone()), None),
                run(None, Some(dir.clone())),
                run(None, None),
                run(None, Some(dir.join("no-such-dir"))),
            ]
        }
    })
    .await
    .unwrap();
    let stderr = |i: usize| String::from_utf8_lossy(&outputs[i].stderr).to_string();
    assert!(outputs[0].status.success(), "by the flag: {}", stderr(0));
    assert!(outputs[1].status.success(), "by the environment: {}", stderr(1));
    assert_eq!(outputs[2].status.code(), Some(1), "without: {}", stderr(2));
    assert!(stderr(2).contains("401"), "{}", stderr(2));
    assert_eq!(
        outputs[3].status.code(),
        Some(2),
        "a missing directory is a usage error: {}",
        stderr(3)
    );
    assert!(stderr(3).contains("no-such-dir"), "{}", stderr(3));
    std::fs::remove_dir_all(&dir).unwrap();
}
