#!/usr/bin/env bash
# Checks the Kubernetes manifests offline, without a cluster:
#   1. every overlay of kubernetes/overlays/ renders with `kubectl kustomize` (and so does the first one with each
#      optional component of kubernetes/components/ that no overlay uses);
#   2. kubernetes/check_static.py checks what a schema cannot: monitors select Services and pods with the ports
#      they name, dashboards equal their files, the release label, the containers' security context, ports and
#      grace period, no committed Secret, and the PrometheusRules against alerts/*.yml; it sorts the objects for 3/4;
#   3. Kubernetes' own kinds validate against the schemas of Kubernetes $K8S_VERSION in strict mode
#      (kubernetes-validate, by kubernetes/check_core_kinds.py), and a kind it has no schema for fails;
#   4. ServiceMonitor, PodMonitor, PrometheusRule and CloudNativePG's Cluster validate against the npm models of
#      their operators, and compile as typed literals with tsc --strict (kubernetes/check_operator_kinds.mjs);
#   5. promtool checks every overlay's extracted rules, and runs the tests of alerts/tests on the first one's
#      (check_static.py has checked that the overlays' rules are the same);
#   6. kubernetes/check_static_test.py: each promise broken in a copy of the repository must fail this check.
# Options: --no-rule-tests skips `promtool test rules` and --no-mutation-tests skips 6 (the mutation tests run this
# script with both).
# Installs what it lacks (as root on Debian 12): python3-venv and python3-yaml from apt; kubernetes-validate into
# a virtualenv and the npm packages into the user's cache directory (KUBERNETES_CHECK_CACHE overrides it), never
# into the repository. Needs kubectl (its kustomize), node and npm, and promtool (native/install.sh installs it).
set -euo pipefail
cd "$(dirname "$0")/.."

KUBERNETES_VALIDATE_VERSION=1.37.0
# The Kubernetes version whose API schemas the manifests are validated against.
K8S_VERSION=1.32.0
PROMETHEUS_OPERATOR_MODELS_VERSION=6.0.0
CNPG_MODELS_VERSION=2.0.0
TYPESCRIPT_VERSION=5.9.3
CACHE=${KUBERNETES_CHECK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sre-stack/kubernetes-check}
VENV=$CACHE/venv-kubernetes-validate-$KUBERNETES_VALIDATE_VERSION
NPM_DIR=$CACHE/npm-po-$PROMETHEUS_OPERATOR_MODELS_VERSION-cnpg-$CNPG_MODELS_VERSION-ts-$TYPESCRIPT_VERSION
# Debian's interpreter, with python3-yaml, whatever else is on PATH.
PY=/usr/bin/python3

rule_tests=1
mutation_tests=1
for arg in "$@"; do
  case $arg in
    --no-rule-tests) rule_tests=0 ;;
    --no-mutation-tests) mutation_tests=0 ;;
    *) printf 'usage: %s [--no-rule-tests] [--no-mutation-tests]\n' "$0" >&2; exit 2 ;;
  esac
done

