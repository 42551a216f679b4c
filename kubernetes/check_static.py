#!/usr/bin/python3
"""Static checks of the rendered Kubernetes overlays: what neither the schemas nor a cluster-less tool can see.

Input is what `kubectl kustomize` rendered for each overlay (one multi-document YAML file per overlay), so the
checks look at what would be applied, not at how the kustomizations spell it.

Checked, each failure named with the overlay and the object it comes from:
  * every object names its apiVersion, kind and name; the kinds are sorted for the schema checks: the Prometheus
    Operator's and CloudNativePG's custom resources go to check_operator_kinds.mjs, everything else to
    check_core_kinds.py (kubernetes-validate), which fails on a kind it has no schema for (so no kind goes
    unchecked);
  * every ServiceMonitor selects (labels and namespaceSelector) at least one Service, and every Service it selects
    has each endpoint's named port; every PodMonitor selects a pod template (or a CloudNativePG Cluster's
    instances) with each endpoint's named container port; every Service selects a pod template whose container
    ports its targetPorts name; the jobs the monitors give their targets include those the alert rules match on
    (app and inbox; postgres and redis where the overlay runs them);
  * every dashboard ConfigMap (label grafana_dashboard) holds files of dashboards/ byte for byte, and every
    dashboards/*.json is in one;
  * every ServiceMonitor, PodMonitor and PrometheusRule carries the release label that components/release-label
    writes (the one place its value is written), and no other object does; the chart values select on that value
    if they name one;
  * the app and the inbox run as the Dockerfile's USER, as non-root, with a read-only root filesystem, no privilege
    escalation, every capability dropped and the runtime's seccomp profile; listen on 0.0.0.0 at the ports of
    monitoring/topology.yml, which are their container ports; the app's grace period outlasts its preStop sleep
    plus APP_SHUTDOWN_TIMEOUT_SECONDS, and fault injection stays off;
  * the Ingress routes to Services and ports of the overlay, never to the admin listener; PodDisruptionBudgets and
    NetworkPolicies select pods, HPAs scale workloads of the overlay; the ConfigMaps and claims that pods mount,
    and the ConfigMap keys they read, are rendered too (the Secrets they read are listed: the user or an operator
    makes those);
  * no Secret with data is rendered except the generated Alertmanager configuration, which equals its file and
    holds no credential (those are read from mounted files);
  * the groups of every PrometheusRule are written out for promtool (check rules, and the tests of alerts/tests
    with rule_files pointed at them); they are the same in every overlay, and equal to the groups of the
    alerts/*.yml file each was generated from (each group with the native evaluation interval, unless it sets
    one), so a stale generated file fails here already.

Usage: check_static.py --out DIR [--repo ROOT] OVERLAY.yaml...
  Each OVERLAY.yaml is one overlay as kustomize rendered it. Writes into --out: core/<overlay>.yaml (for
  check_core_kinds.py), operator/<overlay>.json (for check_operator_kinds.mjs), rules/<overlay>/<PrometheusRule>.yml
  and rule-tests/ (the tests of alerts/tests on the first overlay's rules).
"""
import argparse
import base64
import glob
import json
import os
import re
import sys

import yaml

# libyaml's parser and emitter (python3-yaml has them): the rendered dashboards are megabytes of YAML.
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

# The custom resources schema-checked by check_operator_kinds.mjs (with the npm models); every other kind goes to
# kubernetes-validate, which knows only Kubernetes' own.
OPERATOR_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PodMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
    ("postgresql.cnpg.io/v1", "Cluster"),
}
MONITOR_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}
# What a CloudNativePG Cluster's instance pods look like to a PodMonitor: the operator labels them with the
# cluster's name and as instances (not a pooler's pods), and names their ports (its monitoring documentation: the
# exporter is port 9187, `metrics`).
CNPG_POD_LABELS = {"cnpg.io/cluster": None, "cnpg.io/podRole": "instance"}   # None: the Cluster's name
CNPG_PORTS = {"postgresql": 5432, "metrics": 9187, "status": 8000}

