#!/usr/bin/env python3
"""Structural lint of the dashboards, the rules the JSON Schema cannot express.

  * file name = `<uid>.json`; uids unique, hand-chosen (lowercase words joined by dashes, at most 40 characters),
    the five dashboards of the contract present;
  * no export leftovers at the top level (`id`, `version`, `gnetId`, `iteration`, `__inputs`, `__requires`,
    `__elements`), schemaVersion one that Grafana 10.4 to 12 loads without a lossy migration, read-only
    (`editable: false`, they are provisioned);
  * a `datasource` template variable of type prometheus, used by every panel and every query (no hard-coded
    datasource uid);
  * panel ids unique per dashboard, the contract's ids present (alerts link to them), every other id >= 20,
    panels inside the 24-column grid and not overlapping;
  * every panel but rows has a title, a description, at least one query and a unit
    (`fieldConfig.defaults.unit`);
  * every rate(), irate() and increase() takes `[$__rate_interval]`;
  * every metric name is one the stack exposes: the app's contract metrics, the recording rules of alerts/,
    the exporters' families (redis_, pg_, namedprocess_namegroup_, node_), Prometheus' and Alertmanager's own
    metrics, `up`, `scrape_duration_seconds` and `ALERTS` (the repository's consistency check then proves each
    one against the live exposition);
  * with --promtool PATH, every query (variables substituted as live-check.py does) parses: they are written as
    recording rules to a temporary file and checked with `promtool check rules`.

Usage: lint.py [--promtool PATH] [DASHBOARD_DIR]       Python 3 standard library only; exit 1 on any finding.
"""
import argparse
import glob
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

_spec = importlib.util.spec_from_file_location("live_check", os.path.join(HERE, "live-check.py"))
live_check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(live_check)

# Dashboard uid -> panel ids that alerts' dashboard_url and runbooks link to (the shared contract).
CONTRACT = {
    "sre-overview": range(1, 18),
    "sre-slo": range(1, 8),
    "sre-redis": range(1, 11),
    "sre-postgres": range(1, 13),
    "sre-stack": range(1, 9),
}
FIRST_FREE_ID = 20
# Grafana 10.4 and 11.0-11.2 write 39, 11.3-11.6 40-41, 12.x 41-42; newer Grafanas migrate older versions up.
SCHEMA_VERSIONS = range(39, 43)
LEFTOVERS = ("id", "version", "gnetId", "iteration", "__inputs", "__requires", "__elements")
UID = re.compile(r"^[a-z][a-z0-9]*(?:-[a-z0-9]+)*$")
DATASOURCE_REF = "${datasource}"

# The app's metric contract (names as exposed; histograms with their series suffixes).
APP_METRICS = {
    *(f"{h}{s}" for h in ("http_server_request_duration_seconds", "cache_operation_duration_seconds",
                          "db_client_operation_duration_seconds") for s in ("_bucket", "_sum", "_count")),
    "http_server_active_requests", "cache_requests_total", "db_client_connection_count",
    "db_client_connection_max", "db_client_connection_timeouts_total", "app_build_info",
    "app_fault_injection_active", "http_server_open_connections", "http_server_connection_max",
    "http_server_rejected_connections_total", "http_server_rejected_requests_total",
    "http_server_idle_timeouts_total", "process_cpu_seconds_total", "process_resident_memory_bytes",
    "process_virtual_memory_bytes", "process_open_fds", "process_max_fds", "process_start_time_seconds",
    "process_threads",
}
EXPORTER_PREFIXES = ("redis_", "pg_", "namedprocess_namegroup_", "node_", "prometheus_", "alertmanager_")
SYNTHETIC = {"up", "scrape_duration_seconds", "ALERTS"}
# Function-like words and PromQL keywords that the tokenizer below must not take for metric names.
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
            "offset", "inf", "nan", "atan2"}
RATE_FUNCS = re.compile(r"\b(rate|irate|increase)\s*\(")

findings = []


def finding(where, message):
    findings.append(f"{where}: {message}")


def recording_rules():
    """Names recorded by alerts/*.yml (a line scan: this lint stays standard-library only)."""
    names = set()
    for path in glob.glob(os.path.join(ROOT, "alerts", "*.yml")):
        with open(path) as f:
            names.update(re.findall(r"^\s*-?\s*record:\s*['\"]?([A-Za-z_:][A-Za-z0-9_:]*)", f.read(), re.M))
    return names


