# Sourced by the deploy scripts (they define err()).
#
#   as_root CMD...   run CMD as root: directly when we are root, else through password-less
#                    sudo; otherwise say so (and ROOT_HINT, what to do instead, when set)
#                    and exit 1.
as_root() {
    if [[ "$(id -u)" -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        sudo "$@"
    else
        err "need root (or password-less sudo) to run: $*"
        [[ -z "${ROOT_HINT:-}" ]] || err "$ROOT_HINT"
        exit 1
    fi
}
