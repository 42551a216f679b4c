#!/usr/bin/python3
"""Repository consistency: alerts, runbooks, dashboards and the metric names they use agree with each other
and with what the running services really expose.

Checks, each failure printed with the file it comes from:
  * every alert has runbooks/<Alert>.md and every runbook an alert; runbooks have the four sections and no TODO;
    runbooks/README.md lists every alert;
  * every runbook_url points at that runbook, every dashboard link (in alerts and runbooks) at an existing
    dashboard uid and panel id;
  * every metric name used by a rule, a dashboard query or a runbook PromQL block exists in the live exposition
    (the metric names Prometheus has scraped from every target of the running stack) or is a recording rule.

Usage: monitoring/consistency/check.py --prometheus URL   (or --static-only to skip the metric-name check, which
needs the running stack).
"""
import argparse
import base64
import glob
import json
import os
import re
import sys
import urllib.request

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SECTIONS = ["Meaning", "Impact", "Diagnosis", "Mitigation"]
RUNBOOK_URL = re.compile(r"^https?://[^/]+/runbooks/(?P<name>[A-Za-z0-9]+)\.md$")
DASHBOARD_LINK = re.compile(r"https?://[^/\s]+/d/(?P<uid>[A-Za-z0-9_-]+)/[^\s)\"']*?viewPanel=(?P<panel>\d+)")

# PromQL words that are not metric names.
KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
            "offset", "inf", "nan", "start", "end", "atan2"}

failures = []


def fail(where, message):
    failures.append(f"{os.path.relpath(where, ROOT)}: {message}")


