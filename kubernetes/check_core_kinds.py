"""Validates Kubernetes' own kinds against the API's JSON schemas (kubernetes-validate), in strict mode: unknown
fields fail too. A kind it has no schema for fails: kubernetes/check_static.py sent here every object that no
operator model checks, so such a kind would otherwise go unchecked.

Runs in kubernetes/check.sh's virtualenv, where kubernetes-validate is installed.
Usage: python check_core_kinds.py K8S_VERSION OVERLAY.yaml...   (check_static.py writes one per overlay)
"""
import os
import sys

import kubernetes_validate
import yaml

LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def main():
    version, paths = sys.argv[1], sys.argv[2:]
    failures = []
    for path in paths:
        overlay = os.path.basename(path)[:-len(".yaml")]
        with open(path) as f:
            docs = [d for d in yaml.load_all(f, Loader=LOADER) if d]
        for doc in docs:
            meta = doc.get("metadata") or {}
            where = f"{overlay}: {doc.get('kind')} {meta.get('namespace', 'default')}/{meta.get('name')}"
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.SchemaNotFoundError as e:
                failures.append(f"{where}: neither kubernetes-validate nor an operator model checks this kind "
                                f"({e.message}); add its model to check_operator_kinds.mjs")
            except kubernetes_validate.ValidationError as e:
                at = ".".join(str(p) for p in e.path) or "top"
                failures.append(f"{where}: at {at}: {e.message} (Kubernetes {e.version}, strict)")
        print(f"kubernetes: {overlay}: {len(docs)} objects of Kubernetes' kinds checked against Kubernetes "
              f"{version} (strict)", file=sys.stderr)
    for failure in failures:
        print(f"kubernetes: FAIL {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