TOPOLOGY = "monitoring/topology.yml"
PROMETHEUS_CONFIG = "monitoring/prometheus/prometheus.yml"
DOCKERFILE = "compose/app.Dockerfile"
ENV_EXAMPLE = ".env.example"
DASHBOARDS = "dashboards"
DASHBOARD_LABEL = "grafana_dashboard"
RELEASE_COMPONENT = "kubernetes/components/release-label"
RELEASE_LABEL = "release"
CHART_VALUES = "kubernetes/chart-config/kube-prometheus-stack.values.yaml"
# The pages whose `helm install <release> ...` lines users copy: the release name is the label's value.
HELM_INSTALL_DOCS = [CHART_VALUES, "docs/kubernetes.md"]
# The one Secret with data that is committed: the Alertmanager configuration, generated from
# monitoring/alertmanager/alertmanager.yml; it holds no credential (the webhook token is a mounted file).
ALERTMANAGER_SECRET = "alertmanager-sre-stack"
ALERTMANAGER_KEY = "alertmanager.yaml"
ALERTMANAGER_FILE = "kubernetes/chart-config/alertmanager.yaml"
# Keys of an Alertmanager configuration whose value would be a credential (each has a *_file variant).
CREDENTIAL_KEYS = {"password", "bearer_token", "credentials", "api_key", "auth_password", "auth_secret",
                   "client_secret", "routing_key", "service_key", "token", "bot_token", "api_url", "user_key"}
# The containers these checks hold to the image's promises: workload name -> topology program, and the variables
# that set each listener's address (their defaults bind loopback, which nothing outside the pod reaches).
CONTAINERS = {
    "app": ("app", {"api": "APP_LISTEN_ADDR", "admin": "APP_ADMIN_ADDR"}),
    "inbox": ("inbox", {"http": "INBOX_LISTEN_ADDR"}),
}
PROMETHEUS_RULE_PREFIX = "sre-stack-"

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


def say(message):
    print(f"kubernetes: {message}", file=sys.stderr)


class Obj:
    """One rendered object, and where it came from."""

    def __init__(self, overlay, doc):
        self.overlay = overlay
        self.doc = doc
        self.api_version = doc.get("apiVersion")
        self.kind = doc.get("kind")
        meta = doc.get("metadata") or {}
        self.name = meta.get("name")
        self.namespace = meta.get("namespace") or "default"
        self.labels = meta.get("labels") or {}

    @property
    def where(self):
        return f"{self.overlay}: {self.kind} {self.namespace}/{self.name}"

    @property
    def spec(self):
        return self.doc.get("spec") or {}


def load_overlays(paths):
    overlays = {}
    for path in paths:
        overlay = os.path.basename(path)[:-len(".yaml")]
        with open(path) as f:
            docs = [d for d in yaml.load_all(f, Loader=LOADER) if d is not None]
        overlays[overlay] = [Obj(overlay, d) for d in docs]
    return overlays


def selector_matches(selector, labels):
    """A LabelSelector (matchLabels, matchExpressions) against a set of labels. An empty selector selects all."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def namespaces_of(monitor):
    """The namespaces a monitor's namespaceSelector picks; None for any."""
    ns = monitor.spec.get("namespaceSelector") or {}
    if ns.get("any"):
        return None
    return set(ns.get("matchNames") or []) or {monitor.namespace}


class PodTemplate:
    """A pod that a workload (or a CloudNativePG Cluster) makes: its labels and containers."""

    def __init__(self, owner, namespace, labels, containers):
        self.owner, self.namespace, self.labels, self.containers = owner, namespace, labels, containers

    def port_names(self):
        return {p.get("name") for c in self.containers for p in c.get("ports") or [] if p.get("name")}

    def has_port(self, port):
        """A Service's targetPort: a container port's name, or its number."""
        if isinstance(port, int):
            return any(p.get("containerPort") == port for c in self.containers for p in c.get("ports") or [])
        return port in self.port_names()


def pod_templates(objs):
    out = []
    for o in objs:
        if o.kind in WORKLOAD_KINDS:
            template = o.spec.get("template") or {}
            spec = template.get("spec") or {}
            out.append(PodTemplate(o, o.namespace, (template.get("metadata") or {}).get("labels") or {},
                                   spec.get("containers") or []))
        elif o.kind == "Pod":
            out.append(PodTemplate(o, o.namespace, o.labels, o.spec.get("containers") or []))
        elif (o.api_version, o.kind) == ("postgresql.cnpg.io/v1", "Cluster"):
            out.append(PodTemplate(o, o.namespace, {k: v or o.name for k, v in CNPG_POD_LABELS.items()},
                                   [{"name": "postgres", "ports": [{"name": n, "containerPort": p}
                                                                   for n, p in CNPG_PORTS.items()]}]))
    return out


