#!/usr/bin/python3
"""Static checks of the compose stack: what `docker-compose config` cannot see, with no Docker engine.

Input is the model that Compose v2 itself resolved (`docker-compose config --format json`: paths absolute, ports
and volumes in long form), so the checks look at what compose would run, not at how the file spells it.

Checked, each failure named with the service or file it comes from:
  * every image is pinned to a version tag (or a digest), never `latest`, and names no registry host; the local
    build's Dockerfile: its base images likewise, and the files it copies exist;
  * every service has a healthcheck, and every depends_on waits for service_healthy;
  * only the UI ports are published, on 127.0.0.1, each on the port the service really listens on;
  * every bind mount comes from the repository (and exists there) and is read-only; the only host paths allowed are
    the kernel views node_exporter reads; data lives in named volumes;
  * every address a service, a Prometheus target, the Grafana datasource or an Alertmanager webhook points at
    names a compose service (or an alias) and a port that a service in that network namespace listens on; listen
    ports are the ones set in each service's environment or command;
  * Prometheus: the scrape jobs are the native ones, each file_sd file exists in compose/prometheus/targets/ and
    every file there is used; the rule files match;
  * Grafana's dashboard provider reads the path where compose mounts dashboards/;
  * compose/.env.example lists every variable the compose file uses, the required ones without a value.

Usage: check_static.py --config-json FILE [--repo ROOT]
"""
import argparse
import glob
import json
import os
import re
import sys

import yaml

# Scrape jobs of monitoring/prometheus/prometheus.yml (the alerts depend on these names), and the file_sd file that
# tells Prometheus where Alertmanager is.
# The rule directory of the game day's broken-rule drill (see monitoring/prometheus/prometheus.yml).
GAMEDAY_DRILL_RULES = "drills/*.yml"

JOBS = {"app", "redis", "postgres", "node", "process", "prometheus", "alertmanager", "inbox"}
ALERTMANAGER_TARGETS = "alertmanager-api"
# The UI ports, the same numbers as the native stack's: app, on-call inbox, Prometheus, Alertmanager, Grafana.
UI_PORTS = {8080, 8082, 9090, 9093, 3000}
# Host paths outside the repository that may be mounted (read-only): the kernel views node_exporter reads.
HOST_PATHS = {"/proc", "/sys", "/"}
# Where each stateful service keeps its data: must be a named volume.
DATA_DIRS = {
    "postgres": "/var/lib/postgresql/data",
    "redis": "/data",
    "prometheus": "/prometheus",
    "alertmanager": "/alertmanager",
    "grafana": "/var/lib/grafana",
    "inbox": "/var/lib/inbox",
}
LOCAL_HOSTS = {"localhost", "127.0.0.1", "0.0.0.0", "::1", "[::1]"}
# scheme://[user[:password]@]host:port
URL = re.compile(r"\b[a-z][a-z0-9+.-]*://(?:[^@/\s]*@)?([A-Za-z0-9._-]+|\[[0-9a-fA-F:]+\]):(\d+)")
VERSION = re.compile(r"\d+\.\d+")

failures = []
passed = 0


def check(ok, where, message):
    """Records one check: `message` says what is wrong when `ok` is false."""
    global passed
    if ok:
        passed += 1
    else:
        failures.append(f"{where}: {message}")
    return ok


