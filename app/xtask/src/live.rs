//! Checks against a running Prometheus:
//! - every metric a rule, dashboard query or runbook block uses is one Prometheus has (`/api/v1/label/__name__/
//!   values`: what every target of the stack exposes) or a recording rule;
//! - every `job="…"` a selector pins is a job Prometheus has series of (a typo there selects nothing, silently);
//! - every dashboard query is accepted, and (with `--require-data`) every panel has data: a query runs as an
//!   instant query and, when that is empty, as a range query over the last `range`. A panel FAILS when Prometheus
//!   rejects one of its queries, has NO DATA when none of its queries returns a series (what Grafana shows as "No
//!   data"); a query that returns nothing in a panel with data from another is a note.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;

use crate::exists::unknown_metrics;
use crate::finding::Findings;
use crate::grafana::{self, Builtins};
use crate::promql;
use crate::repo::Repo;
use crate::uses;

/// Prometheus's HTTP API, with the stack's basic-auth credentials (user `admin`) when given.
pub struct Prometheus {
    client: reqwest::Client,
    base: String,
    password: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Envelope {
    status: String,
    #[serde(default)]
    data: serde_json::Value,
    #[serde(default, rename = "errorType")]
    error_type: String,
    #[serde(default)]
    error: String,
}

impl Prometheus {
    pub fn new(base: &str, password: Option<String>, timeout: Duration) -> Result<Prometheus, String> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Prometheus {
            client,
            base: base.trim_end_matches('/').to_owned(),
            password,
        })
    }

    async fn get(&self, path: &str, params: &[(&str, String)]) -> Result<serde_json::Value, String> {
        let url =
            reqwest::Url::parse_with_params(&format!("{}{path}", self.base), params).map_err(|e| e.to_string())?;
        let mut request = self.client.get(url);
        if let Some(p) = &self.password {
            request = request.basic_auth("admin", Some(p));
        }
        let response = request.send().await.map_err(|e| format!("request failed: {e}"))?;
        let status = response.status();
        // Prometheus answers a bad query with 400 or 422 and the JSON error envelope.
        let body: Envelope = response.json().await.map_err(|_| format!("HTTP {status}"))?;
        if body.status != "success" {
            return Err(format!("{}: {}", body.error_type, body.error));
        }
        Ok(body.data)
    }

    /// Values of a label over everything Prometheus has.
    pub async fn label_values(&self, label: &str) -> Result<BTreeSet<String>, String> {
        let data = self.get(&format!("/api/v1/label/{label}/values"), &[]).await?;
        serde_json::from_value(data).map_err(|e| e.to_string())
    }

    /// How many series (or 1 for a scalar) `expr` returns now, or over the last `range` when nothing is there now.
    pub async fn count(&self, expr: &str, range: Duration, step: Duration) -> Result<usize, String> {
        let data = self.get("/api/v1/query", &[("query", expr.to_owned())]).await?;
        let n = result_len(&data);
        if n > 0 {
            return Ok(n);
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let params = [
            ("query", expr.to_owned()),
            ("start", format!("{:.3}", now - range.as_secs_f64())),
            ("end", format!("{now:.3}")),
            ("step", format!("{}", step.as_secs_f64().max(1.0))),
        ];
        Ok(result_len(&self.get("/api/v1/query_range", &params).await?))
    }
}

fn result_len(data: &serde_json::Value) -> usize {
    match (data.get("resultType").and_then(|t| t.as_str()), data.get("result")) {
        (Some("scalar" | "string"), _) => 1,
        (_, Some(serde_json::Value::Array(a))) => a.len(),
        _ => 0,
    }
}

/// The verdict on one panel from its queries' results (`Err` = rejected, `Ok(n)` = n series).
#[derive(Debug, Default)]
pub struct Panel {
    pub title: String,
    pub errors: Vec<String>,
    pub empty: Vec<String>,
    pub data: bool,
}

