#!/usr/bin/python3
"""Proves that kubernetes/check.sh catches what it claims to: each case below breaks one promise in a copy of the
files the manifests are made of (mostly with a patch added to every overlay, as a careless edit would), runs the
copy's kubernetes/check.sh on it, and requires a failure that names the broken thing. The unbroken copy must pass.
A check that stops catching a case fails this test.

The copy's check runs without the promtool rule tests (kubernetes/check.sh runs them once, on the real tree) and
without these tests; it shares the real run's tool cache.

Usage: check_static_test.py [--repo ROOT] [--case WORD]   (kubernetes/check.sh runs it)
"""
import argparse
import concurrent.futures
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
# What the manifests, their generators and the checks read: the copy holds only these.
COPIED = ["kubernetes/", "dashboards/", "runbooks/", "alerts/", "monitoring/", "compose/app.Dockerfile",
          ".env.example", "docs/kubernetes.md", "native/install.sh"]


def copy_tree(repo, dest):
    """The files of the checkout under COPIED (tracked, and new ones not ignored: a work in progress is tested
    as it is), without anything git ignores."""
    git = subprocess.run(["git", "-C", repo, "ls-files", "-z", "--cached", "--others", "--exclude-standard",
                          "--", *COPIED], capture_output=True, text=True)
    if git.returncode == 0:
        files = filter(None, git.stdout.split("\0"))
    else:   # not a git checkout (an unpacked release): everything under COPIED
        files = [os.path.relpath(os.path.join(d, f), repo) for top in COPIED
                 for d, _, names in os.walk(os.path.join(repo, top)) for f in names]
        files += [top for top in COPIED if os.path.isfile(os.path.join(repo, top))]
    for rel in files:
        src = os.path.join(repo, rel)
        if not os.path.isfile(src):
            continue    # deleted in the work tree
        os.makedirs(os.path.dirname(os.path.join(dest, rel)), exist_ok=True)
        shutil.copy2(src, os.path.join(dest, rel))


def overlays(root):
    return sorted(glob.glob(os.path.join(root, "kubernetes", "overlays", "*", "kustomization.yaml")))


def load(path):
    with open(path) as f:
        return yaml.safe_load(f)


def dump(path, data):
    with open(path, "w") as f:
        yaml.safe_dump(data, f, sort_keys=False)


def patch_overlays(kind, name, ops, only=None):
    """Adds a JSON patch of `kind` `name` to every overlay (or the `only`-th)."""
    def mutate(root):
        paths = overlays(root)
        for path in paths if only is None else [paths[only]]:
            k = load(path)
            k.setdefault("patches", []).append({"target": {"kind": kind, "name": name},
                                                "patch": yaml.safe_dump(ops)})
            dump(path, k)
    return mutate


def drop_component(component):
    def mutate(root):
        dropped = False
        for path in overlays(root):
            k = load(path)
            kept = [c for c in k.get("components") or [] if not c.rstrip("/").endswith(component)]
            dropped |= kept != (k.get("components") or [])
            k["components"] = kept
            dump(path, k)
        assert dropped, f"no overlay lists the component {component}"
    return mutate


def edit_rule(stem, change, generated=True, source=True):
    """Changes the first rule of alerts/<stem>.yml, and/or of the PrometheusRule generated from it."""
    def mutate(root):
        if source:
            path = os.path.join(root, "alerts", f"{stem}.yml")
            data = load(path)
            change(data["groups"][0]["rules"][0])
            dump(path, data)
        if generated:
            path = os.path.join(root, "kubernetes", "monitoring", "prometheus-rules.yaml")
            with open(path) as f:
                docs = list(yaml.safe_load_all(f))
            found = [d for d in docs if d and d.get("kind") == "PrometheusRule"
                     and d["metadata"]["name"] == f"sre-stack-{stem}"]
            assert found, f"no PrometheusRule sre-stack-{stem}"
            change(found[0]["spec"]["groups"][0]["rules"][0])
            with open(path, "w") as f:
                yaml.safe_dump_all(docs, f, sort_keys=False)
    return mutate


def set_key(key, value):
    def change(rule):
        rule[key] = value
    return change


