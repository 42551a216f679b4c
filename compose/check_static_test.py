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


def remove_service(service):
    def mutate(model):
        assert model["services"].pop(service, None) is not None, f"no service {service}"
    return mutate


def rename_service(service, new):
    def mutate(model):
        model["services"][new] = model["services"].pop(service)
    return mutate


def drop_arg(service, arg):
    """Removes one exact argument (e.g. one --cluster.peer=...) from a service's command."""
    def mutate(model):
        svc = model["services"][service]
        assert arg in command(svc), f"{service} has no argument {arg}"
        svc["command"] = [a for a in command(svc) if a != arg]
    return mutate


def replace_arg(service, prefix, arg):
    """Replaces the arguments of a service's command that start with `prefix` by `arg`."""
    def mutate(model):
        svc = model["services"][service]
        args = command(svc)
        assert any(a.startswith(prefix) for a in args), f"{service} has no {prefix}"
        svc["command"] = [arg if a.startswith(prefix) else a for a in args]
    return mutate


def set_env(service, key, value):
    """Sets (or, with None, removes) one variable of a service's environment."""
    def mutate(model):
        env = model["services"][service].setdefault("environment", {})
        if value is None:
            assert env.pop(key, None) is not None, f"{service} does not set {key}"
        else:
            env[key] = value
    return mutate


def drop_mount(service, target):
    def mutate(model):
        svc = model["services"][service]
        kept = [v for v in svc["volumes"] if v.get("target") != target]
        assert len(kept) < len(svc["volumes"]), f"{service} mounts nothing at {target}"
        svc["volumes"] = kept
    return mutate


def share_volume(service, other):
    """`service` mounts `other`'s named volume instead of its own."""
    def mutate(model):
        theirs = next(v["source"] for v in model["services"][other]["volumes"] if v.get("type") == "volume")
        mine = next(v for v in model["services"][service]["volumes"] if v.get("type") == "volume")
        mine["source"] = theirs
    return mutate


def publish_also(service, port):
    """`service` publishes `port` (on 127.0.0.1, as the real ones) too."""
    def mutate(model):
        model["services"][service].setdefault("ports", []).append(
            {"mode": "ingress", "host_ip": "127.0.0.1", "target": port, "published": str(port), "protocol": "tcp"})
    return mutate


def move_ports(service, other):
    """`other` publishes what `service` published."""
    def mutate(model):
        model["services"][other]["ports"] = model["services"][service].pop("ports")
    return mutate


def move_alias(alias, service, other):
    def mutate(model):
        nets = model["services"][service]["networks"]
        for net in nets.values():
            net["aliases"].remove(alias)
        model["services"][other]["networks"] = {"default": {"aliases": [alias]}}
    return mutate


def both(*mutations):
    def mutate(model):
        for m in mutations:
            m(model)
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
        ("Prometheus without its web config", drop_flag("prometheus-1", "--web.config.file"), "web.config.file"),
        ("Alertmanager without its web config", drop_flag("alertmanager-2", "--web.config.file"),
         "web.config.file"),
        ("Redis without its ACL", drop_flag("redis", "--aclfile"), "aclfile"),
        ("a secret on a command line", secret_on_command_line("app-1", filled), "secret"),
        # Replicas: as many as topology.yml declares, named for it, and the same but for their names.
        ("an app replica missing", remove_service("app-2"), "2 replicas"),
        ("an Alertmanager peer misnamed", rename_service("alertmanager-3", "alertmanager-three"), "3 replicas"),
        ("a replica that differs from the others",
         replace_arg("prometheus-2", "--storage.tsdb.retention.time", "--storage.tsdb.retention.time=15d"),
         "differs from prometheus-1"),
        ("an app replica that refuses its own scrapes", set_env("app-2", "APP_ADMIN_ALLOWED_HOSTS", "app-1:8081"),
         "APP_ADMIN_ALLOWED_HOSTS"),
        # Prometheus: the replica label.
        ("Prometheus without expand-external-labels", drop_flag("prometheus-2", "--enable-feature"),
         "expand-external-labels"),
        ("Prometheus without its replica name", set_env("prometheus-2", "PROMETHEUS_REPLICA", None),
         "PROMETHEUS_REPLICA"),
        ("two Prometheus replicas with one name", set_env("prometheus-2", "PROMETHEUS_REPLICA", "prometheus-1"),
         "PROMETHEUS_REPLICA"),
        ("two replicas on one data volume", share_volume("prometheus-2", "prometheus-1"), "give each its own"),
        # Alertmanager: one cluster.
        ("a peer that does not list every peer", drop_arg("alertmanager-2", "--cluster.peer=alertmanager-3:9094"),
         "--cluster.peer list"),
        ("a peer gossiping without TLS", drop_flag("alertmanager-2", "--cluster.tls-config"), "cluster.tls-config"),
        ("a peer without its gossip key", drop_mount("alertmanager-3", "/etc/alertmanager/secrets/cluster.key"),
         "cluster.key"),
        ("a peer on another peer timeout",
         replace_arg("alertmanager-1", "--cluster.peer-timeout", "--cluster.peer-timeout=15s"), "peer-timeout"),
        ("a peer without gossip", drop_flag("alertmanager-3", "--cluster.listen-address"),
         "cluster.listen-address"),
        ("an inbox relay that forwards elsewhere", set_env("alertmanager-2-host", "INBOX_RELAY_SERVER", "grafana:3000"),
         "not at the inbox"),
        ("an inbox relay open to the network", set_env("alertmanager-1-host", "INBOX_RELAY_BIND", "0.0.0.0:8082"),
         "loopback only"),
        # HAProxy: both config files, and the variables they expand.
        ("HAProxy without compose's servers", drop_mount("haproxy", "/usr/local/etc/haproxy/servers.cfg"),
         "servers.cfg"),
        ("HAProxy without its public bind", set_env("haproxy", "HAPROXY_PUBLIC_BIND", None), "HAPROXY_PUBLIC_BIND"),
        # Published ports: the topology's published listeners, once each, by replica 1.
        ("a UI port published twice", publish_also("prometheus-2", 9090), "once only"),
        ("a UI port published by another replica", move_ports("alertmanager-1-host", "alertmanager-2-host"),
         "replica 1"),
        ("an unpublished listener published", publish_also("app-1", 8081), "not a UI port"),
        ("Grafana reading another Prometheus replica",
         both(move_alias("prometheus", "prometheus-1", "prometheus-2")), "the Prometheus replica the dashboards"),
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