def job_of(monitor, target_labels, default):
    """The job label Prometheus gives a monitor's targets: a relabeling that sets job, else jobLabel's value on
    the Service (or pod), else the default (the Service's name; <namespace>/<name> for a PodMonitor)."""
    endpoints = monitor.spec.get("endpoints") or monitor.spec.get("podMetricsEndpoints") or []
    for endpoint in endpoints:
        for relabel in endpoint.get("relabelings") or []:
            if relabel.get("targetLabel") == "job" and relabel.get("action", "replace") == "replace" \
                    and "replacement" in relabel and not relabel.get("sourceLabels"):
                return relabel["replacement"]
    job_label = monitor.spec.get("jobLabel")
    if job_label and job_label in target_labels:
        return target_labels[job_label]
    return default


def check_monitors(overlay, objs):
    """ServiceMonitors select Services with their ports, PodMonitors pods with theirs, Services pods."""
    services = [o for o in objs if o.kind == "Service"]
    pods = pod_templates(objs)
    jobs = set()
    for svc in services:
        selector = svc.spec.get("selector")
        if not selector:
            continue    # headless/external: nothing to select
        chosen = [p for p in pods if p.namespace == svc.namespace and selector_matches({"matchLabels": selector},
                                                                                          p.labels)]
        if not check(chosen, svc.where, f"its selector {selector} selects no pod template of this overlay"):
            continue
        for port in svc.spec.get("ports") or []:
            target = port.get("targetPort", port.get("port"))
            for p in chosen:
                check(p.has_port(target), svc.where,
                      f"port {port.get('name') or port.get('port')}: targetPort {target} is no container port of "
                      f"{p.owner.kind} {p.owner.name} (it has {sorted(p.port_names())})")
    for mon in objs:
        if mon.kind not in ("ServiceMonitor", "PodMonitor"):
            continue
        namespaces = namespaces_of(mon)
        if mon.kind == "ServiceMonitor":
            candidates = [(s.where, s.labels, {p.get("name") for p in s.spec.get("ports") or []}, s.name)
                          for s in services
                          if (namespaces is None or s.namespace in namespaces)
                          and selector_matches(mon.spec.get("selector"), s.labels)]
            endpoints, what = mon.spec.get("endpoints") or [], "Service"
        else:
            candidates = [(p.owner.where, p.labels, p.port_names(), f"{mon.namespace}/{mon.name}") for p in pods
                          if (namespaces is None or p.namespace in namespaces)
                          and selector_matches(mon.spec.get("selector"), p.labels)]
            endpoints, what = mon.spec.get("podMetricsEndpoints") or [], "pod template"
        if not check(candidates, mon.where,
                     f"selects no {what} (selector {mon.spec.get('selector')}, namespaces "
                     f"{'any' if namespaces is None else sorted(namespaces)})"):
            continue
        check(endpoints, mon.where, "has no endpoints")
        for i, endpoint in enumerate(endpoints):
            port = endpoint.get("port")
            if not check(isinstance(port, str) and port, mon.where,
                         f"endpoint {i} names no port (name the {what}'s port: numbers drift)"):
                continue
            for where, _, names, _ in candidates:
                check(port in names, mon.where, f"endpoint {i}: port {port!r} is not a named port of {where} "
                                                f"(it has {sorted(n for n in names if n)})")
        for _, labels, _, default in candidates:
            jobs.add(job_of(mon, labels, default))
    # The alert rules match on these jobs: the app and the inbox always, Postgres and Redis where this overlay
    # runs them.
    wanted = {"app", "inbox"}
    if any((o.api_version, o.kind) == ("postgresql.cnpg.io/v1", "Cluster") for o in objs):
        wanted.add("postgres")
    if any(o.kind in WORKLOAD_KINDS and o.name == "redis" for o in objs):
        wanted.add("redis")
    for job in sorted(wanted - jobs):
        check(False, overlay, f"no ServiceMonitor or PodMonitor gives its targets job={job!r}, which the alert "
                              "rules match on (name the Service so, or set jobLabel or a job relabeling)")
    return jobs


