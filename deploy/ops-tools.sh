#!/usr/bin/env bash
# Operations tooling for the tests of deploy/: idempotent, cached in .cache/ops.
#
#   deploy/ops-tools.sh [install|env|check]
#
# install (default)  fetch what is missing, then print where everything is
# env                print shell assignments (PROMETHEUS=..., PROMTOOL=..., ...) for `eval`
# check              exit 3 unless every tool is installed
#
# Where each tool comes from (only package registries; no release downloads):
#   prometheus, promtool   Debian's `prometheus` package, unpacked with dpkg-deb into the
#                          cache (not installed system-wide: no daemon is started)
#   kustomize              Go module sigs.k8s.io/kustomize/kustomize/v5 built with `go install`
#                          (the same engine as `kubectl kustomize`); when Go is missing,
#                          a `kubectl` on PATH is used instead
#   CRD schemas            npm packages @kubernetes-models/prometheus-operator (ServiceMonitor
#                          and PrometheusRule validators compiled from the operator's CRDs)
#                          and @kubernetes-models/keda (ScaledObject, overlay prod-keda);
#                          Strimzi's and CloudNativePG's are vendored in deploy/k8s/crds/
#   kubernetes-validate,   PyPI, pinned in pyproject.toml's dev extra (installed by make setup)
#   hadolint, grafana-foundation-sdk,
#   compose-spec
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
OPS_DIR="${FOLLOWUP_OPS_DIR:-$REPO_ROOT/.cache/ops}"
BIN="$OPS_DIR/bin"

PROMETHEUS_DEB_VERSION="${FOLLOWUP_PROMETHEUS_DEB_VERSION:-}" # empty: Debian's candidate
KUSTOMIZE_MODULE="sigs.k8s.io/kustomize/kustomize/v5"
KUSTOMIZE_VERSION="v5.5.0"
NPM_PACKAGES=("@kubernetes-models/prometheus-operator@6.0.0" "@kubernetes-models/keda@2.0.0")

log() { echo "[ops-tools] $*" >&2; }
err() { echo "[ops-tools] ERROR: $*" >&2; }

# shellcheck source=local/as_root.sh
source "$SCRIPT_DIR/local/as_root.sh"

# ------------------------------------------------------------ prometheus + promtool

prometheus_ok() {
    [[ -x "$BIN/prometheus" && -x "$BIN/promtool" ]] && "$BIN/promtool" --version >/dev/null 2>&1
}

install_prometheus() {
    prometheus_ok && return 0
    local work deb pkg="prometheus"
    [[ -n "$PROMETHEUS_DEB_VERSION" ]] && pkg="prometheus=$PROMETHEUS_DEB_VERSION"
    work="$(mktemp -d)"
    # `apt-get download` needs the package lists; a fresh machine has none.
    if ! (cd "$work" && apt-get download "$pkg" >/dev/null 2>&1); then
        log "apt-get update (package lists are missing or stale)"
        as_root apt-get update -qq
        (cd "$work" && apt-get download "$pkg" >/dev/null 2>&1) || {
            err "apt-get download $pkg failed"
            exit 1
        }
    fi
    deb="$(compgen -G "$work/prometheus_*.deb" | head -1)"
    rm -rf "$OPS_DIR/prometheus"
    mkdir -p "$OPS_DIR/prometheus" "$BIN"
    dpkg-deb -x "$deb" "$OPS_DIR/prometheus"
    basename "$deb" >"$OPS_DIR/prometheus/.deb"
    ln -sfn "$OPS_DIR/prometheus/usr/bin/prometheus" "$BIN/prometheus"
    ln -sfn "$OPS_DIR/prometheus/usr/bin/promtool" "$BIN/promtool"
    rm -rf "$work"
    log "prometheus from $(cat "$OPS_DIR/prometheus/.deb")"
}

# ------------------------------------------------------------------------ kustomize

kustomize_ok() {
    # A go-installed kustomize reports "(devel)": the stamp says which version was built.
    [[ -x "$BIN/kustomize" && -f "$BIN/.kustomize" && "$(cat "$BIN/.kustomize")" == "$KUSTOMIZE_VERSION" ]]
}

install_kustomize() {
    kustomize_ok && return 0
    mkdir -p "$BIN"
    if command -v go >/dev/null 2>&1; then
        log "building kustomize $KUSTOMIZE_VERSION with go install (about 30 s the first time)"
        GOBIN="$BIN" GOFLAGS=-mod=mod go install "$KUSTOMIZE_MODULE@$KUSTOMIZE_VERSION"
        echo "$KUSTOMIZE_VERSION" >"$BIN/.kustomize"
    elif command -v kubectl >/dev/null 2>&1; then
        log "Go is missing: using $(command -v kubectl) kustomize"
        cat >"$BIN/kustomize" <<'EOF'
#!/usr/bin/env bash
# Stand-in: `kubectl kustomize` embeds the same kustomize engine.
if [[ "${1:-}" == "version" ]]; then kubectl version --client 2>/dev/null | sed -n 's/^Kustomize Version: //p'; exit 0; fi
[[ "${1:-}" == "build" ]] && shift
exec kubectl kustomize "$@"
EOF
        chmod +x "$BIN/kustomize"
        echo "$KUSTOMIZE_VERSION" >"$BIN/.kustomize"
    else
        err "neither go nor kubectl is installed: cannot provide kustomize"
        exit 1
    fi
}

# ------------------------------------------------------------------ npm schemas

node_ok() {
    [[ -f "$OPS_DIR/node/.packages" && "$(cat "$OPS_DIR/node/.packages")" == "${NPM_PACKAGES[*]}" ]]
}

install_node_packages() {
    node_ok && return 0
    if ! command -v npm >/dev/null 2>&1; then
        log "installing nodejs and npm with apt-get"
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nodejs npm
    fi
    rm -rf "$OPS_DIR/node"
    mkdir -p "$OPS_DIR/node"
    echo '{"name": "followup-ops-tools", "private": true, "type": "module"}' >"$OPS_DIR/node/package.json"
    (cd "$OPS_DIR/node" && npm install --silent --no-audit --no-fund "${NPM_PACKAGES[@]}" >/dev/null)
    echo "${NPM_PACKAGES[*]}" >"$OPS_DIR/node/.packages"
    log "npm: ${NPM_PACKAGES[*]}"
}

print_env() {
    echo "PROMETHEUS=$BIN/prometheus"
    echo "PROMTOOL=$BIN/promtool"
    echo "KUSTOMIZE=$BIN/kustomize"
    echo "OPS_NODE_MODULES=$OPS_DIR/node/node_modules"
}

case "${1:-install}" in
install)
    install_prometheus
    install_kustomize
    install_node_packages
    print_env
    ;;
env)
    print_env
    ;;
check)
    prometheus_ok && kustomize_ok && node_ok || exit 3
    ;;
*)
    echo "usage: $0 [install|env|check]" >&2
    exit 2
    ;;
esac
