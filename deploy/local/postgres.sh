#!/usr/bin/env bash
# Throwaway PostgreSQL cluster (no Docker) for local dev and CI.
#
#   deploy/local/postgres.sh up|down|status
#
# Uses the Debian server binaries in /usr/lib/postgresql/<ver>/bin (installs the
# `postgresql` package when they are missing) but runs its OWN cluster:
#   data:   ${FOLLOWUP_INFRA_DIR:-<repo>/.cache/infra}/postgres/data
#   listen: 127.0.0.1:${FOLLOWUP_PG_PORT:-15432} (unix socket in .../postgres/run)
#   role/db: followup / followup, password followup
# Debian's own default cluster (5432), if any, is left alone.
#
# Optional: FOLLOWUP_PG_SSL_DIR, a dir with server.crt and server.key (PEM), turns TLS on
# at the first initdb and refuses connections over TCP without it (a test's second cluster;
# give it its own FOLLOWUP_INFRA_DIR and FOLLOWUP_PG_PORT).
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
INFRA_DIR="${FOLLOWUP_INFRA_DIR:-$REPO_ROOT/.cache/infra}"
PG_DIR="$INFRA_DIR/postgres"
DATA_DIR="$PG_DIR/data"
LOG_DIR="$PG_DIR/logs"
LOG_FILE="$LOG_DIR/postgres.log"
HOST=127.0.0.1
PORT="${FOLLOWUP_PG_PORT:-15432}"
SSL_DIR="${FOLLOWUP_PG_SSL_DIR:-}"
APP_USER=followup
APP_PASSWORD=followup
APP_DB=followup
SUPERUSER=postgres

log() { echo "[postgres] $*"; }
err() { echo "[postgres] ERROR: $*" >&2; }

IS_ROOT=0
[[ "$(id -u)" -eq 0 ]] && IS_ROOT=1