def check_references(objs):
    """What the objects name of each other: the Ingress's backends (never the admin listener), what PDBs, HPAs and
    NetworkPolicies apply to, and the ConfigMaps and claims pods mount. Returns the Secrets the pods read, which
    the user (docs/kubernetes.md) or an operator creates, as {namespace/name}."""
    by_kind = {}
    for o in objs:
        by_kind.setdefault(o.kind, {})[(o.namespace, o.name)] = o
    pods = pod_templates(objs)
    for ing in objs:
        if ing.kind != "Ingress":
            continue
        backends = [ing.spec.get("defaultBackend")] + [
            path.get("backend") for rule in ing.spec.get("rules") or []
            for path in (rule.get("http") or {}).get("paths") or []]
        for backend in filter(None, backends):
            svc_ref = backend.get("service") or {}
            svc = by_kind.get("Service", {}).get((ing.namespace, svc_ref.get("name")))
            if not check(svc, ing.where, f"routes to Service {svc_ref.get('name')}, which this overlay lacks"):
                continue
            port = svc_ref.get("port") or {}
            ports = [p for p in svc.spec.get("ports") or []
                     if p.get("name") == port.get("name") or (port.get("number") and p.get("port") == port["number"])]
            if check(ports, ing.where, f"routes to port {port} that Service {svc.name} lacks"):
                check(ports[0].get("name") != "admin", ing.where,
                      "routes to the admin listener (/metrics, /fault): the Ingress is for the API only")
    for o in objs:
        if o.kind == "PodDisruptionBudget" or o.kind == "NetworkPolicy":
            key = "selector" if o.kind == "PodDisruptionBudget" else "podSelector"
            selector = o.spec.get(key)
            check(any(p.namespace == o.namespace and selector_matches(selector, p.labels) for p in pods), o.where,
                  f"its {key} {selector} selects no pod template of this overlay")
        if o.kind == "HorizontalPodAutoscaler":
            ref = o.spec.get("scaleTargetRef") or {}
            check((o.namespace, ref.get("name")) in by_kind.get(ref.get("kind"), {}), o.where,
                  f"scales {ref.get('kind')} {o.namespace}/{ref.get('name')}, which this overlay lacks")
    secrets = set()
    for p in pods:
        if not isinstance(p.owner.spec.get("template"), dict):
            continue
        spec = p.owner.spec["template"].get("spec") or {}
        claims = {(t.get("metadata") or {}).get("name") for t in p.owner.spec.get("volumeClaimTemplates") or []}
        for vol in spec.get("volumes") or []:
            cm = vol.get("configMap")
            if cm and not cm.get("optional"):
                check((p.namespace, cm.get("name")) in by_kind.get("ConfigMap", {}), p.owner.where,
                      f"volume {vol.get('name')} mounts ConfigMap {cm.get('name')}, which this overlay lacks")
            pvc = vol.get("persistentVolumeClaim")
            if pvc:
                check((p.namespace, pvc.get("claimName")) in by_kind.get("PersistentVolumeClaim", {})
                      or pvc.get("claimName") in claims, p.owner.where,
                      f"volume {vol.get('name')} claims {pvc.get('claimName')}, which this overlay lacks")
            if vol.get("secret"):
                secrets.add(f"{p.namespace}/{vol['secret'].get('secretName')}")
        for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
            for e in c.get("env") or []:
                ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                if ref:
                    secrets.add(f"{p.namespace}/{ref.get('name')}")
                ref = (e.get("valueFrom") or {}).get("configMapKeyRef")
                if ref and not ref.get("optional"):
                    cm = by_kind.get("ConfigMap", {}).get((p.namespace, ref.get("name")))
                    check(cm and ref.get("key") in (cm.doc.get("data") or {}), p.owner.where,
                          f"env {e.get('name')} reads key {ref.get('key')} of ConfigMap {ref.get('name')}, which "
                          "this overlay lacks")
    rendered = {f"{ns}/{name}" for ns, name in by_kind.get("Secret", {})}
    return secrets - rendered


def check_dashboards(repo, overlay, objs):
    files = {os.path.basename(p): p for p in glob.glob(os.path.join(repo, DASHBOARDS, "*.json"))}
    seen = set()
    for cm in objs:
        if cm.kind != "ConfigMap" or DASHBOARD_LABEL not in cm.labels:
            continue
        check(cm.labels[DASHBOARD_LABEL] == "1", cm.where,
              f"label {DASHBOARD_LABEL}={cm.labels[DASHBOARD_LABEL]!r}: the chart's sidecar looks for \"1\"")
        data = cm.doc.get("data") or {}
        check(data and not cm.doc.get("binaryData"), cm.where, "a dashboard ConfigMap holds no text data")
        for key, text in sorted(data.items()):
            if not check(key in files, cm.where, f"{key} is not a file of {DASHBOARDS}/"):
                continue
            with open(files[key], encoding="utf-8") as f:
                check(text == f.read(), cm.where, f"{key} differs from {DASHBOARDS}/{key}: regenerate, never edit")
            seen.add(key)
    for name in sorted(set(files) - seen):
        check(False, overlay, f"{DASHBOARDS}/{name} is in no dashboard ConfigMap (label {DASHBOARD_LABEL})")
    return len(seen)