class Stack:
    """The resolved compose model plus what the checks derive from it: network namespaces and listen ports."""

    def __init__(self, config, repo):
        self.repo = os.path.realpath(repo)
        self.compose_dir = os.path.join(self.repo, "compose")
        self.services = config.get("services", {})
        self.volumes = config.get("volumes", {}) or {}

    def netns(self, name):
        """The service whose network namespace `name` runs in (itself unless network_mode: service:X)."""
        mode = self.services[name].get("network_mode") or ""
        return mode.split(":", 1)[1] if mode.startswith("service:") else name

    def resolve(self, host):
        """The network namespace a host name reaches on the stack's network, or None."""
        for name, svc in self.services.items():
            for net in (svc.get("networks") or {}).values():
                if host in ((net or {}).get("aliases") or []):
                    return name
        if host in self.services and self.netns(host) == host:
            return host
        return None

    def listen_ports(self, name):
        """Ports the service is configured to listen on, read from its environment and command."""
        svc = self.services[name]
        ports = set()
        for key, value in (svc.get("environment") or {}).items():
            if value is None:
                continue
            if re.search(r"(LISTEN_ADDR|ADMIN_ADDR)$", key):
                m = re.search(r":(\d+)$", value)
                if m:
                    ports.add(int(m.group(1)))
            elif key == "GF_SERVER_HTTP_PORT" and value.isdigit():
                ports.add(int(value))
        args = list(svc.get("entrypoint") or []) + list(svc.get("command") or [])
        for i, arg in enumerate(args):
            nxt = args[i + 1] if i + 1 < len(args) else ""
            m = re.match(r"^-{1,2}(web\.listen-address|port)(?:=(.*))?$", arg)
            if m:
                value = m.group(2) if m.group(2) is not None else nxt
                p = re.search(r"(?:^|:)(\d+)$", value)
                if p:
                    ports.add(int(p.group(1)))
            elif arg == "-c" and re.match(r"^port=\d+$", nxt):   # postgres -c port=N
                ports.add(int(nxt.split("=")[1]))
        return ports

    def ns_ports(self, ns):
        """Every port listened on in the network namespace of service `ns` (its own and its guests')."""
        return set().union(*(self.listen_ports(n) for n in self.services if self.netns(n) == ns))

    def check_reference(self, where, host, port, from_service=None):
        """A host:port that something connects to must be a compose service's port (or, for 127.0.0.1, a port
        of `from_service`'s own network namespace)."""
        port = int(port)
        if host in LOCAL_HOSTS:
            ns = self.netns(from_service)
            return check(port in self.ns_ports(ns), where,
                         f"{host}:{port} is not a port listened on in {ns}'s network namespace "
                         f"(listening: {sorted(self.ns_ports(ns))})")
        ns = self.resolve(host)
        if not check(ns is not None, where, f"{host}:{port}: '{host}' is no compose service or network alias"):
            return False
        return check(port in self.ns_ports(ns), where,
                     f"{host}:{port}: nothing in {ns}'s network namespace listens on {port} "
                     f"(listening: {sorted(self.ns_ports(ns))})")

    def host_path(self, service, container_path):
        """The host path that a container path of `service` comes from through its bind mounts, or None."""
        best = None
        for vol in self.services[service].get("volumes") or []:
            if vol.get("type") != "bind":
                continue
            target = vol["target"].rstrip("/") or "/"
            if container_path == target or container_path.startswith(target + "/"):
                if best is None or len(target) > len(best[0]):
                    best = (target, vol["source"])
        if best is None:
            return None
        return best[1] + container_path[len(best[0]):]

    def rel(self, path):
        return os.path.relpath(path, self.repo)


def check_image_ref(where, ref):
    """A pinned image reference: a version tag (not latest) or a digest, and no registry host."""
    name, _, digest = ref.partition("@")
    last = name.rsplit("/", 1)[-1]
    tag = last.split(":", 1)[1] if ":" in last else ""
    first = name.split("/", 1)[0]
    check("/" not in name or not ("." in first or ":" in first or first == "localhost"), where,
          f"image {ref!r} names a registry host; use the image's plain name")
    if digest:
        return check(digest.startswith("sha256:"), where, f"image {ref!r}: malformed digest")
    check(tag != "", where, f"image {ref!r} is not pinned: add a version tag")
    check(tag != "latest", where, f"image {ref!r} uses the moving tag 'latest'")
    if tag and tag != "latest":
        check(bool(VERSION.search(tag)), where, f"image {ref!r}: tag {tag!r} has no version number (X.Y[.Z])")