def first_dashboard(root):
    """The first dashboard ConfigMap of dashboards/kustomization.yaml, and its file."""
    gen = load(os.path.join(root, "dashboards", "kustomization.yaml"))["configMapGenerator"][0]
    return gen["name"], os.path.basename(gen["files"][0].split("=")[-1])


def patch_dashboard(root):
    name, key = first_dashboard(root)
    patch_overlays("ConfigMap", name, [{"op": "replace", "path": f"/data/{key}", "value": "{}"}])(root)


def drop_dashboard(root):
    path = os.path.join(root, "dashboards", "kustomization.yaml")
    k = load(path)
    k["configMapGenerator"] = k["configMapGenerator"][1:]
    dump(path, k)


def add_base_resource(name, doc):
    def mutate(root):
        base = os.path.join(root, "kubernetes", "base")
        with open(os.path.join(base, name), "w") as f:
            yaml.safe_dump(doc, f)
        path = os.path.join(base, "kustomization.yaml")
        k = load(path)
        k["resources"].append(name)
        dump(path, k)
    return mutate


APP_CONTAINER = "/spec/template/spec/containers/0"


def rename_release_in_docs(root):
    path = os.path.join(root, "docs/kubernetes.md")
    with open(path) as f:
        text = f.read()
    with open(path, "w") as f:
        f.write(text.replace("helm install kube-prometheus-stack ", "helm install prometheus ", 1))


def cases():
    """(name, mutation, a word the failure must contain)."""
    return [
        ("a ServiceMonitor on a port its Service lacks",
         patch_overlays("ServiceMonitor", "app", [{"op": "replace", "path": "/spec/endpoints/0/port",
                                                   "value": "metrics"}]), "is not a named port"),
        ("a PodMonitor on a port the pods lack",
         patch_overlays("PodMonitor", "postgres", [{"op": "replace", "path": "/spec/podMetricsEndpoints/0/port",
                                                    "value": "exporter"}]), "is not a named port"),
        ("a ServiceMonitor that selects no Service",
         patch_overlays("ServiceMonitor", "inbox", [{"op": "add", "path": "/spec/selector/matchLabels/tier",
                                                     "value": "none"}]), "selects no Service"),
        ("an overlay without the release label", drop_component("release-label"), "not the release label"),
        ("docs that install the chart under another release name", rename_release_in_docs,
         "installs the chart as release 'prometheus'"),
        ("a rule that promtool refuses (in alerts/ and generated alike)",
         edit_rule("app", set_key("expr", "max by (job) (up{job=\"app\"} == 0")), "could not parse expression"),
        ("a stale generated rule file", edit_rule("app", set_key("for", "7m"), generated=False), "make generate"),
        ("overlays whose rules differ",
         patch_overlays("PrometheusRule", "sre-stack-app", [{"op": "replace", "path": "/spec/groups/0/rules/0/for",
                                                            "value": "7m"}], only=-1), "differ from those of"),
        ("a dashboard ConfigMap that differs from its file", patch_dashboard, "differs from dashboards/"),
        ("a dashboard in no ConfigMap", drop_dashboard, "is in no dashboard ConfigMap"),
        ("the app as root",
         patch_overlays("Deployment", "app", [{"op": "add", "path": f"{APP_CONTAINER}/securityContext/runAsUser",
                                               "value": 0}]), "runAsUser 0"),
        ("the inbox with a writable root filesystem",
         patch_overlays("Deployment", "inbox", [{"op": "add",
                                                 "path": f"{APP_CONTAINER}/securityContext/readOnlyRootFilesystem",
                                                 "value": False}]), "readOnlyRootFilesystem"),
        ("an app port that is not the topology's",
         patch_overlays("Deployment", "app", [{"op": "replace", "path": f"{APP_CONTAINER}/ports/0/containerPort",
                                               "value": 8088}]), "are not the listeners"),
        ("a grace period shorter than the drain",
         patch_overlays("Deployment", "app", [{"op": "replace",
                                               "path": "/spec/template/spec/terminationGracePeriodSeconds",
                                               "value": 12}]), "terminationGracePeriodSeconds 12"),
        ("an Ingress to the admin listener",
         patch_overlays("Ingress", "app", [{"op": "replace", "path": "/spec/rules/0/http/paths/0/backend/service/port",
                                            "value": {"name": "admin"}}]), "for the API only"),
        ("a pod mounting a ConfigMap that is not rendered",
         patch_overlays("Deployment", "inbox", [{"op": "add", "path": "/spec/template/spec/volumes/-",
                                                 "value": {"name": "extra", "configMap": {"name": "nowhere"}}}]),
         "ConfigMap nowhere, which this overlay lacks"),
        ("a committed Secret",
         add_base_resource("leaked-secret.yaml", {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "leaked"},
                                                  "data": {"password": "aHVudGVyMg=="}}),
         "a Secret with data is rendered"),
        ("an unknown field in a ServiceMonitor",
         patch_overlays("ServiceMonitor", "app", [{"op": "add", "path": "/spec/endpoints/0/scrapeIntervall",
                                                   "value": "5s"}]), "scrapeIntervall"),
        ("an unknown field in a Cluster",
         patch_overlays("Cluster", "postgres", [{"op": "add", "path": "/spec/instancez", "value": 3}]), "instancez"),
        ("a wrong type in a core kind",
         patch_overlays("Deployment", "app", [{"op": "replace", "path": "/spec/replicas", "value": "three"}]),
         "'three' is not of type"),
        ("an unknown field in a core kind",
         patch_overlays("Deployment", "inbox", [{"op": "add", "path": f"{APP_CONTAINER}/imagePullPolicyy",
                                                 "value": "Always"}]), "imagePullPolicyy"),
        ("a kind that nothing checks",
         add_base_resource("widget.yaml", {"apiVersion": "example.com/v1", "kind": "Widget",
                                           "metadata": {"name": "w"}, "spec": {}}),
         "neither kubernetes-validate nor an operator model"),
    ]