def release_value(repo):
    """The value components/release-label's LabelTransformer writes: the one place it is set."""
    values = set()
    for path in sorted(glob.glob(os.path.join(repo, RELEASE_COMPONENT, "*.yaml"))
                       + glob.glob(os.path.join(repo, RELEASE_COMPONENT, "*.yml"))):
        with open(path) as f:
            for doc in yaml.safe_load_all(f):
                for node in [doc] + ((doc or {}).get("transformers") or [] if isinstance(doc, dict) else []):
                    if isinstance(node, dict) and node.get("kind") == "LabelTransformer":
                        value = (node.get("labels") or {}).get(RELEASE_LABEL)
                        if value is not None:
                            values.add(str(value))
    check(len(values) == 1, RELEASE_COMPONENT,
          f"sets the {RELEASE_LABEL} label to {sorted(values) or 'nothing'}: write it once, in one LabelTransformer")
    return next(iter(values)) if len(values) == 1 else None


def check_release_values_file(repo, release):
    """The chart selects rules and monitors by the release label. Its values leave the selectors to
    `*NilUsesHelmValues` (select by `release: <Helm release name>`), or name a value that must be ours; either way
    the release name users install with, in every `helm install` line they copy, must be the label's value."""
    path = os.path.join(repo, CHART_VALUES)
    if release is None or not os.path.exists(path):
        return
    with open(path) as f:
        values = yaml.safe_load(f) or {}
    spec = ((values.get("prometheus") or {}).get("prometheusSpec") or {})
    for key in ("ruleSelector", "serviceMonitorSelector", "podMonitorSelector"):
        labels = (spec.get(key) or {}).get("matchLabels") or {}
        if RELEASE_LABEL in labels:
            check(str(labels[RELEASE_LABEL]) == release, CHART_VALUES,
                  f"prometheus.prometheusSpec.{key} selects {RELEASE_LABEL}={labels[RELEASE_LABEL]!r}, but "
                  f"{RELEASE_COMPONENT} writes {release!r}")
        else:
            check(spec.get(f"{key}NilUsesHelmValues") is True, CHART_VALUES,
                  f"prometheus.prometheusSpec.{key} names no {RELEASE_LABEL} and {key}NilUsesHelmValues is not "
                  f"true: the chart would not select by the release label")
    for doc in HELM_INSTALL_DOCS:
        full = os.path.join(repo, doc)
        if not os.path.exists(full):
            check(False, doc, "is missing: it tells users how to install the chart")
            continue
        with open(full) as f:
            names = re.findall(r"helm (?:install|upgrade --install) (\S+)", f.read())
        check(bool(names), doc, "has no `helm install <release> ...` line")
        for name in names:
            check(name == release, doc,
                  f"installs the chart as release {name!r}, but {RELEASE_COMPONENT} writes {RELEASE_LABEL}="
                  f"{release!r}: the chart's Prometheus would select none of the stack's monitors and rules")


def check_release_labels(objs, release):
    if release is None:
        return
    for o in objs:
        if o.kind in MONITOR_KINDS:
            check(o.labels.get(RELEASE_LABEL) == release, o.where,
                  f"has {RELEASE_LABEL}={o.labels.get(RELEASE_LABEL)!r}, not the release label {release!r} of "
                  f"{RELEASE_COMPONENT}: the chart's Prometheus would not select it")
        else:
            check(RELEASE_LABEL not in o.labels, o.where,
                  f"carries the {RELEASE_LABEL} label: {RELEASE_COMPONENT} puts it on the Prometheus Operator kinds "
                  "only")


def dockerfile_user(repo):
    with open(os.path.join(repo, DOCKERFILE)) as f:
        users = re.findall(r"^USER\s+(\d+):(\d+)\s*$", f.read(), re.M)
    check(users, DOCKERFILE, "has no numeric USER uid:gid")
    return (int(users[-1][0]), int(users[-1][1])) if users else (None, None)


def env_example(repo):
    out = {}
    with open(os.path.join(repo, ENV_EXAMPLE)) as f:
        for line in f:
            m = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", line.strip())
            if m:
                out[m.group(1)] = m.group(2)
    return out


