#!/usr/bin/python3
"""Conventions of alerts/*.yml that promtool does not check, and the coverage of their tests and routing table.

  * every alerting rule: CamelCase name with a component prefix (App, Redis, Postgres, Prometheus, Alertmanager,
    or Watchdog itself); labels `severity` (critical|warning|info|none, `none` only for Watchdog) and `service`
    (app|redis|postgres|monitoring); annotations summary (static), description (templated), runbook_url
    (http://localhost:8082/runbooks/<Alert>.md) and dashboard_url (http://localhost:3000/d/<uid>/?viewPanel=<id>);
  * every rule file has alerts/tests/<file> (slo.yml may have more, e.g. slo_long.yml); every alert has, in the
    tests, a case where it fires (asserting labels and all four annotations) and one where it must not (except
    Watchdog, which is vector(1)); every recording rule is checked by a promql_expr_test;
  * monitoring/alertmanager/routes.tsv has a row for every (alert, severity) with the receiver of that severity.

Usage: monitoring/lint-rules.py   (exit 1 and one line per problem on failure)
"""
import glob
import os
import re
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAME = re.compile(r"^(App|Redis|Postgres|Prometheus|Alertmanager)[A-Z][A-Za-z0-9]*$|^Watchdog$")
SEVERITIES = {"critical", "warning", "info", "none"}
SERVICES = {"app", "redis", "postgres", "monitoring"}
RECEIVER = {"critical": "pager", "warning": "ticket", "info": "blackhole", "none": "heartbeat"}
DASHBOARD = re.compile(r"^http://localhost:3000/d/[a-z0-9-]+/\?viewPanel=\d+$")
ANNOTATIONS = {"summary", "description", "runbook_url", "dashboard_url"}

problems = []


def problem(path, message):
    problems.append(f"{os.path.relpath(path, ROOT)}: {message}")


def main():
    alerts = {}   # name -> [(path, severity)]
    records = {}  # name -> path
    for path in sorted(glob.glob(os.path.join(ROOT, "alerts", "*.yml"))):
        doc = yaml.safe_load(open(path)) or {}
        test = os.path.join(ROOT, "alerts", "tests", os.path.basename(path))
        if not os.path.exists(test):
            problem(path, f"no test file alerts/tests/{os.path.basename(path)}")
        for group in doc.get("groups", []):
            for rule in group.get("rules", []):
                if "record" in rule:
                    records[rule["record"]] = path
                    continue
                name = rule["alert"]
                labels, ann = rule.get("labels", {}), rule.get("annotations", {})
                sev = labels.get("severity")
                alerts.setdefault(name, []).append((path, sev))
                if not NAME.match(name):
                    problem(path, f"{name}: not CamelCase with a component prefix")
                if sev not in SEVERITIES or (sev == "none") != (name == "Watchdog"):
                    problem(path, f"{name}: severity {sev!r} (critical|warning|info; none only for Watchdog)")
                if labels.get("service") not in SERVICES:
                    problem(path, f"{name}: service {labels.get('service')!r} not one of {sorted(SERVICES)}")
                if set(ann) != ANNOTATIONS:
                    problem(path, f"{name}: annotations {sorted(ann)}, expected {sorted(ANNOTATIONS)}")
                if "{{" in ann.get("summary", ""):
                    problem(path, f"{name}: summary must be static (no template)")
                if "{{" not in ann.get("description", ""):
                    problem(path, f"{name}: description must be templated")
                if ann.get("runbook_url") != f"http://localhost:8082/runbooks/{name}.md":
                    problem(path, f"{name}: runbook_url {ann.get('runbook_url')!r}")
                if not DASHBOARD.match(ann.get("dashboard_url", "")):
                    problem(path, f"{name}: dashboard_url {ann.get('dashboard_url')!r}")

    fires, silent, exprs = set(), set(), set()
    for path in sorted(glob.glob(os.path.join(ROOT, "alerts", "tests", "*.yml"))):
        doc = yaml.safe_load(open(path)) or {}
        for test in doc.get("tests", []):
            for case in test.get("alert_rule_test", []) or []:
                name, exp = case.get("alertname"), case.get("exp_alerts") or []
                if name not in alerts:
                    problem(path, f"test of unknown alert {name!r}")
                if not exp:
                    silent.add(name)
                for a in exp:
                    lab, ann = a.get("exp_labels") or {}, a.get("exp_annotations") or {}
                    if "severity" in lab and "service" in lab and set(ann) == ANNOTATIONS:
                        fires.add(name)
                    else:
                        problem(path, f"{name}: a firing case must assert severity, service and all annotations")
            for case in test.get("promql_expr_test", []) or []:
                exprs.update(re.findall(r"[a-z_]+:[a-z_]+:[a-z_0-9]+", case.get("expr", "")))
    for name, where in sorted(alerts.items()):
        if name not in fires:
            problem(where[0][0], f"{name}: no test case where it fires")
        if name not in silent and name != "Watchdog":
            problem(where[0][0], f"{name}: no test case where it must not fire")
    for name, path in sorted(records.items()):
        if name not in exprs:
            problem(path, f"recording rule {name}: no promql_expr_test")

    table = os.path.join(ROOT, "monitoring", "alertmanager", "routes.tsv")
    rows = set()
    for line in open(table):
        if line.strip() and not line.startswith("#"):
            receiver, _, labels = line.rstrip("\n").partition("\t")
            lab = dict(item.split("=", 1) for item in labels.split())
            rows.add((lab.get("alertname"), lab.get("severity"), receiver))
    for name, where in sorted(alerts.items()):
        for path, sev in where:
            if (name, sev, RECEIVER.get(sev)) not in rows:
                problem(table, f"no row routing {name} (severity {sev}) to {RECEIVER.get(sev)}")

    for p in problems:
        print(p)
    print(f"lint-rules: {sum(len(v) for v in alerts.values())} alerting rules ({len(alerts)} alerts), "
          f"{len(records)} recording rules, {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
