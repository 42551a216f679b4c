#!/usr/bin/python3
"""Resident memory of the app before, during and after a burst of idle connections: a measurement, not a test
(cargo does not run it; nothing asserts its figures).

Starts the app binary on its own ports, reads VmRSS from /proc/<pid>/status, opens N connections to the API
(silent, or each after one keep-alive `GET /healthcheck`), reads VmRSS again while they are open, closes them,
waits for the app to settle and reads it a last time. The app needs neither Postgres nor Redis for this
(`/healthcheck` touches no dependency); it logs that they are unreachable if they are.

Usage (from the repository root, after `cargo build -p app`):
  app/service/tests/idle_connections.py --app-bin target/debug/app --connections 5000 --request
The bound is raised above N (APP_MAX_CONNECTIONS) unless --max-connections says otherwise.
"""
import argparse
import os
import resource
import signal
import socket
import subprocess
import sys
import time


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def wait_healthy(port, limit=30.0):
    deadline = time.time() + limit
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"GET /healthcheck HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.2)
    sys.exit(f"the app did not answer on port {port} within {limit:.0f} s")


def read_response(s):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            raise RuntimeError("closed before a response")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += s.recv(4096)
    return head.split(b"\r\n")[0].decode()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--app-bin", default="target/debug/app")
    p.add_argument("--connections", type=int, default=5000)
    p.add_argument("--request", action="store_true", help="send one keep-alive GET /healthcheck on each")
    p.add_argument("--max-connections", type=int, help="APP_MAX_CONNECTIONS (default: connections + 100)")
    p.add_argument("--port", type=int, default=28180, help="API port; the admin listener takes the next one")
    p.add_argument("--settle", type=float, default=15.0, help="seconds to wait after closing them")
    args = p.parse_args()

    need = args.connections + 64
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
    env = dict(os.environ)
    env.update({
        "APP_LISTEN_ADDR": f"127.0.0.1:{args.port}",
        "APP_ADMIN_ADDR": f"127.0.0.1:{args.port + 1}",
        "APP_MAX_CONNECTIONS": str(args.max_connections or args.connections + 100),
        "APP_LOG_LEVEL": "warn",
        "APP_IDLE_TIMEOUT_SECONDS": "600",
    })
    app = subprocess.Popen([args.app_bin], env=env, stdout=subprocess.DEVNULL)
    try:
        wait_healthy(args.port)
        time.sleep(1.0)
        before = rss_kib(app.pid)
        conns, refused, answered = [], 0, 0
        for _ in range(args.connections):
            s = socket.create_connection(("127.0.0.1", args.port))
            if args.request:
                s.sendall(b"GET /healthcheck HTTP/1.1\r\nHost: x\r\n\r\n")
                status = read_response(s)
                if status.startswith("HTTP/1.1 200"):
                    answered += 1
                else:
                    refused += 1
            conns.append(s)
        time.sleep(2.0)
        peak = rss_kib(app.pid)
        for s in conns:
            s.close()
        time.sleep(args.settle)
        after = rss_kib(app.pid)
        kind = "keep-alive after one request" if args.request else "silent"
        print(f"{args.connections} {kind} connections (APP_MAX_CONNECTIONS={env['APP_MAX_CONNECTIONS']}"
              f"{f', {answered} answered 200, {refused} not' if args.request else ''}):")
        print(f"  VmRSS before {before / 1024:.1f} MiB, with them open {peak / 1024:.1f} MiB "
              f"(+{(peak - before) / args.connections:.1f} KiB each), {args.settle:.0f} s after closing "
              f"{after / 1024:.1f} MiB")
    finally:
        app.send_signal(signal.SIGTERM)
        try:
            app.wait(timeout=15)
        except subprocess.TimeoutExpired:
            app.kill()


if __name__ == "__main__":
    main()
