#!/usr/bin/env python3
"""The benchmark behind `make bench` (run it through app/bench/bench.sh, which installs, builds and starts
Postgres and Redis first). Standard library only.

It starts four servers on free loopback ports: the app as the native stack runs it (full instrumentation: JSON
request log line, metrics; fault injection off, its production default), the same app with
APP_METRICS_ENABLED=false, the same app with APP_LOG_LEVEL=warn (no request log line or span: what they cost),
and the bare `ceiling`. Then, with wrk:

1. GET /helloworld at full speed on all four, interleaved (A, B, C, D, A, B, C, D, ...), medians per server;
2. cache-hit GET /get/{key} on the app (all three settings) and on the ceiling, interleaved the same way; the cache-miss
   path (key in Postgres, not in Redis) and POST /set at full speed; and p50/p99 of hit, miss and set at a fixed
   moderate rate (wrk's delay() paces each connection);
3. GET /metrics on the admin listener after every route has been used (real series count), timed client-side,
   and in-process at 1x and 10x the route/status pairs (`metrics-render`);
4. VmRSS of the app, idle after startup and the peak sampled while wrk drives it.

The ceiling reads the app's cache entries, `app:kv:<epoch>:<key>`: once the app has filled the hit key, this reads
the epoch from Postgres (`kv_cache_epoch`) and starts the ceiling with it in CEILING_CACHE_EPOCH.

Credentials come from APP_DATABASE_URL and APP_REDIS_URL (native/env.sh's load_secrets) and reach the servers and
tools through their environment only, never their command line, which `ps` shows to every local user: psql gets
PGPASSWORD, redis-cli REDISCLI_AUTH with --user, and Redis' own GET throughput is measured by `redis-get` (this
crate) reading APP_REDIS_URL, because redis-benchmark takes a password on its command line only.

Prints one table and writes it as markdown (and the raw figures as JSON) into --out-dir.
"""

import argparse
import json
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

# Every wrk script ends with this: it prints the run's figures as one JSON line, so nothing parses wrk's prose.
REPORT_LUA = r"""
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"errors":%d,"non_2xx":%d,'
    .. '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
"""

# Each wrk thread gets an id, so that scripts generating keys never collide across threads.
THREAD_IDS_LUA = r"""
local next_id = 0
function setup(thread)
  next_id = next_id + 1
  thread:set("tid", next_id)
end
"""

# Paces each connection: one request per `interval` ms, so C connections give C*1000/interval requests/s as long
# as responses take much less than the interval (they do at the moderate rate used here).
PACE_LUA = r"""
function delay()
  return {interval}
end
"""

MISS_LUA = r"""
local n = 0
function request()
  n = n + 1
  return wrk.format("GET", "/get/{prefix}" .. tid .. "-" .. n)
end
"""

SET_LUA = r"""
local n = 0
function request()
  n = n + 1
  local body = '{{"key":"bench-set-' .. tid .. '-' .. (n % 1000) .. '","value":{{"n":' .. n .. ',"s":"bench"}}}}'
  return wrk.format("POST", "/set", {{["Content-Type"] = "application/json"}}, body)
end
"""


def log(message):
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def psql_access(url):
    """psql's connection URL without the password, and the environment that carries the password (PGPASSWORD)."""
    u = urllib.parse.urlsplit(url)
    env = dict(os.environ)
    env.pop("PGPASSWORD", None)
    if u.password is not None:
        env["PGPASSWORD"] = urllib.parse.unquote(u.password)
    netloc = u.hostname or ""
    if u.username:
        netloc = f"{urllib.parse.quote(urllib.parse.unquote(u.username), safe='')}@{netloc}"
    if u.port:
        netloc += f":{u.port}"
    return urllib.parse.urlunsplit((u.scheme, netloc, u.path, u.query, "")), env


