#!/usr/bin/env python3
"""Checks that Grafana's provisioning (monitoring/grafana/provisioning/) fits the dashboards and compose:

  * one Prometheus data source with uid `prometheus` (what the dashboards' datasource variable resolves to and
    the alerts' dashboard links assume), the default one, not editable;
  * a read-only file provider (allowUiUpdates false, disableDeletion true) whose path is where
    compose/docker-compose.yml bind-mounts the repository's dashboards/ folder.

Run by schema-check.sh with the interpreter of dashboards/check/.venv, which has ruamel.yaml (a dependency of
check-jsonschema). Exit 1 on any finding.
"""
import glob
import os
import sys

from ruamel.yaml import YAML

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROVISIONING = os.path.join(ROOT, "monitoring", "grafana", "provisioning")
COMPOSE = os.path.join(ROOT, "compose", "docker-compose.yml")

yaml = YAML(typ="safe")
findings = []


def load_all(folder):
    docs = []
    for path in sorted(glob.glob(os.path.join(PROVISIONING, folder, "*.y*ml"))):
        with open(path) as f:
            docs.append((os.path.relpath(path, ROOT), yaml.load(f) or {}))
    if not docs:
        findings.append(f"monitoring/grafana/provisioning/{folder}/: no provisioning file")
    return docs


def compose_dashboards_mount():
    """Container path where compose mounts ../dashboards into the grafana service, or None."""
    if not os.path.exists(COMPOSE):
        return None
    with open(COMPOSE) as f:
        services = (yaml.load(f) or {}).get("services") or {}
    for volume in (services.get("grafana") or {}).get("volumes") or []:
        if isinstance(volume, dict):
            source, target = volume.get("source", ""), volume.get("target")
        else:
            parts = str(volume).split(":")
            source, target = parts[0], parts[1] if len(parts) > 1 else None
        if os.path.normpath(source).rstrip("/").endswith("dashboards") and "provisioning" not in source:
            return target
    return None


def main():
    datasources = [(path, ds) for path, doc in load_all("datasources") for ds in doc.get("datasources") or []]
    prom = [(path, ds) for path, ds in datasources if ds.get("uid") == "prometheus"]
    if len(prom) != 1:
        findings.append(f"expected exactly one data source with uid `prometheus`, found {len(prom)}")
    for path, ds in prom:
        if ds.get("type") != "prometheus":
            findings.append(f"{path}: data source `prometheus` has type {ds.get('type')!r}")
        if not ds.get("url"):
            findings.append(f"{path}: data source `prometheus` has no url")
        if ds.get("isDefault") is not True:
            findings.append(f"{path}: data source `prometheus` should be the default one")
        if ds.get("editable") is not False:
            findings.append(f"{path}: data source `prometheus` should not be editable in the UI")

    providers = [(path, p) for path, doc in load_all("dashboards") for p in doc.get("providers") or []]
    files = [(path, p) for path, p in providers if p.get("type", "file") == "file"]
    if not files:
        findings.append("no file dashboard provider")
    mount = compose_dashboards_mount()
    for path, p in files:
        if p.get("allowUiUpdates") is not False or p.get("disableDeletion") is not True:
            findings.append(f"{path}: provider {p.get('name')!r} must be read-only "
                            f"(allowUiUpdates: false, disableDeletion: true)")
        where = (p.get("options") or {}).get("path")
        if mount is None:
            findings.append(f"{os.path.relpath(COMPOSE, ROOT)}: no bind mount of dashboards/ in the grafana service")
        elif os.path.normpath(str(where)) != os.path.normpath(mount):
            findings.append(f"{path}: provider path {where!r} is not where compose mounts dashboards/ ({mount!r})")

    for f in findings:
        print(f"FAIL {f}")
    print(f"provisioning: {len(datasources)} data source(s), {len(providers)} dashboard provider(s), "
          f"{len(findings)} finding(s)")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
