#!/usr/bin/env bash
# A headless browser for the tests of the call-report page: idempotent.
#
#   deploy/browser-tools.sh [install|check]
#
# install (default)  install what is missing, then print where it is
# check              exit 3 unless the browser and its driver are installed
#
# Where it comes from (only package registries): Debian's `chromium` and `chromium-driver`
# packages (system-wide: chromedriver must match the browser's version, which the Debian
# pair guarantees); selenium from PyPI, pinned in pyproject.toml's dev extra.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PACKAGES=(chromium chromium-driver)

log() { echo "[browser-tools] $*" >&2; }
err() { echo "[browser-tools] ERROR: $*" >&2; }

# shellcheck source=local/as_root.sh
source "$SCRIPT_DIR/local/as_root.sh"

browser_ok() {
    command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1
}

case "${1:-install}" in
install)
    if ! browser_ok; then
        log "apt-get install ${PACKAGES[*]}"
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${PACKAGES[@]}" >/dev/null
    fi
    browser_ok || { err "chromium or chromedriver still missing"; exit 1; }
    echo "chromium=$(command -v chromium)"
    echo "chromedriver=$(command -v chromedriver)"
    ;;
check)
    browser_ok || { err "chromium/chromedriver missing: run deploy/browser-tools.sh install"; exit 3; }
    ;;
*)
    err "usage: $0 [install|check]"
    exit 2
    ;;
esac