def check_dockerfile(stack, service, build, seen):
    context = build.get("context") or stack.compose_dir
    path = os.path.join(context, build.get("dockerfile") or "Dockerfile")
    where = stack.rel(path)
    if (context, path) in seen:      # the app and the inbox share one build
        return
    seen.add((context, path))
    if not check(os.path.isfile(path), f"service {service}", f"Dockerfile {where} does not exist"):
        return
    stages = set()
    # Join continuation lines, drop comments.
    text = re.sub(r"\\\n", " ", open(path).read())
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        words = line.split()
        op = words[0].upper()
        if op == "FROM":
            words = [w for w in words[1:] if not w.startswith("--")]
            image = words[0]
            if len(words) >= 3 and words[1].upper() == "AS":
                stages.add(words[2].lower())
            if image != "scratch" and image.lower() not in stages:
                check_image_ref(where, image)
        elif op in ("COPY", "ADD") and not any(w.startswith("--from") for w in words[1:]):
            sources = [w for w in words[1:] if not w.startswith("--")][:-1]
            for src in sources:
                check(bool(glob.glob(os.path.join(context, src))), where,
                      f"{op} {src}: no such file in the build context ({stack.rel(context) or '.'})")


def check_services(stack):
    published = {}
    dockerfiles = set()
    for name, svc in sorted(stack.services.items()):
        where = f"service {name}"
        # Images.
        if svc.get("build"):
            image = svc.get("image") or ""
            check("/" not in image or "." not in image.split("/", 1)[0], where,
                  f"locally built image {image!r} names a registry host")
            check_dockerfile(stack, name, svc["build"], dockerfiles)
        else:
            check("image" in svc, where, "has neither an image nor a build")
            check_image_ref(where, svc.get("image", ""))

        # Health and start order.
        hc = svc.get("healthcheck") or {}
        test = hc.get("test") or []
        check(bool(test) and not hc.get("disable") and test[0] != "NONE", where, "has no healthcheck")
        for dep, spec in (svc.get("depends_on") or {}).items():
            check((spec or {}).get("condition") == "service_healthy", where,
                  f"depends_on {dep} does not wait for condition: service_healthy")

        # Ports: UI only, loopback only, and on a port the service listens on.
        for port in svc.get("ports") or []:
            pub = int(port.get("published") or 0)
            target = int(port["target"])
            published[pub] = name
            check(port.get("host_ip") == "127.0.0.1", where,
                  f"port {pub} is published on {port.get('host_ip') or 'every interface'}, not 127.0.0.1")
            check(pub in UI_PORTS, where, f"port {pub} is published but is not a UI port {sorted(UI_PORTS)}")
            check(pub == target, where, f"port {target} is published as {pub}: keep the native port numbers")
            ns = stack.netns(name)
            check(target in stack.ns_ports(ns), where,
                  f"publishes port {target}, which nothing in its network namespace listens on")

        # Mounts.
        for vol in svc.get("volumes") or []:
            target = vol.get("target")
            if vol.get("type") == "bind":
                source = os.path.realpath(vol["source"])
                inside = source == stack.repo or source.startswith(stack.repo + os.sep)
                if inside:
                    check(os.path.exists(source), where,
                          f"bind mount {stack.rel(source)} -> {target}: no such file or directory in the repository")
                else:
                    check(vol["source"] in HOST_PATHS, where,
                          f"bind mount of host path {vol['source']} -> {target}: only repository paths (and "
                          f"{sorted(HOST_PATHS)} for node_exporter) may be mounted")
                check(bool(vol.get("read_only")), where, f"bind mount {target} is not read-only")
            elif vol.get("type") == "volume":
                check(bool(vol.get("source")) and vol["source"] in stack.volumes, where,
                      f"{target} is an anonymous volume: declare a named one")
            elif vol.get("type") == "tmpfs":
                # Only to mask part of a read-only bind mount (Grafana must not see dashboards/check/).
                check(any(target.startswith(other.get("target", "") + "/")
                          for other in svc.get("volumes") or [] if other.get("type") == "bind"), where,
                      f"tmpfs {target} masks no bind mount: keep state in a named volume")
            else:
                check(False, where, f"mount {target} has type {vol.get('type')!r} (bind, volume or tmpfs expected)")
        if name in DATA_DIRS:
            check(any(v.get("type") == "volume" and v.get("target") == DATA_DIRS[name]
                      for v in svc.get("volumes") or []), where,
                  f"its data directory {DATA_DIRS[name]} is not a named volume")

        # Addresses it connects to, and the URLs it advertises (published ports).
        strings = [f"{k}={v}" for k, v in (svc.get("environment") or {}).items() if v is not None]
        strings += list(svc.get("entrypoint") or []) + list(svc.get("command") or [])
        for s in strings:
            for host, port in URL.findall(s):
                if host in LOCAL_HOSTS:
                    check(int(port) in UI_PORTS, where,
                          f"advertises {host}:{port} ({s!r}), which is not a published UI port")
                else:
                    stack.check_reference(where, host, port)
        for s in test[1:]:
            for host, port in URL.findall(s):
                stack.check_reference(f"{where} healthcheck", host, port, from_service=name)

    check(set(published) == UI_PORTS, "ports",
          f"published ports {sorted(published)} differ from the UI ports {sorted(UI_PORTS)}")


