//! The inventory: one markdown document (the table README shows) and the same figures as JSON.

use std::fmt::Write;
use std::path::Path;

use super::error::Error;
use super::Outcome;

fn secs(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.0} s")).unwrap_or_else(|| "—".to_string())
}

fn join(notes: &[super::verdict::Note]) -> String {
    notes.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

fn verdict(passed: bool) -> &'static str {
    if passed {
        "pass"
    } else {
        "**FAIL**"
    }
}

/// The inventory as markdown.
pub fn markdown(o: &Outcome) -> String {
    let mut md = String::new();
    let t = &o.timing;
    let _ = writeln!(
        md,
        "Game day {} in {:.0} min. Intervals: scrape {} s, evaluation {} s, Alertmanager group_wait {} s, \
         group_interval {} s. Bound to fire = detection + `for` + scrape + evaluation + group_wait + {} s; bound to \
         resolve = clearing + scrape + evaluation + group_interval + {} s (the `for` and thresholds are the shipped \
         rules'). Times to fire and to notify count from the fault; time to resolve from its removal to the resolved \
         notification. Before the quiet period, {}.\n",
        if o.passed { "passed" } else { "FAILED" },
        o.seconds / 60.0,
        t.scrape_seconds,
        t.evaluation_seconds,
        t.group_wait_seconds,
        t.group_interval_seconds,
        super::verdict::SLACK_SECONDS,
        super::verdict::SLACK_SECONDS,
        settled(o),
    );
    md.push_str(
        "| alert | severity | receiver | `for` | scenario | bound to fire | fired | notified | bound to resolve | \
         resolved | result |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for s in &o.scenarios {
        if let Some(e) = &s.error {
            let _ = writeln!(
                md,
                "| — | | | | {} | | | | | | **FAIL**: {} |",
                s.name,
                e.replace('|', "/")
            );
        }
        for r in &s.rows {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} s | {} | {} s | {} | {} | {} s | {} | {}{} |",
                r.alert,
                r.severity,
                r.receiver.as_deref().unwrap_or("none (not notified)"),
                r.for_seconds,
                s.name,
                r.fire_bound_seconds,
                secs(r.fired_seconds),
                secs(r.notified_seconds),
                r.resolve_bound_seconds,
                secs(r.resolved_seconds),
                verdict(r.passed),
                if r.notes.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", join(&r.notes))
                }
            );
        }
    }
    for (alert, severity, reason) in &o.not_live {
        let _ = writeln!(
            md,
            "| {alert} | {severity} | | | not exercised live: {reason} | | | | | | — |"
        );
    }
    md.push_str("\nInhibitions (the target must not reach a receiver while its source fires):\n\n");
    md.push_str("| scenario | inhibited alert | by | it fired | Alertmanager held it inhibited | delivered while inhibited | delivered after the source resolved | result |\n|---|---|---|---|---|---|---|---|\n");
    for s in &o.scenarios {
        for i in &s.inhibitions {
            let yes = |b: bool| if b { "yes" } else { "no" };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                s.name,
                i.alert,
                i.by,
                yes(i.fired),
                yes(i.seen_inhibited),
                yes(i.delivered_while_inhibited),
                yes(i.delivered_after),
                verdict(i.passed)
            );
        }
    }
    md.push_str("\nProofs:\n\n| claim | figures | result |\n|---|---|---|\n");
    let scenario_proofs = o.scenarios.iter().flat_map(|s| &s.proofs);
    for p in std::iter::once(&o.quiet).chain(scenario_proofs).chain(&o.proofs) {
        let _ = writeln!(
            md,
            "| {} | {} | {} |",
            p.claim,
            p.figures.replace('|', "/"),
            verdict(p.passed)
        );
    }
    md
}

/// How the stack settled before the quiet period, in one sentence.
fn settled(o: &Outcome) -> String {
    let s = &o.settled;
    if s.waited_for.is_empty() {
        return "the stack was settled at the start".to_string();
    }
    format!(
        "settled in {:.0} s, waiting for {}{}",
        s.seconds,
        s.waited_for.join(", "),
        s.warm_up_requests
            .map(|n| format!("; {n} healthy warm-up reads filled the young stack's SLO windows"))
            .unwrap_or_default()
    )
}

/// A few lines for the end of the log: the run in one line per part, and every failure on a line of its own with
/// the figures that failed it.
pub fn summary(o: &Outcome) -> Vec<String> {
    let mut lines = vec![format!("summary: {}", settled(o))];
    if let Some(d) = o.settled.diagnosis.as_deref().filter(|_| o.settled.seconds > 120.0) {
        lines.push(format!("summary: while settling, {}", d.replace('\n', " ")));
    }
    let start = o.started_unix_ms;
    let minute = |ms: u64| ms.saturating_sub(start) as f64 / 60_000.0;
    let timeline: Vec<String> = o
        .scenarios
        .iter()
        .map(|s| {
            format!(
                "{} {:.1}-{:.1}{}",
                s.name,
                minute(s.started_unix_ms),
                minute(s.started_unix_ms) + s.seconds / 60.0,
                if s.passed() { "" } else { " FAILED" }
            )
        })
        .collect();
    lines.push(format!(
        "summary: scenarios (minutes into the game day): {}",
        timeline.join(", ")
    ));
    let mut failures = Vec::new();
    if !o.quiet.passed {
        failures.push(format!("quiet period: {}", o.quiet.figures));
    }
    for s in &o.scenarios {
        if let Some(e) = &s.error {
            failures.push(format!("{}: {e}", s.name));
        }
        for r in s.rows.iter().filter(|r| !r.passed) {
            failures.push(format!(
                "{}: {} ({}): {}; fired {} (bound {} s), notified {}, resolved {} (bound {} s)",
                s.name,
                r.alert,
                r.severity,
                join(&r.notes),
                secs(r.fired_seconds),
                r.fire_bound_seconds,
                secs(r.notified_seconds),
                secs(r.resolved_seconds),
                r.resolve_bound_seconds
            ));
        }
        for i in s.inhibitions.iter().filter(|i| !i.passed) {
            failures.push(format!("{}: {} was delivered while {} fired", s.name, i.alert, i.by));
        }
        for p in s.proofs.iter().filter(|p| !p.passed) {
            failures.push(format!("{}: proof failed: {}: {}", s.name, p.claim, p.figures));
        }
    }
    for p in o.proofs.iter().filter(|p| !p.passed) {
        failures.push(format!("proof failed: {}: {}", p.claim, p.figures));
    }
    if failures.is_empty() {
        lines.push("summary: no failures".to_string());
    }
    lines.extend(failures.into_iter().map(|f| format!("FAILED: {f}")));
    lines
}

/// Writes `gameday.md` and `gameday.json` into `dir`.
pub fn write(dir: &Path, o: &Outcome) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(|source| Error::File {
        action: "create",
        path: dir.to_path_buf(),
        source,
    })?;
    let json = serde_json::to_string_pretty(o)?;
    for (name, text) in [("gameday.md", markdown(o)), ("gameday.json", json)] {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|source| Error::File {
            action: "write",
            path,
            source,
        })?;
    }
    Ok(())
}