def redis_cli_access(url):
    """redis-cli's arguments for a redis:// URL without the password, and the environment that carries it
    (REDISCLI_AUTH, sent with --user as `AUTH user password`)."""
    u = urllib.parse.urlsplit(url)
    argv = ["redis-cli", "-h", u.hostname or "127.0.0.1", "-p", str(u.port or 6379)]
    if u.username:
        argv += ["--user", urllib.parse.unquote(u.username)]
    if u.path.strip("/"):
        argv += ["-n", u.path.strip("/")]
    env = dict(os.environ)
    env.pop("REDISCLI_AUTH", None)
    if u.password is not None:
        env["REDISCLI_AUTH"] = urllib.parse.unquote(u.password)
    return argv, env


def resp_command(*args):
    """One command in Redis' wire format, for `redis-cli --pipe` (any key, whatever bytes it holds)."""
    out = [f"*{len(args)}\r\n".encode()]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        out += [f"${len(b)}\r\n".encode(), b, b"\r\n"]
    return b"".join(out)


def http(method, url, body=None, timeout=5):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def cpu_seconds(pid):
    """User plus system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid, field="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} for pid {pid}")


class Server:
    """A server process of the benchmark, its log file truncated between runs so the disk does not fill up."""

    def __init__(self, name, argv, env, port, admin_port, ready_path, out_dir, pids_file):
        self.name, self.port, self.admin_port = name, port, admin_port
        self.base = f"http://127.0.0.1:{port}"
        self.log_path = os.path.join(out_dir, f"{name}.log")
        # Append mode: truncating the file from outside keeps the process writing at the (new) end.
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(argv, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        with open(pids_file, "a") as f:
            f.write(f"{self.proc.pid}\n")
        deadline = time.time() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {self.proc.returncode}; see {self.log_path}")
            try:
                if http("GET", self.base + ready_path, timeout=1)[0] == 200:
                    break
            except OSError:
                pass
            if time.time() > deadline:
                raise RuntimeError(f"{name} did not answer {ready_path} within 30 s; see {self.log_path}")
            time.sleep(0.1)

    def truncate_log(self):
        os.truncate(self.log_path, 0)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


class RssSampler:
    """Samples a process's VmRSS every 50 ms while a run lasts; keeps the peak."""

    def __init__(self, pid):
        self.pid, self.peak_kib, self._stop = pid, 0, threading.Event()

    def __enter__(self):
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak_kib = max(self.peak_kib, rss_kib(self.pid))
            self._stop.wait(0.05)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