/// What the live check found, ready to print.
#[derive(Debug, Default)]
pub struct Outcome {
    pub findings: Findings,
    pub warnings: Vec<String>,
    pub notes: Vec<String>,
    pub summary: String,
}

/// Turns per-panel results into findings: an error fails a panel, no data fails it with `require_data` and
/// warns otherwise.
pub fn judge(
    panels: &BTreeMap<(String, String), Panel>,
    require_data: bool,
    out: &mut Outcome,
) -> (usize, usize, usize) {
    let (mut ok, mut nodata, mut failed) = (0, 0, 0);
    for ((uid, id), p) in panels {
        let name = format!("{uid} panel {id} ({})", p.title);
        if !p.errors.is_empty() {
            failed += 1;
            for e in &p.errors {
                out.findings.add(&name, format!("query {e}"));
            }
        } else if !p.data {
            nodata += 1;
            let detail = format!("no data from any query: {}", p.empty.join("; "));
            if require_data {
                out.findings.add(&name, detail);
            } else {
                out.warnings.push(format!("{name}: {detail}"));
            }
        } else {
            ok += 1;
            for e in &p.empty {
                out.notes.push(format!(
                    "{name}: query {e} returned nothing (the panel has data from another)"
                ));
            }
        }
    }
    (ok, nodata, failed)
}

/// Options of `xtask live`.
#[derive(Debug, Clone)]
pub struct Options {
    pub require_data: bool,
    pub builtins: Builtins,
}