def prestop_sleep(container):
    """Seconds a preStop hook sleeps: the sleep action, or an exec of sleep N. None without one."""
    pre = (container.get("lifecycle") or {}).get("preStop") or {}
    if "sleep" in pre:
        return (pre["sleep"] or {}).get("seconds")
    command = (pre.get("exec") or {}).get("command") or []
    if len(command) == 2 and os.path.basename(str(command[0])) == "sleep" and str(command[1]).isdigit():
        return int(command[1])
    return None


def check_containers(repo, objs, topology):
    uid, gid = dockerfile_user(repo)
    defaults = env_example(repo)
    listeners = {p["name"]: {l["name"]: l["port"] for l in p["listeners"]} for p in topology["programs"]}
    overlay = objs[0].overlay if objs else "?"
    for name, (program, addr_vars) in CONTAINERS.items():
        workloads = [o for o in objs if o.kind in WORKLOAD_KINDS and o.name == name]
        if not check(len(workloads) == 1, overlay, f"renders {len(workloads)} workloads named {name}, not one"):
            continue
        w = workloads[0]
        pod = (w.spec.get("template") or {}).get("spec") or {}
        pod_sc = pod.get("securityContext") or {}
        containers = pod.get("containers") or []
        for c in containers + (pod.get("initContainers") or []):
            where = f"{w.where} container {c.get('name')}"
            sc = c.get("securityContext") or {}
            effective = {**pod_sc, **sc}    # the container's own settings win
            check(effective.get("runAsNonRoot") is True, where, "runAsNonRoot is not true")
            check(effective.get("runAsUser") == uid, where,
                  f"runAsUser {effective.get('runAsUser')}: the image's USER is {uid}:{gid} ({DOCKERFILE})")
            check(effective.get("runAsGroup") == gid, where,
                  f"runAsGroup {effective.get('runAsGroup')}: the image's USER is {uid}:{gid} ({DOCKERFILE})")
            check(sc.get("readOnlyRootFilesystem") is True, where, "readOnlyRootFilesystem is not true")
            check(sc.get("allowPrivilegeEscalation") is False, where, "allowPrivilegeEscalation is not false")
            check("ALL" in ((sc.get("capabilities") or {}).get("drop") or []), where,
                  "does not drop ALL capabilities")
            check((effective.get("seccompProfile") or {}).get("type") == "RuntimeDefault", where,
                  "seccompProfile is not RuntimeDefault")
        main = next((c for c in containers if c.get("name") == name), containers[0] if containers else None)
        if main is None:
            check(False, w.where, "has no container")
            continue
        where = f"{w.where} container {main.get('name')}"
        ports = {p.get("name"): p.get("containerPort") for p in main.get("ports") or []}
        check(ports == listeners[program], where,
              f"container ports {ports} are not the listeners {listeners[program]} of {program} in {TOPOLOGY}")
        env = {e.get("name"): e.get("value") for e in main.get("env") or []}
        for listener, var in addr_vars.items():
            want = f"0.0.0.0:{listeners[program][listener]}"
            check(env.get(var) == want, where, f"{var}={env.get(var)!r}, not {want!r} (the default "
                                               f"{defaults.get(var)!r} is out of reach of the pod's network)")
        if name == "app":
            check(str(env.get("APP_FAULT_INJECTION_ENABLED", "false")).lower() != "true", where,
                  "APP_FAULT_INJECTION_ENABLED is true: fault injection stays off on Kubernetes")
            shutdown = int(env.get("APP_SHUTDOWN_TIMEOUT_SECONDS") or defaults.get("APP_SHUTDOWN_TIMEOUT_SECONDS") or 0)
            sleep = prestop_sleep(main)
            grace = pod.get("terminationGracePeriodSeconds", 30)
            if check(sleep is not None, where, "has no preStop sleep: endpoints would still route to a stopping pod"):
                check(grace > sleep + shutdown, w.where,
                      f"terminationGracePeriodSeconds {grace} is not longer than the preStop sleep {sleep} s plus "
                      f"APP_SHUTDOWN_TIMEOUT_SECONDS {shutdown} s: the kubelet would kill in-flight requests")


