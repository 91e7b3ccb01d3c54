#!/usr/bin/env bash
# Local infrastructure for followup: PostgreSQL + Kafka, no Docker.
#
#   deploy/local/infra.sh up|down|status
#
# up:     postgres, then kafka (stops at the first failure)
# down:   both, always attempting both; non-zero if either failed
# status: both; 0 only if both are up, 3 otherwise
#
# FOLLOWUP_KAFKA_VERSION=3.9.1 picks the 3.x broker (default 4.1.1); see deploy/local/README.md.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PG="$SCRIPT_DIR/postgres.sh"
KAFKA="$SCRIPT_DIR/kafka.sh"

case "${1:-}" in
up)
    bash "$PG" up
    bash "$KAFKA" up
    ;;
down)
    rc=0
    bash "$KAFKA" down || rc=$?
    bash "$PG" down || rc=$?
    exit "$rc"
    ;;
status)
    rc=0
    bash "$PG" status || rc=3
    bash "$KAFKA" status || rc=3
    exit "$rc"
    ;;
*)
    echo "usage: $0 up|down|status" >&2
    exit 2
    ;;
esac