# Unix socket dir: inside the state dir, unless that path is too long for
# sun_path (107 bytes incl. "/.s.PGSQL.<port>"); then a short per-port dir in /tmp.
SOCK_DIR="$PG_DIR/run"
if ((${#SOCK_DIR} + 20 > 100)); then
    SOCK_DIR="/tmp/followup-pg-$(id -u)-$PORT"
fi

# ---------------------------------------------------------------- helpers

port_open() {
    timeout 2 bash -c "exec 3<>/dev/tcp/$HOST/$PORT" 2>/dev/null
}

ROOT_HINT="PostgreSQL server binaries are missing. Run as root, or: sudo apt-get update && sudo apt-get install -y postgresql"
# shellcheck source=as_root.sh
source "$SCRIPT_DIR/as_root.sh"

find_bindir() {
    if [[ -n "${FOLLOWUP_PG_BINDIR:-}" ]]; then
        [[ -x "$FOLLOWUP_PG_BINDIR/pg_ctl" ]] && echo "$FOLLOWUP_PG_BINDIR"
        return
    fi
    local d
    d="$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n1 || true)"
    [[ -n "$d" && -x "$d/pg_ctl" && -x "$d/initdb" ]] && echo "$d"
    return 0
}

ensure_binaries() {
    PG_BIN="$(find_bindir)"
    if [[ -z "$PG_BIN" ]]; then
        log "PostgreSQL server binaries not found; installing the 'postgresql' package"
        as_root apt-get update
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql
        PG_BIN="$(find_bindir)"
        [[ -n "$PG_BIN" ]] || { err "postgresql installed but no /usr/lib/postgresql/*/bin/pg_ctl found"; exit 1; }
    fi
}

# Run a server command as the cluster owner: `postgres` when we are root
# (initdb and postgres refuse to run as root), ourselves otherwise.
as_owner() {
    if ((IS_ROOT)); then
        # cd /: runuser keeps the cwd, which may be unreadable to postgres (e.g. /root)
        (cd / && runuser -u postgres -- "$@")
    else
        "$@"
    fi
}

ensure_postgres_user() {
    getent passwd postgres >/dev/null && return 0
    log "creating system user 'postgres'"
    if getent group postgres >/dev/null; then
        useradd --system --no-create-home --home-dir /var/lib/postgresql --shell /bin/bash -g postgres postgres
    else
        useradd --system --no-create-home --home-dir /var/lib/postgresql --shell /bin/bash --user-group postgres
    fi
}

# As root: state dir owned by postgres, and every ancestor searchable (o+x) by it.
prepare_dirs() {
    mkdir -p "$DATA_DIR" "$LOG_DIR" "$SOCK_DIR"
    chmod 700 "$DATA_DIR"
    if ((IS_ROOT)); then
        ensure_postgres_user
        chown -R postgres:postgres "$PG_DIR"
        [[ "$SOCK_DIR" == "$PG_DIR"/* ]] || chown postgres:postgres "$SOCK_DIR"
        # walk top-down: a dir only looks untraversable if an ancestor is
        local d="" part rel="${PG_DIR#/}"
        local -a parts
        IFS=/ read -r -a parts <<<"$rel"
        for part in "${parts[@]}"; do
            d="$d/$part"
            if ! runuser -u postgres -- test -x "$d"; then
                log "making $d traversable (o+x) for the postgres user"
                chmod o+x "$d"
            fi
        done
    fi
}

running() { # our cluster is running
    [[ -f "$DATA_DIR/postmaster.pid" ]] || return 1
    as_owner "$PG_BIN/pg_ctl" status -D "$DATA_DIR" >/dev/null 2>&1
}

psql_su() {
    "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$HOST" -p "$PORT" -U "$SUPERUSER" -d postgres "$@"
}

ensure_role_and_db() {
    local have
    have="$(psql_su -Atc "SELECT 1 FROM pg_roles WHERE rolname = '$APP_USER'")"
    if [[ "$have" != "1" ]]; then
        log "creating role $APP_USER"
        psql_su -c "CREATE ROLE $APP_USER LOGIN CREATEDB SUPERUSER PASSWORD '$APP_PASSWORD'"
    else
        psql_su -c "ALTER ROLE $APP_USER LOGIN CREATEDB SUPERUSER PASSWORD '$APP_PASSWORD'"
    fi
    have="$(psql_su -Atc "SELECT 1 FROM pg_database WHERE datname = '$APP_DB'")"
    if [[ "$have" != "1" ]]; then
        log "creating database $APP_DB"
        psql_su -c "CREATE DATABASE $APP_DB OWNER $APP_USER"
    fi
}

initdb_once() {
    [[ -f "$DATA_DIR/PG_VERSION" ]] && return 0
    log "initdb in $DATA_DIR"
    as_owner "$PG_BIN/initdb" -D "$DATA_DIR" -U "$SUPERUSER" -E UTF8 --locale=C \
        --auth-local=trust --auth-host=trust >"$LOG_DIR/initdb.log" 2>&1 || {
        err "initdb failed:"
        cat "$LOG_DIR/initdb.log" >&2
        exit 1
    }
    # Throwaway dev/test cluster: trade durability for speed.
    as_owner tee -a "$DATA_DIR/postgresql.conf" >/dev/null <<'EOF'

# ---- added by deploy/local/postgres.sh (throwaway dev/test cluster) ----
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 300
shared_buffers = 128MB
log_line_prefix = '%m [%p] %q%u@%d '
EOF
    [[ -n "$SSL_DIR" ]] || return 0
    cp "$SSL_DIR/server.crt" "$SSL_DIR/server.key" "$DATA_DIR/"
    chmod 600 "$DATA_DIR/server.key"
    ((IS_ROOT)) && chown postgres:postgres "$DATA_DIR/server.crt" "$DATA_DIR/server.key"
    as_owner tee -a "$DATA_DIR/postgresql.conf" >/dev/null <<'EOF'
ssl = on
ssl_cert_file = 'server.crt'
ssl_key_file = 'server.key'
EOF
    # TCP without TLS is refused: a client that does not ask for TLS fails loudly.
    as_owner sed -i '1i hostnossl all all 0.0.0.0/0 reject' "$DATA_DIR/pg_hba.conf"
}

lock() {
    mkdir -p "$PG_DIR"
    exec 9>"$PG_DIR/.lock"
    flock 9
}

# ---------------------------------------------------------------- commands

cmd_up() {
    ensure_binaries
    prepare_dirs
    lock
    if running; then
        log "postgres already up on $HOST:$PORT ($DATA_DIR)"
        ensure_role_and_db
        return 0
    fi
    if port_open; then
        log "postgres already up on $HOST:$PORT (served by a cluster not in $DATA_DIR; reusing it)"
        ensure_role_and_db || log "warning: could not check role/db $APP_USER on $HOST:$PORT"
        return 0
    fi
    initdb_once
    log "starting PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') on $HOST:$PORT (data $DATA_DIR)"
    # 9>&-: the server must not inherit our lock fd.
    if ! as_owner "$PG_BIN/pg_ctl" start -D "$DATA_DIR" -l "$LOG_FILE" -w -t 60 \
        -o "-p $PORT -c listen_addresses=$HOST -k '$SOCK_DIR'" 9>&- >/dev/null; then
        err "pg_ctl start failed; tail of $LOG_FILE:"
        tail -n 40 "$LOG_FILE" >&2 || true
        exit 1
    fi
    ensure_role_and_db
    log "postgres up: postgresql://$APP_USER:$APP_PASSWORD@$HOST:$PORT/$APP_DB"
}

cmd_down() {
    PG_BIN="$(find_bindir)"
    if [[ -z "$PG_BIN" || ! -d "$DATA_DIR" ]]; then
        log "postgres not running"
        return 0
    fi
    lock
    if running; then
        log "stopping postgres ($DATA_DIR)"
        as_owner "$PG_BIN/pg_ctl" stop -D "$DATA_DIR" -m fast -w -t 60 >/dev/null
        log "postgres stopped"
    elif port_open; then
        log "no cluster running from $DATA_DIR; $HOST:$PORT is served by another process, leaving it alone"
    else
        log "postgres not running"
    fi
}

cmd_status() {
    PG_BIN="$(find_bindir)"
    if [[ -n "$PG_BIN" && -d "$DATA_DIR" ]] && running && port_open; then
        log "up on $HOST:$PORT ($DATA_DIR)"
        return 0
    elif port_open; then
        log "up on $HOST:$PORT (not started from $DATA_DIR)"
        return 0
    fi
    log "down"
    return 3
}

case "${1:-}" in
up) cmd_up ;;
down) cmd_down ;;
status) cmd_status ;;
*)
    echo "usage: $0 up|down|status" >&2
    exit 2
    ;;
esac