def check_secrets(repo, objs):
    for o in objs:
        if o.kind != "Secret" or not (o.doc.get("data") or o.doc.get("stringData")):
            continue
        if not check(o.name == ALERTMANAGER_SECRET, o.where,
                     "a Secret with data is rendered: secrets are created by hand (docs/kubernetes.md), never "
                     "committed"):
            continue
        data = dict(o.doc.get("stringData") or {})
        data.update({k: base64.b64decode(v).decode() for k, v in (o.doc.get("data") or {}).items()})
        check(set(data) == {ALERTMANAGER_KEY}, o.where, f"holds {sorted(data)}, not just {ALERTMANAGER_KEY}")
        path = os.path.join(repo, ALERTMANAGER_FILE)
        if ALERTMANAGER_KEY in data and check(os.path.exists(path), o.where, f"{ALERTMANAGER_FILE} is missing"):
            with open(path) as f:
                check(data[ALERTMANAGER_KEY] == f.read(), o.where,
                      f"{ALERTMANAGER_KEY} differs from {ALERTMANAGER_FILE}")
            config = yaml.safe_load(data[ALERTMANAGER_KEY]) or {}

            def walk(node, path):
                if isinstance(node, dict):
                    for k, v in node.items():
                        check(not (k in CREDENTIAL_KEYS and v), o.where,
                              f"{path}{k} holds a credential: read it from a mounted file ({k}_file)")
                        walk(v, f"{path}{k}.")
                elif isinstance(node, list):
                    for i, v in enumerate(node):
                        walk(v, f"{path}{i}.")
            walk(config, "")


def rule_groups(o):
    return (o.spec.get("groups") or []) if o.kind == "PrometheusRule" else []


def check_and_write_rules(repo, overlays, out):
    """Writes each overlay's PrometheusRules as promtool rule files; returns {overlay: {rule name: path}}."""
    # The generator gives every group without an interval of its own the native stack's evaluation interval (the
    # chart's Prometheus evaluates every 30 s otherwise, and the rules' `for` and windows were chosen for ours).
    with open(os.path.join(repo, PROMETHEUS_CONFIG)) as f:
        interval = ((yaml.safe_load(f) or {}).get("global") or {}).get("evaluation_interval")
    check(interval, PROMETHEUS_CONFIG, "has no global.evaluation_interval")
    sources = {}
    for path in sorted(glob.glob(os.path.join(repo, "alerts", "*.yml"))):
        with open(path) as f:
            groups = (yaml.safe_load(f) or {}).get("groups") or []
        expected = [g if "interval" in g else {**g, "interval": interval} for g in groups]
        sources[PROMETHEUS_RULE_PREFIX + os.path.basename(path)[:-len(".yml")]] = (path, expected)
    written = {}
    for overlay, objs in overlays.items():
        rules = {o.name: rule_groups(o) for o in objs if o.kind == "PrometheusRule"}
        written[overlay] = {}
        os.makedirs(os.path.join(out, "rules", overlay), exist_ok=True)
        for name, groups in sorted(rules.items()):
            path = os.path.join(out, "rules", overlay, f"{name}.yml")
            with open(path, "w") as f:
                yaml.safe_dump({"groups": groups}, f, sort_keys=False)
            written[overlay][name] = path
            if check(name in sources, f"{overlay}: PrometheusRule {name}",
                     f"comes from no alerts/*.yml (expected {PROMETHEUS_RULE_PREFIX}<file stem>)"):
                check(groups == sources[name][1], f"{overlay}: PrometheusRule {name}",
                      f"its groups differ from {os.path.relpath(sources[name][0], repo)} (each with interval "
                      f"{interval} unless it sets one): run `make generate`")
        for name in sorted(set(sources) - set(rules)):
            check(False, overlay, f"no PrometheusRule {name} for {os.path.relpath(sources[name][0], repo)}")
    first = next(iter(overlays), None)
    for overlay, objs in overlays.items():
        if overlay == first:
            continue
        mine = {o.name: rule_groups(o) for o in objs if o.kind == "PrometheusRule"}
        theirs = {o.name: rule_groups(o) for o in overlays[first] if o.kind == "PrometheusRule"}
        check(mine == theirs, overlay, f"its PrometheusRules differ from those of {first}: the overlays share one "
                                       "generated file")
    return written


RULE_FILES_BLOCK = re.compile(r"^rule_files:[ \t]*\n(?:(?:[ \t]+-.*|[ \t]*#.*|[ \t]*)\n)*", re.M)


