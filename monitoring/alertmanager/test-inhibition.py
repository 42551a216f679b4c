#!/usr/bin/env python3
"""Inhibition and delivery test of alertmanager.yml against a real Alertmanager (stdlib only).

`amtool config routes test` shows where an alert is routed but knows nothing of inhibition, so this test starts
the real binary (`prometheus-alertmanager` on Debian, or `alertmanager`, or $ALERTMANAGER_BIN) on a temporary
port with temporary storage and gossip off, and a tiny webhook receiver (http.server) on another temporary port.

The configuration under test is a temporary copy of alertmanager.yml in which ONLY the webhook URLs are rewritten,
from the on-call inbox (http://127.0.0.1:8082/hook/...) to the test's receiver: routes, timings, receivers'
names and inhibit rules are the real ones. Nothing of the running stack is touched.

1. Deliveries: one realistic incident is posted at once (Redis down and its symptoms, an SLO burn at both
   severities, an unrelated warning, an info alert, the Watchdog). After group_wait, exactly the expected
   notifications must have reached each receiver: the inhibited ones never, the info one nowhere.
2. Inhibition table (inhibitions.tsv): for each case a source and a target alert are posted (with a unique `case`
   label, which no rule compares), and `GET /api/v2/alerts` must show the target inhibited by exactly that
   source, or not inhibited; then both are resolved.

Usage: monitoring/alertmanager/test-inhibition.py [--table FILE] [--config FILE]. Exit status 1 on any failure.
"""
import argparse
import datetime
import http.server
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
INBOX_URL = "http://127.0.0.1:8082/"


def now_iso(delta_seconds=0.0):
    t = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=delta_seconds)
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_labels(text):
    labels = {}
    for item in text.split():
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ValueError(f"bad label {item!r} (expected name=value)")
        labels[name] = value
    return labels


class Receiver(http.server.ThreadingHTTPServer):
    """Records every webhook notification as (receiver path, status, payload). Like the inbox, it refuses a post
    without the bearer token the configuration sends (its `credentials_file`), so the test also proves the token
    goes out."""

    daemon_threads = True

    def __init__(self, token):
        self.notifications = []
        self.unauthorized = 0
        self.token = token
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), ReceiverHandler)


class ReceiverHandler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        if self.headers.get("Authorization") != f"Bearer {self.server.token}":
            with self.server.lock:
                self.server.unauthorized += 1
            self.send_response(401)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        try:
            payload = json.loads(body)
        except ValueError:
            payload = {"unparsable": body.decode(errors="replace")}
        with self.server.lock:
            self.server.notifications.append((self.path, payload))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):  # quiet: the test prints its own summary
        pass


