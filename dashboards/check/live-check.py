#!/usr/bin/env python3
"""Runs every query of every dashboard against a live Prometheus and reports the panels that would break.

For each panel target with an `expr`, Grafana's variables are replaced the way Grafana would expand them
($__rate_interval by --rate-interval, $__interval by --interval, $__range by --range, template variables by their
saved value, or `.*` when they have none; the datasource variable is irrelevant: the query goes to the URL given).
The query then runs as an instant query, and, when that returns nothing, as a range query over the last --range.

A panel FAILS when any of its queries is rejected by Prometheus (syntax error, unknown function, bad vector
matching, ...). A panel has NO DATA when none of its queries returns a series, which is what Grafana shows as
"No data"; that fails the run only with --require-data (run it after `make load`, when every panel should have
something to show). A query that returns nothing in a panel that has data from another query is listed as a note.

Usage:
  live-check.py [--require-data] [--dashboards DIR] [--rate-interval 1m] PROMETHEUS_URL
  live-check.py [--require-data] ... --prometheus PROMETHEUS_URL         (the same, as an option)

Exit status: 0 when every panel passed, 1 when one failed, 2 on a usage or connection problem.
Python 3 standard library only.
"""
import argparse
import base64
import glob
import json
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DASHBOARDS = os.path.dirname(HERE)

# $name, ${name} and ${name:format}; Grafana's built-ins start with two underscores.
VARIABLE = re.compile(r"\$(?:\{(?P<braced>\w+)(?::(?P<fmt>\w+))?\}|(?P<plain>\w+))")


def iter_panels(panels):
    """Every panel, rows' nested panels included (collapsed rows keep theirs in `panels`)."""
    for panel in panels or []:
        yield panel
        yield from iter_panels(panel.get("panels"))


def template_values(dashboard):
    """Value to substitute for each template variable: its saved value (a list becomes a regex alternation,
    "All" becomes the variable's allValue or `.*`), or `.*` when nothing is saved. Datasource variables get
    None: they pick where a query goes, not what it says."""
    values = {}
    for var in (dashboard.get("templating") or {}).get("list", []):
        name = var.get("name")
        if not name:
            continue
        if var.get("type") == "datasource":
            values[name] = None
            continue
        current = (var.get("current") or {}).get("value")
        if current in (None, "", []):
            values[name] = ".*"
        elif current in ("$__all", ["$__all"]):
            values[name] = var.get("allValue") or ".*"
        elif isinstance(current, list):
            values[name] = "|".join(current) if len(current) > 1 else current[0]
        else:
            values[name] = str(current)
    return values


def duration_seconds(text):
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    total, pos = 0.0, 0
    for m in re.finditer(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)", text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * units[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise ValueError(f"not a duration: {text!r}")
    return total


def substitute(expr, template, rate_interval="1m", interval="15s", range_="5m"):
    """The expression as Grafana would send it, for the given built-in values and template values."""
    interval_s = duration_seconds(interval)
    range_s = duration_seconds(range_)
    builtins = {
        "__rate_interval": rate_interval,
        "__rate_interval_ms": str(int(duration_seconds(rate_interval) * 1000)),
        "__interval": interval,
        "__interval_ms": str(int(interval_s * 1000)),
        "__range": range_,
        "__range_s": str(int(range_s)),
        "__range_ms": str(int(range_s * 1000)),
    }

    def repl(m):
        name = m.group("braced") or m.group("plain")
        if name in builtins:
            return builtins[name]
        if name in template:
            return template[name] if template[name] is not None else m.group(0)
        return ".*"  # an unknown variable: match anything, as a multi-value "All" would

    return VARIABLE.sub(repl, expr)


def dashboard_queries(path, **durations):
    """(uid, panel id, panel title, refId, expression as sent) for every query of a dashboard file."""
    with open(path) as f:
        dashboard = json.load(f)
    template = template_values(dashboard)
    for panel in iter_panels(dashboard.get("panels")):
        for target in panel.get("targets") or []:
            expr = target.get("expr")
            if not expr or target.get("hide"):
                continue
            yield (dashboard.get("uid", os.path.basename(path)), panel.get("id"), panel.get("title", ""),
                   target.get("refId", "?"), substitute(expr, template, **durations))