class Bench:
    def __init__(self, args, database_url, redis_url):
        # The URLs carry passwords: kept out of `args`, which results.json records.
        self.args, self.database_url, self.redis_url = args, database_url, redis_url
        self.results = {}
        self.scripts = tempfile.mkdtemp(prefix="wrk-", dir=args.out_dir)
        self.rss_peak_kib = 0

    def script(self, name, body):
        path = os.path.join(self.scripts, name + ".lua")
        with open(path, "w") as f:
            f.write(THREAD_IDS_LUA + body + REPORT_LUA)
        return path

    def wrk(self, server, path, script_body="", threads=None, connections=None, duration=None, name="run",
            base=None):
        """One wrk run against `server` (or `base`, another listener of it); samples the app's RSS meanwhile."""
        threads = threads or self.args.threads
        connections = connections or self.args.connections
        duration = duration or self.args.duration
        argv = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration}s", "--timeout", "5s",
                "-s", self.script(name, script_body), (base or server.base) + path]
        sampler = RssSampler(server.proc.pid) if server.name == "app" else None
        cpu_before = cpu_seconds(server.proc.pid)
        if sampler:
            with sampler:
                out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
            self.rss_peak_kib = max(self.rss_peak_kib, sampler.peak_kib)
        else:
            out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
        match = re.search(r"^BENCH_JSON (\{.*\})$", out, re.M)
        if not match:
            raise RuntimeError(f"wrk printed no figures:\n{out}")
        run = json.loads(match.group(1))
        run["rps"] = run["requests"] / (run["duration_us"] / 1e6)
        # The server's own CPU per request: what each costs, whatever share of the cores wrk left it.
        run["cpu_us_per_request"] = (cpu_seconds(server.proc.pid) - cpu_before) * 1e6 / max(run["requests"], 1)
        if run["errors"] or run["non_2xx"]:
            # wrk counts failures without saying what they were: ask once more, so the error shows an answer
            # (not for "/", where the script builds the requests and a plain GET would be another route).
            probe = "no probe"
            if path != "/":
                try:
                    status, body = http("GET", (base or server.base) + path, timeout=2)
                    probe = f"a GET now answers {status} {body[:200]!r}"
                except OSError as e:
                    probe = f"a GET now fails: {e}"
            raise RuntimeError(f"{server.name} {path}: {run['errors']} socket errors, {run['non_2xx']} non-2xx "
                               f"responses ({probe}); see {server.log_path}")
        for s in self.servers.values():
            s.truncate_log()
        return run

    def interleaved(self, label, path, servers):
        """Full-speed runs of every server in turn, `rounds` times; keeps every run and the median."""
        runs = {s.name: [] for s in servers}
        for r in range(self.args.rounds):
            for s in servers:
                run = self.wrk(s, path, name=f"{label}-{s.name}")
                runs[s.name].append(run)
                log(f"{label} round {r + 1}/{self.args.rounds} {s.name}: {run['rps']:.0f} req/s, "
                    f"{run['cpu_us_per_request']:.1f} us CPU/request")
        return {name: summarize(rs) for name, rs in runs.items()}

    def paced(self, server, path, script_body, name):
        connections = self.args.paced_connections
        interval = max(1, round(connections * 1000 / self.args.rate))
        run = self.wrk(server, path, PACE_LUA.format(interval=interval) + script_body, threads=1,
                       connections=connections, duration=self.args.paced_duration, name=name)
        log(f"{name} at {self.args.rate}/s: {run['rps']:.0f} req/s, p50 {run['p50_us']} us, p99 {run['p99_us']} us")
        return run

    def psql(self, sql, check=True):
        """Runs SQL as the app's Postgres role (its search_path is the app's schema); returns psql's output."""
        url, env = psql_access(self.database_url)
        return subprocess.run(["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql], env=env,
                              check=check, capture_output=True, text=True).stdout

    def cache_epoch(self):
        """The app's cache epoch: its entries are `app:kv:<epoch>:<key>` (app/service/src/store/cache.rs)."""
        return int(self.psql("SELECT epoch FROM kv_cache_epoch").strip())

    def seed_misses(self, prefix, per_thread, threads):
        """Rows in Postgres that Redis has never seen, so every GET of them takes the miss path (and fills)."""
        self.psql(f"INSERT INTO kv_store (key, value) SELECT '{prefix}' || t || '-' || n, '\"bench\"'::jsonb "
                  f"FROM generate_series(1, {threads}) t, generate_series(1, {per_thread}) n "
                  f"ON CONFLICT (key) DO NOTHING")
        # Statistics as a loaded table has them: left to autovacuum, the app's first misses were planned against
        # the previous cleanup's empty table (a sequential scan per miss, 30 times slower on a second run).
        self.psql("ANALYZE kv_store")

    def cleanup_data(self, strict):
        """Removes the bench's rows and its cache entries under every epoch. The app's Redis user has no KEYS (and
        KEYS would block a shared Redis): SCAN from the client, then UNLINK in batches. A failure raises when
        `strict` (before the run: the credentials are wrong), else is logged (after it: keep the first error)."""
        def run(argv, **kw):
            proc = subprocess.run(argv, capture_output=True, **kw)
            if proc.returncode != 0:
                out = (proc.stderr or proc.stdout).decode(errors="replace").strip()  # --pipe reports on stdout
                why = f"cleanup: {argv[0]} {argv[-1]} failed: {out[-500:]}"
                if strict:
                    raise RuntimeError(why)
                log(why)
            return proc.stdout

        # Before the app's first start on a new database there is no table yet, and nothing to delete.
        url, env = psql_access(self.database_url)
        run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-c",
             "DO $$ BEGIN IF to_regclass('kv_store') IS NOT NULL THEN "
             "DELETE FROM kv_store WHERE key LIKE 'bench-%'; END IF; END $$"], env=env)
        argv, env = redis_cli_access(self.redis_url)
        # (redis-cli 7.0 has no --count: SCAN's default of 10 keys a call, some 30k round trips after a full run.)
        keys = [k for k in run(argv + ["--scan", "--pattern", "app:kv:*:bench-*"], env=env).split(b"\n") if k]
        if keys:
            batches = b"".join(resp_command("UNLINK", *keys[i:i + 1000]) for i in range(0, len(keys), 1000))
            run(argv + ["--pipe"], env=env, input=batches)
        return len(keys)

    def exercise_every_route(self, app):
        """Every route with its usual answers, as `make load` and `opsctl smoke` produce them: the series a
        running stack exports."""
        calls = [
            ("GET", "/", None), ("GET", "/helloworld", None), ("GET", "/healthcheck", None),
            ("GET", "/status", None), ("GET", "/set_key/bench-route/v", None), ("GET", "/get_key/bench-route", None),
            ("GET", "/get_key/bench-absent", None), ("POST", "/set", {"key": "bench-route", "value": 1}),
            ("POST", "/set", {"key": "bench-route"}), ("GET", "/get/bench-route", None),
            ("GET", "/get/bench-absent", None), ("GET", "/query?param=abca", None), ("GET", "/query", None),
            ("GET", "/openapi.json", None), ("GET", "/no-such-route", None), ("DELETE", "/helloworld", None),
        ]
        for method, path, body in calls:
            http(method, app.base + path, body)

    def run(self):
        a = self.args
        os.makedirs(a.out_dir, exist_ok=True)
        pids_file = os.path.join(a.out_dir, "pids")
        open(pids_file, "w").close()
        base_env = dict(os.environ)

        def app_env(port, admin_port, metrics=True, log_level="info"):
            env = dict(base_env)
            env.update(APP_LISTEN_ADDR=f"127.0.0.1:{port}", APP_ADMIN_ADDR=f"127.0.0.1:{admin_port}",
                       APP_METRICS_ENABLED="true" if metrics else "false", APP_LOG_LEVEL=log_level,
                       APP_LOG_FORMAT="json", APP_FAULT_INJECTION_ENABLED="false",
                       # The ceiling reads the warm-up's cache entry straight from Redis and never refills it: with
                       # the default 300 s TTL it expired during the later phases and the ceiling answered 404.
                       APP_CACHE_TTL_SECONDS="86400")
            return env

        self.servers = {}
        try:
            self.cleanup_data(strict=True)
            ports = [free_port() for _ in range(7)]
            self.servers["app"] = Server("app", [a.app_bin], app_env(ports[0], ports[1]), ports[0], ports[1],
                                         "/healthcheck", a.out_dir, pids_file)
            idle_kib = rss_kib(self.servers["app"].proc.pid)
            self.servers["app-metrics-off"] = Server(
                "app-metrics-off", [a.app_bin], app_env(ports[2], ports[3], metrics=False), ports[2], ports[3],
                "/healthcheck", a.out_dir, pids_file)
            self.servers["app-no-request-log"] = Server(
                "app-no-request-log", [a.app_bin], app_env(ports[5], ports[6], log_level="warn"), ports[5], ports[6],
                "/healthcheck", a.out_dir, pids_file)
            app = self.servers["app"]
            r = self.results
            r["idle_rss_kib"] = idle_kib

            # The hit key's entry, written by the app under the epoch it read after its commit; the epoch read now
            # is that one (only a failed cache update bumps it), and the ceiling reads the same entry with it.
            status, _ = http("POST", app.base + "/set", {"key": "bench-hit", "value": {"msg": "cached", "n": 1}})
            assert status == 200, f"POST /set answered {status}"
            r["cache_epoch"] = self.cache_epoch()
            log(f"cache epoch {r['cache_epoch']}: the ceiling reads app:kv:{r['cache_epoch']}:<key>")
            # CEILING_REDIS_URL is the app's URL: the ceiling logs in as the app's Redis user, as the app does.
            ceiling_env = dict(base_env, CEILING_ADDR=f"127.0.0.1:{ports[4]}", CEILING_REDIS_URL=self.redis_url,
                               CEILING_CACHE_EPOCH=str(r["cache_epoch"]))
            self.servers["ceiling"] = Server("ceiling", [a.ceiling_bin], ceiling_env, ports[4], None,
                                             "/helloworld", a.out_dir, pids_file)
            ceiling = self.servers["ceiling"]
            everyone = list(self.servers.values())

            # Warm-up: connections, pools and allocator arenas, so the first measured run is not penalised.
            for s in everyone:
                self.wrk(s, "/get/bench-hit", duration=2, name="warmup")

            log(f"GET /helloworld: {a.rounds} interleaved rounds of {a.duration}s, wrk -t{a.threads} -c{a.connections}")
            r["hello"] = self.interleaved("helloworld", "/helloworld", everyone)
            log("GET /get/{key}, cache hit")
            r["hit"] = self.interleaved("cache-hit", "/get/bench-hit", everyone)

            # Enough never-cached rows that no thread runs out during a full-speed run.
            per_thread = 100_000
            self.seed_misses("bench-miss-a", per_thread, a.threads)
            run = self.wrk(app, "/", MISS_LUA.format(prefix="bench-miss-a"), name="miss")
            r["miss"] = summarize([run])
            log(f"cache miss, full speed: {run['rps']:.0f} req/s")
            run = self.wrk(app, "/", SET_LUA.format(), name="set")
            r["set"] = summarize([run])
            log(f"POST /set, full speed: {run['rps']:.0f} req/s")

            self.seed_misses("bench-miss-b", per_thread, 1)
            r["paced"] = {
                "hit_app": self.paced(app, "/get/bench-hit", "", "paced-hit-app"),
                "hit_ceiling": self.paced(ceiling, "/get/bench-hit", "", "paced-hit-ceiling"),
                "miss_app": self.paced(app, "/", MISS_LUA.format(prefix="bench-miss-b"), "paced-miss-app"),
                "set_app": self.paced(app, "/", SET_LUA.format(), "paced-set-app"),
            }
            r["peak_rss_kib"] = self.rss_peak_kib
            r["hwm_rss_kib"] = rss_kib(app.proc.pid, "VmHWM")
            r["ceiling_peak_rss_kib"] = rss_kib(ceiling.proc.pid, "VmHWM")

            log("GET /metrics")
            self.exercise_every_route(app)
            status, body = http("GET", f"http://127.0.0.1:{app.admin_port}/metrics")
            assert status == 200
            exposition = body.decode()
            samples = [l for l in exposition.splitlines() if l and not l.startswith("#")]
            run = self.wrk(app, "/metrics", threads=1, connections=1, duration=a.metrics_duration, name="metrics",
                           base=f"http://127.0.0.1:{app.admin_port}")
            r["metrics_http"] = dict(run, bytes_per_response=len(body), samples=len(samples))
            log(f"GET /metrics over HTTP: p50 {run['p50_us']} us, {len(body)} bytes, {len(samples)} samples")
            r["metrics_render"] = {}
            for scale in (1, 10):
                out = subprocess.run([a.render_bin, "--scale", str(scale), "--renders", "300"], input=exposition,
                                     capture_output=True, text=True, check=True).stdout
                r["metrics_render"][scale] = json.loads(out)
                log(f"metrics render x{scale}: {r['metrics_render'][scale]}")

            r["redis_get"] = redis_get(a.redis_get_bin, f"app:kv:{r['cache_epoch']}:bench-hit", a.connections)
        finally:
            for s in self.servers.values():
                s.stop()
            log(f"cleanup: removed {self.cleanup_data(strict=False)} cache entries and the bench's rows")
        return r


