#!/usr/bin/python3
"""Proves that compose/check_static.py catches what it claims to: each case below breaks one promise in a copy of
the resolved compose model (the JSON compose/check.sh produced), runs the checker on it, and requires a failure
that names the broken thing. The unbroken model must pass. A checker that stops catching a case fails this test.

Usage: check_static_test.py --config-json FILE [--filled-value VALUE]   (compose/check.sh runs it)
"""
import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
CHECKER = os.path.join(HERE, "check_static.py")


def command(svc):
    return list(svc.get("command") or [])


def drop_flag(service, prefix):
    """Removes every argument of a service's command that starts with `prefix` (and a separate value after it)."""
    def mutate(model):
        svc = model["services"][service]
        args, out, skip = command(svc), [], False
        for arg in args:
            if skip:
                skip = False
                continue
            if arg.startswith(prefix):
                skip = arg == prefix
                continue
            out.append(arg)
        assert out != args, f"{service} has no {prefix} to drop"
        svc["command"] = out
    return mutate


def set_image(service, image):
    def mutate(model):
        model["services"][service]["image"] = image
    return mutate


def drop_healthcheck(service):
    def mutate(model):
        assert model["services"][service].pop("healthcheck", None) is not None, f"{service} has no healthcheck"
    return mutate


def start_without_waiting(service):
    def mutate(model):
        deps = model["services"][service]["depends_on"]
        for dep in deps.values():
            dep["condition"] = "service_started"
    return mutate


def publish_everywhere(service):
    def mutate(model):
        ports = model["services"][service]["ports"]
        ports[0]["host_ip"] = "0.0.0.0"
    return mutate


def writable_bind(service):
    def mutate(model):
        for vol in model["services"][service]["volumes"]:
            if vol.get("type") == "bind" and vol.get("read_only"):
                vol["read_only"] = False
                return
        raise AssertionError(f"{service} has no read-only bind mount")
    return mutate


def secret_on_command_line(service, filled):
    def mutate(model):
        model["services"][service]["command"] = command(model["services"][service]) + [f"--password={filled}"]
    return mutate


def first_with(model, key):
    return next(name for name, svc in sorted(model["services"].items()) if svc.get(key))


def cases(model, filled):
    """(name, mutation, a word the failure must contain)."""
    bind_user = next(name for name, svc in sorted(model["services"].items())
                     if any(v.get("type") == "bind" and v.get("read_only") for v in svc.get("volumes") or []))
    return [
        ("image on the moving tag latest", set_image("redis", "redis:latest"), "latest"),
        ("image without a version", set_image("redis", "redis"), "not pinned"),
        ("service without a healthcheck", drop_healthcheck("redis"), "healthcheck"),
        ("start before a dependency is healthy", start_without_waiting(first_with(model, "depends_on")),
         "service_healthy"),
        ("UI port published on every interface", publish_everywhere(first_with(model, "ports")), "published on"),
        ("bind mount writable", writable_bind(bind_user), "read-only"),
        ("Prometheus without its web config", drop_flag("prometheus", "--web.config.file"), "web.config.file"),
        ("Alertmanager without its web config", drop_flag("alertmanager", "--web.config.file"), "web.config.file"),
        ("Redis without its ACL", drop_flag("redis", "--aclfile"), "aclfile"),
        ("a secret on a command line", secret_on_command_line("app", filled), "secret"),
    ]


def run_checker(model, filled, repo):
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(model, f)
        path = f.name
    try:
        run = subprocess.run([sys.executable, CHECKER, "--config-json", path, "--repo", repo,
                              "--filled-value", filled], capture_output=True, text=True)
    finally:
        os.unlink(path)
    return run.returncode, run.stderr


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-json", required=True)
    parser.add_argument("--repo", default=os.path.dirname(HERE))
    parser.add_argument("--filled-value", default="check-only-value")
    args = parser.parse_args()
    with open(args.config_json) as f:
        model = json.load(f)

    failed = []
    code, out = run_checker(model, args.filled_value, args.repo)
    if code != 0:
        failed.append(f"the unbroken model fails:\n{out}")
    for name, mutate, word in cases(model, args.filled_value):
        broken = copy.deepcopy(model)
        mutate(broken)
        code, out = run_checker(broken, args.filled_value, args.repo)
        fails = [line for line in out.splitlines() if "FAIL" in line]
        if code == 0 or not any(word in line for line in fails):
            failed.append(f"{name}: not caught (exit {code}; no failure mentions {word!r}):\n{out}")
    total = len(cases(model, args.filled_value))
    summary = (f"{len(failed)} case(s) failed" if failed
               else f"every one of {total} broken models is refused, the real one passes")
    print("\n".join(f"check_static_test: {line}" for line in failed + [summary]), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