pub async fn run(repo: &Repo, prom: &Prometheus, opts: &Options) -> Result<Outcome, String> {
    prom.count("vector(1)", Duration::from_secs(60), Duration::from_secs(15))
        .await
        .map_err(|e| format!("cannot query Prometheus: {e}"))?;
    let mut out = Outcome::default();

    let names = prom.label_values("__name__").await?;
    let records: BTreeSet<String> = repo.records().keys().map(|s| (*s).to_owned()).collect();
    let unknown = unknown_metrics(
        repo,
        |n| names.contains(n) || records.contains(n),
        "is not exposed by any target of the running stack",
    );
    out.findings.0.extend(unknown.0);

    let jobs = prom.label_values("job").await?;
    for u in uses::all(repo, &opts.builtins) {
        let Ok(a) = promql::analyze(&u.expr) else { continue }; // reported above
        for (_, job) in a.equal_matchers.iter().filter(|(l, _)| l == "job") {
            if !jobs.contains(job) {
                out.findings.add(
                    &u.place,
                    format!("job {job:?} has no series in Prometheus (jobs: {jobs:?})"),
                );
            }
        }
    }

    let range = Builtins::duration(&opts.builtins.range);
    let step = Builtins::duration(&opts.builtins.interval);
    let mut panels: BTreeMap<(String, String), Panel> = BTreeMap::new();
    for d in &repo.dashboards {
        let uid = d.json.get("uid").and_then(|u| u.as_str()).unwrap_or(&d.path).to_owned();
        let template = grafana::template_values(&d.json);
        for q in grafana::queries(&d.json).into_iter().filter(|q| !q.hidden()) {
            let expr = grafana::substitute(q.expr, &template, &opts.builtins);
            let title = q.panel.get("title").and_then(|t| t.as_str()).unwrap_or("").to_owned();
            let p = panels.entry((uid.clone(), q.panel_id())).or_insert_with(|| Panel {
                title,
                ..Panel::default()
            });
            match prom.count(&expr, range, step).await {
                Err(e) => p.errors.push(format!("{}: {e}: {expr}", q.ref_id())),
                Ok(0) => p.empty.push(format!("{}: {expr}", q.ref_id())),
                Ok(_) => p.data = true,
            }
        }
    }
    let (ok, nodata, failed) = judge(&panels, opts.require_data, &mut out);
    out.summary = format!(
        "live: {} metric names used, {} exposed; {} panels in {} dashboards: {ok} ok, {nodata} without data, {failed} with query errors ($__rate_interval={})",
        crate::exists::used_metrics(repo).len(),
        names.len(),
        panels.len(),
        repo.dashboards.len(),
        opts.builtins.rate_interval
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn panel(errors: &[&str], empty: &[&str], data: bool) -> Panel {
        Panel {
            title: "t".into(),
            errors: errors.iter().map(|s| s.to_string()).collect(),
            empty: empty.iter().map(|s| s.to_string()).collect(),
            data,
        }
    }

    fn panels(list: Vec<Panel>) -> BTreeMap<(String, String), Panel> {
        list.into_iter()
            .enumerate()
            .map(|(i, p)| (("d".to_string(), i.to_string()), p))
            .collect()
    }

    #[test]
    fn a_rejected_query_fails_its_panel_with_or_without_require_data() {
        for require in [false, true] {
            let mut out = Outcome::default();
            let counts = judge(
                &panels(vec![panel(&["A: bad_data: parse error"], &[], true)]),
                require,
                &mut out,
            );
            assert_eq!(counts, (0, 0, 1));
            assert!(out.findings.mention("query A: bad_data"));
        }
    }

    #[test]
    fn a_panel_without_data_fails_only_with_require_data() {
        let mut out = Outcome::default();
        judge(&panels(vec![panel(&[], &["A: up"], false)]), false, &mut out);
        assert!(out.findings.0.is_empty() && out.warnings.len() == 1);
        let mut out = Outcome::default();
        assert_eq!(
            judge(&panels(vec![panel(&[], &["A: up"], false)]), true, &mut out),
            (0, 1, 0)
        );
        assert!(out.findings.mention("no data from any query: A: up"));
    }

    #[test]
    fn an_empty_query_beside_one_with_data_is_a_note() {
        let mut out = Outcome::default();
        assert_eq!(
            judge(&panels(vec![panel(&[], &["B: x"], true)]), true, &mut out),
            (1, 0, 0)
        );
        assert!(out.findings.0.is_empty() && out.notes.len() == 1);
    }

    #[test]
    fn result_sizes_count_series_and_scalars() {
        let v: serde_json::Value = serde_json::json!({"resultType": "vector", "result": [{}, {}]});
        assert_eq!(result_len(&v), 2);
        assert_eq!(
            result_len(&serde_json::json!({"resultType": "scalar", "result": [1, "1"]})),
            1
        );
        assert_eq!(
            result_len(&serde_json::json!({"resultType": "matrix", "result": []})),
            0
        );
    }

    /// A Prometheus on loopback that has the metric names `names` and the jobs `jobs`, answers every query with
    /// one series, and refuses a request without user admin's basic auth (password `secret`).
    fn fake_prometheus(names: BTreeSet<String>, jobs: BTreeSet<String>) -> String {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let request = String::from_utf8_lossy(&request).to_lowercase();
                let path = request.split_whitespace().nth(1).unwrap_or("").to_owned();
                let (status, body) = if !request.contains("authorization: basic ywrtaw46c2vjcmv0") {
                    (
                        "401 Unauthorized",
                        serde_json::json!({"status": "error", "errorType": "auth", "error": "no"}),
                    )
                } else if path.starts_with("/api/v1/label/__name__/values") {
                    ("200 OK", serde_json::json!({"status": "success", "data": names}))
                } else if path.starts_with("/api/v1/label/job/values") {
                    ("200 OK", serde_json::json!({"status": "success", "data": jobs}))
                } else if path.contains("reject_me") {
                    let body = serde_json::json!({"status": "error", "errorType": "bad_data", "error": "no way"});
                    ("400 Bad Request", body)
                } else if path.contains("empty_me") {
                    let data = serde_json::json!({"resultType": "vector", "result": []});
                    ("200 OK", serde_json::json!({"status": "success", "data": data}))
                } else {
                    let series = serde_json::json!([{"metric": {}, "value": [0, "1"]}]);
                    (
                        "200 OK",
                        serde_json::json!({"status": "success", "data": {"resultType": "vector", "result": series}}),
                    )
                };
                let body = body.to_string();
                let head = format!("HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                let _ = stream.write_all(format!("{head}{body}").as_bytes());
            }
        });
        format!("http://{addr}")
    }

    /// The real repository's used metric names (recording rules left out: they exist without being scraped) and
    /// pinned jobs.
    fn used(repo: &Repo) -> (BTreeSet<String>, BTreeSet<String>) {
        let records: BTreeSet<&str> = repo.records().into_keys().collect();
        let names = crate::exists::used_metrics(repo)
            .into_iter()
            .filter(|n| !records.contains(n.as_str()))
            .collect();
        let b = Builtins::live("1m", "15s", "5m").unwrap();
        let jobs = uses::all(repo, &b)
            .iter()
            .filter_map(|u| promql::analyze(&u.expr).ok())
            .flat_map(|a| a.equal_matchers)
            .filter(|(l, _)| l == "job")
            .map(|(_, v)| v)
            .collect();
        (names, jobs)
    }

    fn run_against(url: &str, password: &str, require_data: bool) -> Result<Outcome, String> {
        run_repo(&crate::repo::tests::real(), url, password, require_data)
    }

    fn run_repo(repo: &Repo, url: &str, password: &str, require_data: bool) -> Result<Outcome, String> {
        let prom = Prometheus::new(url, Some(password.into()), Duration::from_secs(10)).unwrap();
        let opts = Options {
            require_data,
            builtins: Builtins::live("1m", "15s", "5m").unwrap(),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(run(repo, &prom, &opts))
    }

    #[test]
    fn a_stack_that_has_every_metric_and_job_passes() {
        let (names, jobs) = used(&crate::repo::tests::real());
        let out = run_against(&fake_prometheus(names, jobs), "secret", true).unwrap();
        assert!(out.findings.0.is_empty(), "{:#?}", out.findings.0);
        assert!(
            out.summary.contains("0 without data, 0 with query errors"),
            "{}",
            out.summary
        );
    }

    #[test]
    fn a_metric_no_target_exposes_and_a_job_without_series_are_caught() {
        let (mut names, mut jobs) = used(&crate::repo::tests::real());
        assert!(names.remove("redis_up") && jobs.remove("redis"));
        let out = run_against(&fake_prometheus(names, jobs), "secret", true).unwrap();
        assert!(
            out.findings.mention("metric \"redis_up\" is not exposed by any target"),
            "{:#?}",
            out.findings.0
        );
        assert!(out.findings.mention("job \"redis\" has no series"));
    }

    #[test]
    fn a_prometheus_that_refuses_the_credentials_is_an_error_not_a_pass() {
        let (names, jobs) = used(&crate::repo::tests::real());
        let err = run_against(&fake_prometheus(names, jobs), "wrong", false).unwrap_err();
        assert!(err.contains("cannot query Prometheus"), "{err}");
    }

    #[test]
    fn a_query_prometheus_rejects_and_a_panel_without_data_are_caught() {
        let mut repo = crate::repo::tests::real();
        let (names, jobs) = used(&repo);
        let url = fake_prometheus(names, jobs);
        let panels = repo.dashboards[0].json["panels"].as_array_mut().unwrap();
        let mut with_queries = panels.iter_mut().filter(|p| p.get("targets").is_some());
        with_queries.next().unwrap()["targets"] = serde_json::json!([{"refId": "A", "expr": "up + reject_me"}]);
        with_queries.next().unwrap()["targets"] = serde_json::json!([{"refId": "A", "expr": "empty_me"}]);
        let out = run_repo(&repo, &url, "secret", true).unwrap();
        assert!(
            out.findings.mention("query A: bad_data: no way"),
            "{:#?}",
            out.findings.0
        );
        assert!(
            out.findings.mention("no data from any query: A: empty_me"),
            "{:#?}",
            out.findings.0
        );
        assert!(
            out.summary.contains("1 without data, 1 with query errors"),
            "{}",
            out.summary
        );
        let out = run_repo(&repo, &url, "secret", false).unwrap();
        assert!(!out.findings.mention("no data from any query") && out.warnings.len() == 1);
    }
}