log() { printf '[kubernetes] %s\n' "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }

install_tools() {
  local t
  for t in kubectl node npm promtool; do
    command -v "$t" >/dev/null || die "$t is not installed (kubectl ships kustomize; promtool: native/install.sh)"
  done
  if ! "$VENV/bin/kubernetes-validate" --version >/dev/null 2>&1; then
    log "installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION into $VENV"
    rm -rf "$VENV"
    mkdir -p "$CACHE"
    "$PY" -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
  fi
  if [ ! -f "$NPM_DIR/.complete" ]; then
    log "installing the operator models and typescript $TYPESCRIPT_VERSION into $NPM_DIR"
    rm -rf "$NPM_DIR"
    mkdir -p "$NPM_DIR"
    # The models declare node >= 22 but run on node 20 (every run of step 4 shows it): no engine warnings.
    npm install --prefix "$NPM_DIR" --no-audit --no-fund --no-save --loglevel=error --engine-strict=false \
      "@kubernetes-models/prometheus-operator@$PROMETHEUS_OPERATOR_MODELS_VERSION" \
      "@kubernetes-models/cloudnative-pg@$CNPG_MODELS_VERSION" "typescript@$TYPESCRIPT_VERSION" >/dev/null
    touch "$NPM_DIR/.complete"
  fi
}

native/install.sh python3-yaml python3-venv
install_tools

work=$(mktemp -d)
rule_test_pids=() rule_test_logs=()
cleanup() {
  [ ${#rule_test_pids[@]} -eq 0 ] || kill "${rule_test_pids[@]}" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/rendered"
rendered=()

# 1. Render. The optional components (kind: Component) that no overlay lists are rendered on top of the first
# overlay, from a kustomization in the work directory, so that their kinds are checked too.
mapfile -t overlays < <(find kubernetes/overlays -mindepth 2 -maxdepth 2 -name kustomization.yaml -printf '%h\n' \
  | grep -v '/\.' | sort)
[ ${#overlays[@]} -gt 0 ] || die "no overlay in kubernetes/overlays/"
render() { # NAME DIR
  local out
  out=$(kubectl kustomize "$2" 2>&1 >"$work/rendered/$1.yaml") || die "kubectl kustomize $2 fails:
$out"
  log "$1: renders ($(grep -c '^kind:' "$work/rendered/$1.yaml") objects)"
  rendered+=("$work/rendered/$1.yaml")
}
for dir in "${overlays[@]}"; do
  render "$(basename "$dir")" "$dir"
done
for dir in kubernetes/components/*/; do
  dir=${dir%/}
  grep -rqs -- "components/$(basename "$dir")\b" "${overlays[@]/%//kustomization.yaml}" && continue
  with=$work/with-$(basename "$dir")
  mkdir -p "$with"
  # kustomize refuses absolute paths.
  printf 'apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - %s\ncomponents:\n  - %s\n' \
    "$(realpath --relative-to="$with" "${overlays[0]}")" "$(realpath --relative-to="$with" "$dir")" \
    > "$with/kustomization.yaml"
  render "$(basename "${overlays[0]}")+$(basename "$dir")" "$with"
done

# 2. The static checks; they write what 3-5 read into $work/out.
"$PY" kubernetes/check_static.py --out "$work/out" "${rendered[@]}" || die "static checks (see above)"
names=()
for file in "${rendered[@]}"; do names+=("$(basename "$file" .yaml)"); done

# The rule tests take a minute or two of CPU: they run while 3, 4 and 6 do, one process per file so that both
# cores share them.
if [ "$rule_tests" -eq 1 ]; then
  for test in "$work"/out/rule-tests/*.yml; do
    (cd "$work/out/rule-tests" && exec promtool test rules "./$(basename "$test")") >"$test.log" 2>&1 &
    rule_test_pids+=($!)
    rule_test_logs+=("$test.log")
  done
fi

# 3. Kubernetes' kinds: check_static.py sent every kind that no operator model checks, so one without a schema
# fails.
core=() operator=()
for name in "${names[@]}"; do
  core+=("$work/out/core/$name.yaml")
  operator+=("$work/out/operator/$name.json")
done
"$VENV/bin/python" kubernetes/check_core_kinds.py "$K8S_VERSION" "${core[@]}" \
  || die "Kubernetes' kinds do not validate against Kubernetes $K8S_VERSION (see above)"

# 4. The operators' kinds.
node kubernetes/check_operator_kinds.mjs "$NPM_DIR/node_modules" "$work/operator" "${operator[@]}" \
  || die "ServiceMonitor, PodMonitor, PrometheusRule or Cluster does not match its operator's model (see above)"

# 5. The rules, as Prometheus would load them from the PrometheusRules.
for name in "${names[@]}"; do
  out=$(promtool check rules "$work/out/rules/$name/"*.yml 2>&1) || die "promtool check rules, overlay $name:
$out"
  log "$name: promtool check rules: $(grep -c '^Checking' <<<"$out") files ok"
done

# 6. The checker itself.
if [ "$mutation_tests" -eq 1 ]; then
  "$PY" kubernetes/check_static_test.py || die "kubernetes/check.sh misses a broken manifest (see above)"
fi

if [ "$rule_tests" -eq 1 ]; then
  failed=0
  for i in "${!rule_test_pids[@]}"; do
    wait "${rule_test_pids[$i]}" || { failed=1; cat "${rule_test_logs[$i]}" >&2; }
  done
  rule_test_pids=()
  if [ "$failed" -eq 1 ]; then
    die "promtool test rules: alerts/tests fail on the rules extracted from ${names[0]} (see above)"
  fi
  log "promtool test rules: the $(find "$work/out/rule-tests" -name '*.yml' | wc -l) files of alerts/tests pass on the \
rules extracted from ${names[0]}"
fi
log "all kubernetes checks passed"