def load_yaml(path):
    with open(path) as f:
        return yaml.safe_load(f) or {}


def check_targets(stack):
    targets_dir = os.path.join(stack.compose_dir, "prometheus", "targets")
    files = {os.path.basename(p)[:-4]: p for p in glob.glob(os.path.join(targets_dir, "*.yml"))}
    check(bool(files), "compose/prometheus/targets", "no target files")
    for job, path in sorted(files.items()):
        where = stack.rel(path)
        groups = load_yaml(path)
        if not check(isinstance(groups, list) and groups, where, "must be a non-empty list of target groups"):
            continue
        for group in groups:
            for target in (group or {}).get("targets") or []:
                m = re.match(r"^([A-Za-z0-9._-]+):(\d+)$", str(target))
                if check(m is not None, where, f"target {target!r} is not host:port"):
                    check(m.group(1) not in LOCAL_HOSTS, where,
                          f"target {target!r}: 127.0.0.1 is Prometheus's own container; name the service")
                    stack.check_reference(where, m.group(1), m.group(2))

    prom_yml = os.path.join(stack.repo, "monitoring", "prometheus", "prometheus.yml")
    if not os.path.exists(prom_yml):
        print(f"compose: note: {stack.rel(prom_yml)} does not exist yet; checking the target files against the "
              f"contract's job names only", file=sys.stderr)
        check(set(files) == JOBS | {ALERTMANAGER_TARGETS}, "compose/prometheus/targets",
              f"target files {sorted(files)} differ from the jobs {sorted(JOBS | {ALERTMANAGER_TARGETS})}")
        return

    # Prometheus resolves relative paths against the config file's directory, inside its container.
    where = stack.rel(prom_yml)
    cfg = load_yaml(prom_yml)
    config_dir = "/etc/prometheus"
    for arg in stack.services.get("prometheus", {}).get("command") or []:
        if arg.startswith("--config.file="):
            config_dir = os.path.dirname(arg.split("=", 1)[1])

    def used_files(sd_configs):
        out = []
        for sd in sd_configs or []:
            for pattern in sd.get("files") or []:
                container = os.path.normpath(os.path.join(config_dir, pattern))
                host = stack.host_path("prometheus", container)
                if check(host is not None, where, f"file_sd {pattern}: {container} is not mounted in compose"):
                    matched = glob.glob(host)
                    check(bool(matched), where, f"file_sd {pattern}: no such file {stack.rel(host)}")
                    out += [os.path.realpath(m) for m in matched]
        return out

    jobs, used = [], []
    for sc in cfg.get("scrape_configs") or []:
        jobs.append(sc.get("job_name"))
        used += used_files(sc.get("file_sd_configs"))
        for static in sc.get("static_configs") or []:
            check(False, where, f"job {sc.get('job_name')}: static_configs cannot differ between native and "
                                f"compose; use file_sd targets/<job>.yml")
    for am in (cfg.get("alerting") or {}).get("alertmanagers") or []:
        used += used_files(am.get("file_sd_configs"))
    check(set(jobs) == JOBS and len(jobs) == len(set(jobs)), where,
          f"scrape jobs {sorted(jobs)} differ from the native ones {sorted(JOBS)}")
    for job, path in sorted(files.items()):
        check(os.path.realpath(path) in used, stack.rel(path), "is not used by any file_sd config of prometheus.yml")
    for pattern in cfg.get("rule_files") or []:
        if pattern == GAMEDAY_DRILL_RULES:
            # Empty by design: only the native game day drops a rule file there; a glob matching nothing is fine.
            continue
        container = os.path.normpath(os.path.join(config_dir, pattern))
        host = stack.host_path("prometheus", container)
        if check(host is not None, where, f"rule_files {pattern}: {container} is not mounted in compose"):
            check(bool(glob.glob(host)), where, f"rule_files {pattern}: matches no file ({stack.rel(host)})")