def metric_names(expr):
    """Metric names in a PromQL expression: strings, label matchers, ranges, grouping clauses and numbers are
    dropped; of the identifiers left, those not followed by `(` (functions, aggregations) are metric names."""
    e = live_check.VARIABLE.sub("1", expr)
    e = re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`', '""', e)
    e = re.sub(r"\{[^{}]*\}", " ", e)
    e = re.sub(r"\[[^\]]*\]", " ", e)
    e = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", " ", e)
    e = re.sub(r"(?<![\w:])\d[\w.]*", " ", e)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", e):
        if e[m.end():].lstrip().startswith("(") or m.group(0).lower() in KEYWORDS:
            continue
        names.add(m.group(0))
    return names


def rate_ranges(expr):
    """For each rate()/irate()/increase() call, the text of its range selector (None when it has none)."""
    out = []
    for m in RATE_FUNCS.finditer(expr):
        depth, i = 1, m.end()
        while i < len(expr) and depth:
            depth += {"(": 1, ")": -1}.get(expr[i], 0)
            i += 1
        arg = expr[m.end():i - 1]
        # The range of this call is the last top-level [...] of its argument (a subquery's own [a:b] counts too).
        ranges = re.findall(r"\[([^\]]*)\]\s*(?:offset\s+\S+\s*)?$", arg.strip())
        out.append((m.group(1), ranges[0] if ranges else None))
    return out


def overlaps(a, b):
    return (a["x"] < b["x"] + b["w"] and b["x"] < a["x"] + a["w"]
            and a["y"] < b["y"] + b["h"] and b["y"] < a["y"] + a["h"])


def lint_dashboard(path, known_metrics, uids):
    name = os.path.relpath(path, ROOT)
    try:
        with open(path) as f:
            d = json.load(f)
    except ValueError as e:
        finding(name, f"not valid JSON: {e}")
        return []
    uid = d.get("uid")
    if not isinstance(uid, str) or not UID.match(uid) or len(uid) > 40:
        finding(name, f"uid {uid!r} is not a hand-chosen uid (lowercase words joined by '-', at most 40 chars)")
    elif uid in uids:
        finding(name, f"uid {uid!r} is also used by {uids[uid]}")
    else:
        uids[uid] = name
    if uid and os.path.basename(path) != f"{uid}.json":
        finding(name, f"file should be named {uid}.json after its uid")
    for key in LEFTOVERS:
        if key in d:
            finding(name, f"export leftover at the top level: {key!r}")
    if d.get("schemaVersion") not in SCHEMA_VERSIONS:
        finding(name, f"schemaVersion {d.get('schemaVersion')!r} is not one of {list(SCHEMA_VERSIONS)}")
    if d.get("editable") is not False:
        finding(name, "editable must be false: the dashboard is provisioned read-only from the repository")
    if not d.get("title"):
        finding(name, "no title")

    variables = (d.get("templating") or {}).get("list", [])
    ds_vars = [v for v in variables if v.get("name") == "datasource"]
    if not ds_vars or ds_vars[0].get("type") != "datasource" or ds_vars[0].get("query") != "prometheus":
        finding(name, "needs a template variable `datasource` of type datasource with query `prometheus`")

    panels = list(live_check.iter_panels(d.get("panels")))
    ids, queries = {}, []
    for p in panels:
        pid, title = p.get("id"), p.get("title", "")
        where = f"{name} panel {pid} ({title})"
        if not isinstance(pid, int):
            finding(where, "panel without an integer id")
        elif pid in ids:
            finding(where, f"id {pid} is also used by panel {ids[pid]!r}")
        else:
            ids[pid] = title
        grid = p.get("gridPos") or {}
        if not all(isinstance(grid.get(k), int) for k in "hwxy") or grid["x"] + grid["w"] > 24:
            finding(where, f"gridPos {grid} is not inside the 24-column grid")
        if p.get("type") == "row":
            continue
        if not title:
            finding(where, "no title")
        if not p.get("description"):
            finding(where, "no description (say what the panel shows and which alert, if any, it explains)")
        unit = ((p.get("fieldConfig") or {}).get("defaults") or {}).get("unit")
        if not unit:
            finding(where, "no unit in fieldConfig.defaults.unit")
        if (p.get("datasource") or {}).get("uid") != DATASOURCE_REF:
            finding(where, f"panel datasource must be {{\"uid\": \"{DATASOURCE_REF}\"}}")
        targets = p.get("targets") or []
        if not targets:
            finding(where, "no queries")
        refs = [t.get("refId") for t in targets]
        if len(set(refs)) != len(refs) or None in refs:
            finding(where, f"refIds must be present and unique, got {refs}")
        for t in targets:
            expr = t.get("expr")
            tw = f"{where} query {t.get('refId')}"
            if not expr:
                finding(tw, "no expr")
                continue
            if (t.get("datasource") or {}).get("uid") != DATASOURCE_REF:
                finding(tw, f"query datasource must be {{\"uid\": \"{DATASOURCE_REF}\"}}")
            for func, rng in rate_ranges(expr):
                if rng != "$__rate_interval":
                    finding(tw, f"{func}() must take [$__rate_interval], not [{rng}]")
            for metric in sorted(metric_names(expr)):
                if not (metric in known_metrics or metric in SYNTHETIC or metric.startswith(EXPORTER_PREFIXES)):
                    finding(tw, f"metric {metric!r} is neither an app contract metric, a recording rule, "
                                f"an exporter's nor a Prometheus/Alertmanager metric")
            queries.append((name, pid, t.get("refId"), expr, live_check.substitute(
                expr, live_check.template_values(d))))

    placed = [(p.get("id"), p["gridPos"]) for p in panels
              if all(isinstance((p.get("gridPos") or {}).get(k), int) for k in "hwxy")]
    for i, (ia, a) in enumerate(placed):
        for ib, b in placed[i + 1:]:
            if overlaps(a, b):
                finding(name, f"panels {ia} and {ib} overlap")

    if uid in CONTRACT:
        for pid in CONTRACT[uid]:
            if pid not in ids:
                finding(name, f"contract panel id {pid} is missing (alerts and runbooks link to it)")
        for pid in ids:
            if pid not in CONTRACT[uid] and pid < FIRST_FREE_ID:
                finding(name, f"panel id {pid} is reserved for the contract; use ids >= {FIRST_FREE_ID}")
    return queries


def promtool_check(promtool, queries):
    """Parse every query with promtool by writing them as recording rules."""
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
        f.write("groups:\n  - name: dashboard-queries\n    rules:\n")
        for i, (_, _, _, _, expr) in enumerate(queries):
            f.write(f"      - record: dashboard:query:{i}\n        expr: {json.dumps(expr)}\n")
        rules = f.name
    try:
        r = subprocess.run([promtool, "check", "rules", rules], capture_output=True, text=True)
    finally:
        os.unlink(rules)
    if r.returncode != 0:
        out = r.stdout + r.stderr
        for m in re.finditer(r"dashboard:query:(\d+)", out):
            name, pid, ref, expr, _ = queries[int(m.group(1))]
            finding(f"{name} panel {pid} query {ref}", f"promtool cannot parse: {expr}")
        finding("promtool check rules", out.strip().splitlines()[-1] if out.strip() else f"exit {r.returncode}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dashboards", nargs="?", default=os.path.dirname(HERE))
    ap.add_argument("--promtool", help="promtool binary: also parse every query with `promtool check rules`")
    args = ap.parse_args()

    files = sorted(glob.glob(os.path.join(args.dashboards, "*.json")))
    known = APP_METRICS | recording_rules()
    uids, queries = {}, []
    for path in files:
        queries += lint_dashboard(path, known, uids)
    for uid in CONTRACT:
        if uid not in uids:
            finding(os.path.relpath(args.dashboards, ROOT), f"dashboard {uid!r} ({uid}.json) is missing")
    if args.promtool and queries:
        promtool_check(args.promtool, queries)
    for f in findings:
        print(f"FAIL {f}")
    print(f"lint: {len(files)} dashboards, {len(queries)} queries, {len(findings)} finding(s)"
          + ("" if args.promtool else " (queries not parsed: no --promtool)"))
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