def run_check(root):
    run = subprocess.run([os.path.join(root, "kubernetes", "check.sh"), "--no-rule-tests", "--no-mutation-tests"],
                         capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    return run.returncode, run.stderr + run.stdout


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", default=os.path.dirname(HERE))
    parser.add_argument("--case", help="run only the cases whose name contains this")
    parser.add_argument("--verbose", action="store_true", help="print each case's failure lines")
    args = parser.parse_args()
    selected = [c for c in cases() if not args.case or args.case in c[0]]

    failed = []
    with tempfile.TemporaryDirectory(prefix="kubernetes-check-test.") as tmp:
        pristine = os.path.join(tmp, "pristine")
        copy_tree(args.repo, pristine)
        started = time.monotonic()

        def run_case(numbered):
            """None when the case is caught, else why not."""
            n, (name, mutate, word) = numbered
            root = os.path.join(tmp, f"case-{n}")
            shutil.copytree(pristine, root, symlinks=True)
            try:
                mutate(root)
                code, out = run_check(root)
            finally:
                shutil.rmtree(root, ignore_errors=True)
            # From the first failure on: kubernetes/check.sh prints a failing tool's own lines after its FAIL.
            lines = out.splitlines()
            failure = next((lines[i:] for i, line in enumerate(lines) if "FAIL" in line), [])
            caught = [line.strip() for line in failure if word in line]
            if code == 0 or not caught:
                return f"{name}: not caught (exit {code}; no failure mentions {word!r}):\n{out}"
            if args.verbose:
                print(f"check_static_test: caught {name}: {caught[0]}", file=sys.stderr)
            return None

        code, out = run_check(pristine)
        if code != 0:
            failed.append(f"the unbroken copy fails:\n{out}")
        # Two at a time: each run is mostly one process waiting on another, and the machine has two cores.
        with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
            failed += [r for r in pool.map(run_case, enumerate(selected)) if r]
    summary = (f"{len(failed)} case(s) failed" if failed
               else f"every one of {len(selected)} broken copies is refused, the real one passes "
                    f"({time.monotonic() - started:.0f} s)")
    print("\n".join(f"check_static_test: {line}" for line in failed + [summary]), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