class Alertmanager:
    def __init__(self, binary, config, workdir):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = os.path.join(workdir, "alertmanager.log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.path={os.path.join(workdir, 'data')}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address=", "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Alertmanager exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=1) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"Alertmanager not ready after {timeout}s:\n{self.logs()}")

    def post(self, alerts):
        req = urllib.request.Request(self.url + "/api/v2/alerts", data=json.dumps(alerts).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(req, timeout=5) as r:
            if r.status != 200:
                raise RuntimeError(f"POST /api/v2/alerts: HTTP {r.status}")

    def alerts(self):
        with urllib.request.urlopen(self.url + "/api/v2/alerts", timeout=5) as r:
            return json.load(r)

    def logs(self):
        self.log.flush()
        with open(self.log_path) as f:
            return f.read()

    def stop(self):
        """SIGTERM, then SIGKILL if it has not exited within 10 s."""
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def alert(labels, starts_at, ends_at=None):
    a = {"labels": labels, "annotations": {"summary": "test-inhibition"}, "startsAt": starts_at}
    if ends_at:
        a["endsAt"] = ends_at
    return a



def firing_by_receiver(receiver):
    """{receiver path: {(alertname, severity)}} of every firing alert the receiver has been sent so far."""
    got = {}
    with receiver.lock:
        for path, payload in receiver.notifications:
            for a in payload.get("alerts", []):
                if a.get("status") == "firing":
                    got.setdefault(path, set()).add((a["labels"].get("alertname"), a["labels"].get("severity")))
    return got

def test_deliveries(am, receiver, failures):
    """A Redis outage with its symptoms, an SLO burn, an unrelated ticket, an info alert and the Watchdog."""
    incident = [
        {"alertname": "Watchdog", "severity": "none", "service": "monitoring"},
        {"alertname": "RedisDown", "severity": "critical", "service": "redis", "job": "redis"},
        {"alertname": "AppCacheErrors", "severity": "warning", "service": "app", "job": "app"},
        {"alertname": "AppCacheHitRatioLow", "severity": "warning", "service": "app", "job": "app"},
        {"alertname": "PrometheusTargetDown", "severity": "warning", "service": "monitoring", "job": "redis"},
        {"alertname": "AppAvailabilityBudgetBurn", "severity": "critical", "service": "app"},
        {"alertname": "AppAvailabilityBudgetBurn", "severity": "warning", "service": "app"},
        {"alertname": "PostgresDeadlocks", "severity": "warning", "service": "postgres", "job": "postgres",
         "datname": "app"},
        {"alertname": "AppFaultInjectionActive", "severity": "info", "service": "app", "job": "app",
         "kind": "errors"},
    ]
    expected = {
        "/hook/heartbeat": {("Watchdog", "none")},
        "/hook/pager": {("RedisDown", "critical"), ("AppAvailabilityBudgetBurn", "critical")},
        "/hook/ticket": {("PostgresDeadlocks", "warning")},
    }
    start = now_iso()
    am.post([alert(labels, start) for labels in incident])
    # Every group waits group_wait (10s; the Watchdog 0s) before its first notification; inhibited alerts are
    # dropped at that moment. Wait for the expected ones, then a little longer so that extra ones would show.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        got = firing_by_receiver(receiver)
        if all(expected[p] <= got.get(p, set()) for p in expected):
            break
        time.sleep(0.25)
    time.sleep(3)
    got = firing_by_receiver(receiver)
    for path in sorted(set(expected) | set(got)):
        exp, have = expected.get(path, set()), got.get(path, set())
        if exp == have:
            print(f"  ok    delivery {path}: {', '.join(sorted(f'{n}({s})' for n, s in have))}")
        else:
            failures.append(f"delivery {path}: expected {sorted(exp)}, got {sorted(have)}")
            print(f"  FAIL  delivery {path}: expected {sorted(exp)}, got {sorted(have)}")
    # Resolve the incident so that it cannot inhibit anything in the table tests.
    am.post([alert(labels, start, now_iso()) for labels in incident])


def read_table(path):
    cases = []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            cols = line.split("\t")
            if len(cols) != 3 or cols[2] not in ("inhibited", "notified"):
                raise ValueError(f"{path}:{lineno}: expected 'source<TAB>target<TAB>inhibited|notified'")
            cases.append((lineno, parse_labels(cols[0]), parse_labels(cols[1]), cols[2]))
    return cases


def find(alerts, labels):
    for a in alerts:
        if a["labels"] == labels:
            return a
    return None


def test_table(am, cases, failures):
    for lineno, source, target, expected in cases:
        case = str(lineno)
        source = dict(source, case=case)
        target = dict(target, case=case)
        start = now_iso()
        am.post([alert(source, start), alert(target, start)])
        # The inhibitor learns about alerts asynchronously (and forgets resolved sources of earlier cases the same
        # way): poll until the expected state shows, for a few seconds.
        deadline = time.monotonic() + 5
        state = "missing"
        while time.monotonic() < deadline:
            alerts = am.alerts()
            src, tgt = find(alerts, source), find(alerts, target)
            if src and tgt:
                inhibited_by = tgt["status"].get("inhibitedBy") or []
                if inhibited_by == [src["fingerprint"]]:
                    state = "inhibited"
                elif not inhibited_by:
                    state = "notified"
                else:
                    state = f"inhibited by another alert ({inhibited_by})"
                if state == expected:
                    break
            time.sleep(0.1)
        what = f"{source['alertname']} -> {target['alertname']} ({' '.join(f'{k}={v}' for k, v in target.items() if k not in ('alertname', 'case'))})"
        if state == expected:
            print(f"  ok    line {lineno}: {what}: {expected}")
        else:
            failures.append(f"inhibitions.tsv line {lineno}: {what}: expected {expected}, got {state}")
            print(f"  FAIL  line {lineno}: {what}: expected {expected}, got {state}")
        am.post([alert(source, start, now_iso()), alert(target, start, now_iso())])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=os.path.join(HERE, "alertmanager.yml"))
    parser.add_argument("--table", default=os.path.join(HERE, "inhibitions.tsv"))
    args = parser.parse_args()

    binary = os.environ.get("ALERTMANAGER_BIN") or shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if not binary:
        print("test-inhibition: no prometheus-alertmanager (or alertmanager) binary on PATH", file=sys.stderr)
        return 1
    cases = read_table(args.table)

    workdir = tempfile.mkdtemp(prefix="am-inhibition-")
    # The webhook token the configuration reads from secrets/ beside it; a test one here.
    token = secrets.token_hex(16)
    os.mkdir(os.path.join(workdir, "secrets"), 0o700)
    with open(os.path.join(workdir, "secrets", "webhook.token"), "w") as f:
        f.write(token + "\n")
    receiver = Receiver(token)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    am = None
    failures = []
    try:
        # The only change to the configuration under test: webhook URLs point at this test's receiver.
        with open(args.config) as f:
            text = f.read()
        count = text.count(INBOX_URL)
        if count == 0:
            print(f"test-inhibition: no webhook URL {INBOX_URL}... in {args.config} to redirect", file=sys.stderr)
            return 1
        config = os.path.join(workdir, "alertmanager.yml")
        with open(config, "w") as f:
            f.write(text.replace(INBOX_URL, f"http://127.0.0.1:{receiver.server_port}/"))

        am = Alertmanager(binary, config, workdir)
        am.wait_ready()
        print(f"test-inhibition: Alertmanager on {am.url}, webhook receiver on 127.0.0.1:{receiver.server_port} "
              f"({count} webhook URLs redirected in a temporary copy of the config)")
        print("deliveries of one incident after group_wait:")
        test_deliveries(am, receiver, failures)
        print(f"inhibition table ({os.path.basename(args.table)}, {len(cases)} cases):")
        test_table(am, cases, failures)
        if receiver.unauthorized:
            failures.append(f"{receiver.unauthorized} webhook post(s) without the bearer token")
    except Exception as e:  # report the setup failure with Alertmanager's log, then clean up
        failures.append(f"{type(e).__name__}: {e}")
        if am:
            print(am.logs(), file=sys.stderr)
    finally:
        if am:
            am.stop()
        receiver.shutdown()
        shutil.rmtree(workdir, ignore_errors=True)

    if failures:
        print(f"test-inhibition: {len(failures)} failure(s):", file=sys.stderr)
        for f in failures:
            print(f"  {f}", file=sys.stderr)
        return 1
    print("test-inhibition: all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