def metric_names(expr):
    """Metric names referenced by a PromQL expression (a tokenizer, not a full parser: strings, label matchers,
    grouping clauses, durations and function calls are removed; the identifiers left are metric names)."""
    e = re.sub(r"\$\{?__\w+\}?|\$\{?\w+\}?", "1", expr)          # Grafana variables
    e = re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`', '""', e)  # string literals
    e = re.sub(r"\{[^{}]*\}", "", e)                              # label matchers
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", " ", e)
    e = re.sub(r"\[[^\]]*\]", "", e)                               # range and subquery durations
    e = re.sub(r"\b\d+(\.\d+)?(e[+-]?\d+)?([smhdwy]|ms)?\b", " ", e)  # numbers and durations
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", e):
        word = m.group(0)
        rest = e[m.end():].lstrip()
        if rest.startswith("(") or word.lower() in KEYWORDS:
            continue                                               # function, aggregation or keyword
        names.add(word)
    return names


def load_rules():
    alerts, records, exprs = {}, set(), []
    for path in sorted(glob.glob(os.path.join(ROOT, "alerts", "*.yml"))):
        doc = yaml.safe_load(open(path)) or {}
        for group in doc.get("groups", []):
            for rule in group.get("rules", []):
                exprs.append((path, str(rule["expr"])))
                if "record" in rule:
                    records.add(rule["record"])
                else:
                    alerts.setdefault(rule["alert"], []).append((path, rule))
    return alerts, records, exprs


def load_dashboards():
    dashboards, exprs = {}, []
    for path in sorted(glob.glob(os.path.join(ROOT, "dashboards", "*.json"))):
        doc = json.load(open(path))
        panels = []
        stack = list(doc.get("panels", []))
        while stack:
            p = stack.pop()
            panels.append(p)
            stack.extend(p.get("panels", []))
        dashboards[doc["uid"]] = {p["id"] for p in panels if "id" in p}
        for p in panels:
            for t in p.get("targets", []):
                if t.get("expr"):
                    exprs.append((path, t["expr"]))
    return dashboards, exprs


def check_link(where, url, dashboards):
    m = DASHBOARD_LINK.search(url)
    if not m:
        fail(where, f"dashboard link {url!r} is not of the form http://host/d/<uid>/?viewPanel=<id>")
    elif m["uid"] not in dashboards:
        fail(where, f"dashboard link {url!r}: no dashboard with uid {m['uid']!r}")
    elif int(m["panel"]) not in dashboards[m["uid"]]:
        fail(where, f"dashboard link {url!r}: dashboard {m['uid']!r} has no panel {m['panel']}")


def check_static():
    alerts, records, rule_exprs = load_rules()
    dashboards, dashboard_exprs = load_dashboards()
    runbook_exprs = []
    if not alerts:
        fail(os.path.join(ROOT, "alerts"), "no alerting rules found")

    for name, rules in alerts.items():
        for path, rule in rules:
            ann = rule.get("annotations", {})
            for key in ("summary", "description", "runbook_url", "dashboard_url"):
                if not ann.get(key):
                    fail(path, f"{name}: missing annotation {key}")
            m = RUNBOOK_URL.match(ann.get("runbook_url", ""))
            if not m or m["name"] != name:
                fail(path, f"{name}: runbook_url {ann.get('runbook_url')!r} does not point at runbooks/{name}.md")
            if ann.get("dashboard_url"):
                check_link(path, ann["dashboard_url"], dashboards)

    runbooks = {os.path.basename(p)[:-3]: p for p in glob.glob(os.path.join(ROOT, "runbooks", "*.md"))
                if os.path.basename(p) != "README.md"}
    for name in sorted(set(alerts) - set(runbooks)):
        fail(os.path.join(ROOT, "runbooks"), f"alert {name} has no runbooks/{name}.md")
    for name in sorted(set(runbooks) - set(alerts)):
        fail(runbooks[name], "runbook for an alert that does not exist")
    for name, path in sorted(runbooks.items()):
        text = open(path).read()
        if not text.startswith(f"# {name}\n"):
            fail(path, f"must start with '# {name}'")
        headings = re.findall(r"^## (.+?)\s*$", text, re.M)
        for s in SECTIONS:
            if s not in headings:
                fail(path, f"missing section '## {s}'")
        if re.search(r"\b(TODO|TBD|FIXME|XXX)\b", text):
            fail(path, "contains a TODO/TBD marker")
        for url in re.findall(r"https?://[^/\s]+/d/[^\s)>\]]+", text):
            check_link(path, url, dashboards)
        for block in re.findall(r"```promql\n(.*?)```", text, re.S):
            runbook_exprs.append((path, block))
    index = os.path.join(ROOT, "runbooks", "README.md")
    index_text = open(index).read() if os.path.exists(index) else ""
    for name in sorted(alerts):
        if f"{name}.md" not in index_text:
            fail(index, f"does not link {name}.md")
    # The alert tables of README.md and runbooks/README.md are generated from the rules and the routing
    # (`cargo run -p xtask -- generate --check` fails when they are stale), so they are not checked here.
    return records, rule_exprs + dashboard_exprs + runbook_exprs


def exposed_names(prometheus, password_file):
    headers = {}
    if password_file:  # the stack's Prometheus answers only with its web credentials (user admin)
        with open(password_file) as f:
            headers["Authorization"] = "Basic " + base64.b64encode(f"admin:{f.read().strip()}".encode()).decode()
    request = urllib.request.Request(f"{prometheus}/api/v1/label/__name__/values", headers=headers)
    with urllib.request.urlopen(request, timeout=10) as r:
        return set(json.load(r)["data"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prometheus", help="URL of the running stack's Prometheus")
    ap.add_argument("--static-only", action="store_true", help="skip the metric-name check")
    ap.add_argument("--password-file", default=os.environ.get("PROMETHEUS_PASSWORD_FILE"),
                    help="file holding the basic-auth password of Prometheus, user admin "
                         "(default $PROMETHEUS_PASSWORD_FILE, which native/env.sh sets)")
    args = ap.parse_args()

    records, exprs = check_static()
    if args.static_only:
        pass
    elif not args.prometheus:
        failures.append("the metric-name check needs --prometheus URL (or --static-only)")
    else:
        known = exposed_names(args.prometheus, args.password_file) | records
        for path, expr in exprs:
            for name in sorted(metric_names(expr)):
                if name not in known:
                    fail(path, f"metric {name!r} is not exposed by any target of the running stack "
                               f"(used in: {' '.join(expr.split())[:120]})")
    for f in sorted(set(failures)):
        print(f"FAIL {f}")
    used = len(exprs)
    print(f"consistency: {len(set(failures))} failure(s) across {used} PromQL expressions")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