class Prometheus:
    def __init__(self, url, timeout, password_file=None):
        self.url = url.rstrip("/")
        self.timeout = timeout
        # The stack's Prometheus answers only with its web credentials (user admin, basic auth).
        self.headers = {}
        if password_file:
            with open(password_file) as f:
                token = base64.b64encode(f"admin:{f.read().strip()}".encode()).decode()
            self.headers["Authorization"] = f"Basic {token}"

    def _get(self, path, params):
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=self.headers), timeout=self.timeout) as r:
                body = json.load(r)
        except urllib.error.HTTPError as e:
            # Prometheus answers a bad query with 400/422 and a JSON error body.
            try:
                body = json.load(e)
            except ValueError:
                return None, f"HTTP {e.code}"
        if body.get("status") != "success":
            return None, f"{body.get('errorType', 'error')}: {body.get('error', body)}"
        return body["data"], None

    def query(self, expr, range_seconds, step):
        """(number of series or samples returned, error); tries a range query when the instant one is empty."""
        data, err = self._get("/api/v1/query", {"query": expr})
        if err:
            return 0, err
        if data["result"]:
            return (1 if data["resultType"] == "scalar" else len(data["result"])), None
        now = time.time()
        data, err = self._get("/api/v1/query_range",
                              {"query": expr, "start": now - range_seconds, "end": now, "step": step})
        if err:
            return 0, err
        return len(data["result"]), None

    def reachable(self):
        data, err = self._get("/api/v1/query", {"query": "vector(1)"})
        return err


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("url", nargs="?", metavar="PROMETHEUS_URL", help="base URL of Prometheus, e.g. http://127.0.0.1:9090")
    ap.add_argument("--prometheus", help="the same URL, as an option")
    ap.add_argument("--require-data", action="store_true", help="fail panels whose queries all return nothing")
    ap.add_argument("--dashboards", default=DEFAULT_DASHBOARDS, help="folder of dashboard JSON files")
    ap.add_argument("--rate-interval", default="1m", help="value of $__rate_interval (default 1m)")
    ap.add_argument("--interval", default="15s", help="value of $__interval, also the range step (default 15s)")
    ap.add_argument("--range", default="5m", help="value of $__range and the range-query window (default 5m)")
    ap.add_argument("--timeout", type=float, default=15, help="seconds per HTTP request (default 15)")
    ap.add_argument("--password-file", default=os.environ.get("PROMETHEUS_PASSWORD_FILE"),
                    help="file holding the basic-auth password of Prometheus, user admin "
                         "(default $PROMETHEUS_PASSWORD_FILE, which native/env.sh sets)")
    args = ap.parse_args()
    if bool(args.url) == bool(args.prometheus):
        ap.error("give the Prometheus URL once, as PROMETHEUS_URL or --prometheus URL")
    args.prometheus = args.prometheus or args.url

    files = sorted(glob.glob(os.path.join(args.dashboards, "*.json")))
    if not files:
        print(f"live-check: no dashboards in {args.dashboards}", file=sys.stderr)
        return 2
    try:
        durations = dict(rate_interval=args.rate_interval, interval=args.interval, range_=args.range)
        range_seconds, step = duration_seconds(args.range), duration_seconds(args.interval)
    except ValueError as e:
        print(f"live-check: {e}", file=sys.stderr)
        return 2
    prom = Prometheus(args.prometheus, args.timeout, args.password_file)
    try:
        err = prom.reachable()
    except (urllib.error.URLError, OSError) as e:
        err = str(e)
    if err:
        print(f"live-check: cannot query {args.prometheus}: {err}", file=sys.stderr)
        return 2

    panels = {}  # (uid, id) -> {"title", "errors": [], "empty": [], "data": bool}
    for path in files:
        for uid, pid, title, ref, expr in dashboard_queries(path, **durations):
            p = panels.setdefault((uid, pid), {"title": title, "errors": [], "empty": [], "data": False})
            try:
                count, err = prom.query(expr, range_seconds, step)
            except (urllib.error.URLError, OSError) as e:
                count, err = 0, f"request failed: {e}"
            if err:
                p["errors"].append(f"{ref}: {err}\n      {expr}")
            elif count:
                p["data"] = True
            else:
                p["empty"].append(f"{ref}: {expr}")

    ok = failed = nodata = 0
    for (uid, pid), p in panels.items():
        name = f"{uid} panel {pid} ({p['title']})"
        if p["errors"]:
            failed += 1
            for e in p["errors"]:
                print(f"FAIL {name}: query {e}")
        elif not p["data"]:
            nodata += 1
            word = "FAIL" if args.require_data else "WARN"
            print(f"{word} {name}: no data from any query")
            for e in p["empty"]:
                print(f"      {e}")
        else:
            ok += 1
            for e in p["empty"]:
                print(f"note {name}: query {e.split(':', 1)[0]} returned nothing (the panel has data from another)")
    print(f"live-check: {len(panels)} panels in {len(files)} dashboards: {ok} ok, {nodata} without data, "
          f"{failed} with query errors (against {args.prometheus}, $__rate_interval={args.rate_interval})")
    if failed or (args.require_data and nodata):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