def check_grafana(stack):
    if "grafana" not in stack.services:
        return
    prov = os.path.join(stack.repo, "monitoring", "grafana", "provisioning")
    providers = glob.glob(os.path.join(prov, "dashboards", "*.y*ml"))
    if not providers:
        print("compose: note: no Grafana dashboard provider yet; not checking where dashboards are mounted",
              file=sys.stderr)
    for path in providers:
        for provider in load_yaml(path).get("providers") or []:
            target = (provider.get("options") or {}).get("path")
            if not target:
                continue
            host = stack.host_path("grafana", target.rstrip("/"))
            check(host is not None and os.path.realpath(host) == os.path.join(stack.repo, "dashboards"),
                  stack.rel(path), f"provider {provider.get('name')!r} reads {target}, where compose does not "
                                   f"mount the repository's dashboards/")
    for path in glob.glob(os.path.join(prov, "datasources", "*.y*ml")):
        for ds in load_yaml(path).get("datasources") or []:
            for host, port in URL.findall(str(ds.get("url") or "")):
                stack.check_reference(f"{stack.rel(path)} datasource {ds.get('name')!r}", host, port,
                                      from_service="grafana")


def check_alertmanager(stack):
    path = os.path.join(stack.repo, "monitoring", "alertmanager", "alertmanager.yml")
    if not os.path.exists(path) or "alertmanager" not in stack.services:
        return
    for receiver in load_yaml(path).get("receivers") or []:
        for hook in receiver.get("webhook_configs") or []:
            for host, port in URL.findall(str(hook.get("url") or "")):
                stack.check_reference(f"{stack.rel(path)} receiver {receiver.get('name')!r}", host, port,
                                      from_service="alertmanager")


def check_env_example(stack):
    compose_file = os.path.join(stack.compose_dir, "docker-compose.yml")
    example = os.path.join(stack.compose_dir, ".env.example")
    text = open(compose_file).read()
    # ${NAME}, ${NAME:?msg}, ${NAME?msg}, ${NAME:-default}, ...; $$ is a literal dollar.
    used = {}
    for m in re.finditer(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(:?[-?+])?", text):
        used.setdefault(m.group(1), set()).add(m.group(2) or "")
    if not check(os.path.exists(example), "compose/.env.example", "missing"):
        return
    values = {}
    for line in open(example):
        m = re.match(r"^\s*([A-Za-z_][A-Za-z0-9_]*)=(.*)$", line)
        if m:
            values[m.group(1)] = m.group(2).strip()
    for name, ops in sorted(used.items()):
        check(name in values, "compose/.env.example", f"does not list {name}, which docker-compose.yml uses")
        required = any(op.endswith("?") for op in ops)
        if required:
            check(values.get(name, "") == "", "compose/.env.example",
                  f"{name} is required (no default): leave its value empty in the example")
        if required or values.get(name) == "":
            # A secret: no default anywhere, and an empty value must not pass either.
            check(ops == {":?"}, "compose/docker-compose.yml",
                  f"{name} has no value in .env.example: write ${{{name}:?...}} at every use, never a default")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-json", required=True, help="output of docker-compose config --format json")
    parser.add_argument("--repo", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    args = parser.parse_args()
    with open(args.config_json) as f:
        stack = Stack(json.load(f), args.repo)

    check_services(stack)
    check_targets(stack)
    check_grafana(stack)
    check_alertmanager(stack)
    check_env_example(stack)

    for failure in failures:
        print(f"compose: FAIL {failure}", file=sys.stderr)
    if failures:
        print(f"compose: {len(failures)} static check(s) failed, {passed} ok", file=sys.stderr)
        return 1
    print(f"compose: all {passed} static checks ok", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