def write_rule_tests(repo, rules, out):
    """Copies alerts/tests/*.yml with each rule file (resolved against the test's directory, in its order) pointed
    at the extracted PrometheusRule generated from it."""
    tests_out = os.path.join(out, "rule-tests")
    os.makedirs(tests_out, exist_ok=True)
    count = 0
    for path in sorted(glob.glob(os.path.join(repo, "alerts", "tests", "*.yml"))):
        rel = os.path.relpath(path, repo)
        with open(path) as f:
            text = f.read()
        original = yaml.safe_load(text) or {}
        targets = []
        for entry in original.get("rule_files") or []:
            source = os.path.normpath(os.path.join(os.path.dirname(path), entry))
            name = PROMETHEUS_RULE_PREFIX + os.path.basename(source)[:-len(".yml")]
            if check(os.path.dirname(source) == os.path.join(repo, "alerts") and name in rules, rel,
                     f"rule file {entry} has no PrometheusRule {name}"):
                targets.append(rules[name])
        if not check(RULE_FILES_BLOCK.search(text), rel, "has no rule_files block to point at the extracted rules"):
            continue
        block = "rule_files:\n" + "".join(f"  - {json.dumps(t)}\n" for t in targets) + "\n"
        rewritten = RULE_FILES_BLOCK.sub(lambda _: block, text, count=1)
        parsed = yaml.safe_load(rewritten) or {}
        check(parsed.get("rule_files") == targets
              and {k: v for k, v in parsed.items() if k != "rule_files"}
              == {k: v for k, v in original.items() if k != "rule_files"},
              rel, "rewriting its rule_files changed more than the rule files")
        with open(os.path.join(tests_out, os.path.basename(path)), "w") as f:
            f.write(rewritten)
        count += 1
    return count


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rendered", nargs="+", help="<overlay>.yaml as kustomize rendered it; the first one's "
                        "rules run the rule tests")
    parser.add_argument("--out", required=True, help="directory for the files the other checks read")
    parser.add_argument("--repo", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    args = parser.parse_args()
    repo = os.path.realpath(args.repo)
    overlays = load_overlays(args.rendered)
    with open(os.path.join(repo, TOPOLOGY)) as f:
        topology = yaml.safe_load(f)
    release = release_value(repo)
    check_release_values_file(repo, release)

    for sub in ("core", "operator"):
        os.makedirs(os.path.join(args.out, sub), exist_ok=True)
    for overlay, objs in overlays.items():
        for o in objs:
            check(o.api_version and o.kind and o.name, f"{overlay}: {o.kind} {o.name}",
                  "lacks apiVersion, kind or metadata.name")
        core = [o.doc for o in objs if (o.api_version, o.kind) not in OPERATOR_KINDS]
        operator = [{"where": o.where, "object": o.doc} for o in objs if (o.api_version, o.kind) in OPERATOR_KINDS]
        with open(os.path.join(args.out, "core", f"{overlay}.yaml"), "w") as f:
            yaml.dump_all(core, f, Dumper=DUMPER, sort_keys=False)
        with open(os.path.join(args.out, "operator", f"{overlay}.json"), "w") as f:
            json.dump(operator, f)
        jobs = check_monitors(overlay, objs)
        dashboards = check_dashboards(repo, overlay, objs)
        check_release_labels(objs, release)
        check_containers(repo, objs, topology)
        check_secrets(repo, objs)
        user_secrets = check_references(objs)
        kinds = {}
        for o in objs:
            kinds[o.kind] = kinds.get(o.kind, 0) + 1
        say(f"{overlay}: {len(objs)} objects ({', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))}); "
            f"{len(core)} for kubernetes-validate, {len(operator)} for the operator models; scrape jobs "
            f"{', '.join(sorted(jobs)) or 'none'}; {dashboards} dashboards; release label {release!r}; Secrets from "
            f"outside the manifests: {', '.join(sorted(user_secrets)) or 'none'}")

    written = check_and_write_rules(repo, overlays, args.out)
    first = next(iter(written), None)
    tests = write_rule_tests(repo, written[first], args.out) if first else 0
    if first:
        say(f"rules: {sum(len(r) for r in written.values())} PrometheusRules written for promtool; "
            f"{tests} rule tests pointed at those of {first}")

    for failure in dict.fromkeys(failures):
        print(f"kubernetes: FAIL {failure}", file=sys.stderr)
    if failures:
        print(f"kubernetes: {len(failures)} static check(s) failed, {passed} ok", file=sys.stderr)
        return 1
    print(f"kubernetes: all {passed} static checks ok", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