def summarize(runs):
    rps = [run["rps"] for run in runs]
    return {"runs": runs, "rps_median": statistics.median(rps), "rps_min": min(rps), "rps_max": max(rps),
            "p99_us_median": statistics.median(run["p99_us"] for run in runs),
            "cpu_us_median": statistics.median(run["cpu_us_per_request"] for run in runs)}


def redis_get(bin_path, key, connections):
    """Redis' own GET throughput on this machine, for context: the cache-hit ceiling cannot beat it. `redis-get`
    reads the URL, password included, from APP_REDIS_URL in its environment (see src/bin/redis-get.rs)."""
    try:
        proc = subprocess.run([bin_path, "--key", key, "--connections", str(connections), "--requests", "200000"],
                              capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        log(f"redis-get failed: {e}")
        return None
    if proc.returncode != 0:
        log(f"redis-get failed: {proc.stderr.strip()}")
        return None
    return json.loads(proc.stdout)["rps"]


def machine():
    model = "unknown CPU"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = open("/proc/loadavg").read().split()[:3]
    rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
    return {"nproc": os.cpu_count(), "cpu": model, "kernel": platform.release(), "rustc": rustc,
            "loadavg_before": " ".join(load)}


def markdown(r, m, a):
    def k(x):
        return f"{x / 1000:.1f}k" if x >= 1000 else f"{x:.0f}"

    def rps(s):
        return f"{k(s['rps_median'])} req/s ({k(s['rps_min'])}–{k(s['rps_max'])})"

    def full_speed_row(label, s):
        return (f"| {label} | {rps(s)} | {s['cpu_us_median']:.1f} µs server CPU/request, "
                f"p99 {s['p99_us_median'] / 1000:.2f} ms | |")

    hello, hit, paced = r["hello"], r["hit"], r["paced"]
    hello_ratio = hello["app"]["rps_median"] / hello["ceiling"]["rps_median"]
    hit_ratio = hit["app"]["rps_median"] / hit["ceiling"]["rps_median"]
    render1, render10 = r["metrics_render"][1], r["metrics_render"][10]
    peak_mb = max(r["peak_rss_kib"], 0) / 1024
    ok = lambda good: "met" if good else "**missed**"

    def paced_row(label, run):
        return (f"| {label} at {a.rate}/s | {run['rps']:.0f} req/s achieved | p50 {run['p50_us'] / 1000:.2f} ms, "
                f"p99 {run['p99_us'] / 1000:.2f} ms | |")

    lines = [
        f"Machine: {m['nproc']} × {m['cpu']}, Linux {m['kernel']}, {m['rustc']}, release build; load average "
        f"before the run {m['loadavg_before']}. wrk and the servers share the machine: full-speed runs are "
        f"`wrk -t{a.threads} -c{a.connections} -d{a.duration}s`, {a.rounds} interleaved rounds, median "
        f"(min–max); paced runs are `wrk -t1 -c{a.paced_connections}` with each connection sending one request "
        f"every {max(1, round(a.paced_connections * 1000 / a.rate))} ms for {a.paced_duration}s.",
        "",
        "| measurement | result | detail | target |",
        "|---|---|---|---|",
        full_speed_row("`GET /helloworld`, app (full instrumentation)", hello["app"]),
        full_speed_row("`GET /helloworld`, app, `APP_METRICS_ENABLED=false`", hello["app-metrics-off"]),
        full_speed_row("`GET /helloworld`, app, `APP_LOG_LEVEL=warn` (no request log line)",
                       hello["app-no-request-log"]),
        full_speed_row("`GET /helloworld`, ceiling (bare axum)", hello["ceiling"]),
        f"| `/helloworld` instrumented / ceiling | **{hello_ratio:.2f}** | metrics off / ceiling "
        f"{hello['app-metrics-off']['rps_median'] / hello['ceiling']['rps_median']:.2f}; no request log / ceiling "
        f"{hello['app-no-request-log']['rps_median'] / hello['ceiling']['rps_median']:.2f} | ≥ 0.90: "
        f"{ok(hello_ratio >= 0.90)} |",
        full_speed_row("`GET /get/{key}` cache hit, app", hit["app"]),
        full_speed_row("`GET /get/{key}` cache hit, app, metrics off", hit["app-metrics-off"]),
        full_speed_row("`GET /get/{key}` cache hit, app, no request log line", hit["app-no-request-log"]),
        full_speed_row("`GET /get/{key}` cache hit, ceiling (one Redis GET)", hit["ceiling"]),
        f"| cache hit app / ceiling | **{hit_ratio:.2f}** | Redis alone (`redis-get`: GET of the same entry, "
        f"{a.connections} connections, one in flight each): {k(r['redis_get'] or 0)} req/s | ≥ 0.80: "
        f"{ok(hit_ratio >= 0.80)} |",
        full_speed_row("`GET /get/{key}` cache miss (Postgres read + cache fill), app", r["miss"]),
        full_speed_row("`POST /set` (Postgres upsert + cache update), app", r["set"]),
        paced_row("cache hit, app", paced["hit_app"]),
        paced_row("cache hit, ceiling", paced["hit_ceiling"]),
        paced_row("cache miss, app", paced["miss_app"]),
        paced_row("`POST /set`, app", paced["set_app"]),
        f"| `/metrics` over HTTP, real series ({r['metrics_http']['samples']} samples) | "
        f"p50 {r['metrics_http']['p50_us'] / 1000:.2f} ms, p99 {r['metrics_http']['p99_us'] / 1000:.2f} ms | "
        f"{r['metrics_http']['bytes_per_response'] / 1024:.1f} KiB | |",
        f"| `/metrics` render in-process, real: {render1['http_request_series']} request series | p50 "
        f"{render1['with_process_p50_us'] / 1000:.2f} ms, p99 {render1['with_process_p99_us'] / 1000:.2f} ms | "
        f"{render1['samples']} samples, {render1['bytes'] / 1024:.1f} KiB | < 2 ms: "
        f"{ok(render1['with_process_p50_us'] < 2000)} |",
        f"| `/metrics` render in-process, 10× routes/statuses: {render10['http_request_series']} request series | "
        f"p50 {render10['with_process_p50_us'] / 1000:.2f} ms, p99 {render10['with_process_p99_us'] / 1000:.2f} ms "
        f"| {render10['samples']} samples, {render10['bytes'] / 1024:.1f} KiB | < 2 ms: "
        f"{ok(render10['with_process_p50_us'] < 2000)} |",
        f"| app resident memory (VmRSS), idle after start | {r['idle_rss_kib'] / 1024:.1f} MiB | | |",
        f"| app resident memory, peak sampled under load | {peak_mb:.1f} MiB | VmHWM {r['hwm_rss_kib'] / 1024:.1f} "
        f"MiB; ceiling's VmHWM {r['ceiling_peak_rss_kib'] / 1024:.1f} MiB | < 30 MB: "
        f"{ok(r['peak_rss_kib'] * 1024 < 30e6)} |",
    ]
    return "\n".join(lines) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out-dir", required=True)
    p.add_argument("--app-bin", required=True)
    p.add_argument("--ceiling-bin", required=True)
    p.add_argument("--render-bin", required=True)
    p.add_argument("--redis-get-bin", required=True)
    p.add_argument("--duration", type=int, default=int(os.environ.get("BENCH_DURATION", 10)))
    p.add_argument("--rounds", type=int, default=int(os.environ.get("BENCH_ROUNDS", 3)))
    p.add_argument("--threads", type=int, default=int(os.environ.get("BENCH_THREADS", 2)))
    p.add_argument("--connections", type=int, default=int(os.environ.get("BENCH_CONNECTIONS", 32)))
    p.add_argument("--rate", type=int, default=int(os.environ.get("BENCH_RATE", 500)))
    p.add_argument("--paced-connections", type=int, default=8)
    p.add_argument("--paced-duration", type=int, default=int(os.environ.get("BENCH_PACED_DURATION", 15)))
    p.add_argument("--metrics-duration", type=int, default=5)
    a = p.parse_args()
    # From the environment only: on the command line their passwords would show in `ps`.
    database_url, redis_url = os.environ.get("APP_DATABASE_URL"), os.environ.get("APP_REDIS_URL")
    if not database_url or not redis_url:
        p.error("APP_DATABASE_URL and APP_REDIS_URL must be set (native/env.sh's load_secrets sets them)")

    m = machine()
    results = Bench(a, database_url, redis_url).run()
    table = markdown(results, m, a)
    with open(os.path.join(a.out_dir, "results.md"), "w") as f:
        f.write(table)
    with open(os.path.join(a.out_dir, "results.json"), "w") as f:
        json.dump({"machine": m, "settings": vars(a), "results": results}, f, indent=1, default=str)
    print(table)
    log(f"wrote {os.path.join(a.out_dir, 'results.md')} and results.json")


if __name__ == "__main__":
    main()
