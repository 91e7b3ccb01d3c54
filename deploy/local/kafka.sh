#!/usr/bin/env bash
# Single-node Apache Kafka (KRaft, no ZooKeeper, no Docker) for local dev and CI.
#
#   deploy/local/kafka.sh fetch|up|down|status
#
# Jars come from Maven Central through deploy/local/kafka/pom.xml.
# State lives in ${FOLLOWUP_INFRA_DIR:-<repo>/.cache/infra}/kafka:
#   lib/      broker jars            data/   KRaft log dirs
#   logs/     server.log, kafka.out  config/ server.properties, log4j.properties
#   kafka.pid
#
# Optional, all off by default (the shared dev broker is PLAINTEXT only):
#   FOLLOWUP_KAFKA_VERSION      another broker version from Maven Central (default: 4.1.1
#                               from pom-4.xml; 3.x from pom.xml); its jars go to lib-<version>/
#   FOLLOWUP_KAFKA_LIB_DIR      jars fetched elsewhere (a second instance reuses them)
#   FOLLOWUP_KAFKA_TLS_DIR      a dir with ca.pem and server.pem (PKCS#8 key + certificate):
#                               adds a SASL_SSL listener on FOLLOWUP_KAFKA_SASL_SSL_PORT
#                               (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) and an SSL listener
#                               that requires a client certificate on FOLLOWUP_KAFKA_SSL_PORT
#   FOLLOWUP_KAFKA_SASL_USERS   "name:password ..." users of that SASL listener (set at the
#                               first format of the data dir)
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
INFRA_DIR="${FOLLOWUP_INFRA_DIR:-$REPO_ROOT/.cache/infra}"
KAFKA_DIR="$INFRA_DIR/kafka"
LIB_DIR="$KAFKA_DIR/lib"
DATA_DIR="$KAFKA_DIR/data"
LOG_DIR="$KAFKA_DIR/logs"
CONF_DIR="$KAFKA_DIR/config"
PID_FILE="$KAFKA_DIR/kafka.pid"
# The default is the 4.x line (pom-4.xml, log4j2); FOLLOWUP_KAFKA_VERSION=3.9.1 selects the
# 3.x line (pom.xml, reload4j). Only the default version lives in lib/.
POM="$SCRIPT_DIR/kafka/pom-4.xml"
DEFAULT_VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$POM")"
VERSION="${FOLLOWUP_KAFKA_VERSION:-$DEFAULT_VERSION}"
if [[ "$VERSION" != "$DEFAULT_VERSION" ]]; then
    LIB_DIR="$KAFKA_DIR/lib-$VERSION"
fi
if [[ "$VERSION" == 3.* ]]; then
    POM="$SCRIPT_DIR/kafka/pom.xml"
fi
LIB_DIR="${FOLLOWUP_KAFKA_LIB_DIR:-$LIB_DIR}"
TLS_DIR="${FOLLOWUP_KAFKA_TLS_DIR:-}"
SASL_SSL_PORT="${FOLLOWUP_KAFKA_SASL_SSL_PORT:-19094}"
SSL_PORT="${FOLLOWUP_KAFKA_SSL_PORT:-19095}"
SASL_USERS="${FOLLOWUP_KAFKA_SASL_USERS:-}"

HOST=127.0.0.1
PORT="${FOLLOWUP_KAFKA_PORT:-19092}"
CONTROLLER_PORT="${FOLLOWUP_KAFKA_CONTROLLER_PORT:-19093}"
HEAP_OPTS="${FOLLOWUP_KAFKA_HEAP_OPTS:--Xms256m -Xmx768m}"
START_TIMEOUT="${FOLLOWUP_KAFKA_START_TIMEOUT:-120}"
STOP_TIMEOUT=60

log() { echo "[kafka] $*"; }
err() { echo "[kafka] ERROR: $*" >&2; }

# ---------------------------------------------------------------- helpers

port_open() { # port -> 0 if something accepts TCP connections on 127.0.0.1:port
    timeout 2 bash -c "exec 3<>/dev/tcp/$HOST/$1" 2>/dev/null
}

# pid of our broker if it is alive (and really is a Kafka JVM), else nothing.
broker_pid() {
    [[ -f "$PID_FILE" ]] || return 1
    local pid
    pid="$(tr -dc '0-9' <"$PID_FILE")"
    [[ -n "$pid" ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    if [[ -r "/proc/$pid/cmdline" ]] && ! tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q 'kafka\.Kafka'; then
        return 1 # pid was recycled by an unrelated process
    fi
    echo "$pid"
}

ROOT_HINT="install Java 17+ and Maven yourself, then re-run."
# shellcheck source=as_root.sh
source "$SCRIPT_DIR/as_root.sh"

ensure_tools() {
    local missing=()
    command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)
    command -v mvn >/dev/null 2>&1 || missing+=(maven)
    if ((${#missing[@]})); then
        log "installing ${missing[*]} with apt-get"
        as_root apt-get update
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
    fi
}

pom_stamp() { # the default version keeps its old stamp: existing lib/ dirs stay valid
    if [[ "$VERSION" == "$DEFAULT_VERSION" ]]; then
        sha256sum "$POM" | cut -d' ' -f1
    else
        { cat "$POM"; echo "$VERSION"; } | sha256sum | cut -d' ' -f1
    fi
}

lib_ok() {
    compgen -G "$LIB_DIR/kafka_2.13-*.jar" >/dev/null &&
        [[ -f "$LIB_DIR/.pom.sha256" && "$(cat "$LIB_DIR/.pom.sha256")" == "$(pom_stamp)" ]]
}

# ---------------------------------------------------------------- fetch

cmd_fetch() {
    if [[ -n "${FOLLOWUP_KAFKA_LIB_DIR:-}" ]]; then
        compgen -G "$LIB_DIR/kafka_2.13-*.jar" >/dev/null && return 0
        err "FOLLOWUP_KAFKA_LIB_DIR=$LIB_DIR holds no kafka_2.13 jar"
        exit 1
    fi
    if lib_ok; then
        log "jars already in $LIB_DIR"
        return 0
    fi
    if [[ -d "$LIB_DIR" ]] && broker_pid >/dev/null; then
        err "pom.xml changed but the broker is running from $LIB_DIR; run '$0 down' first"
        exit 1
    fi
    ensure_tools
    mkdir -p "$KAFKA_DIR"
    local tmp="$KAFKA_DIR/lib.tmp.$$"
    rm -rf "$tmp"
    log "fetching Kafka broker jars with Maven (first time only) ..."
    local t0=$SECONDS
    mkdir -p "$LOG_DIR"
    if ! mvn -q -B -Dstyle.color=never -f "$POM" -Dkafka.version="$VERSION" dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$tmp" >"$LOG_DIR/mvn.log" 2>&1; then
        rm -rf "$tmp"
        err "maven could not fetch the Kafka jars; tail of $LOG_DIR/mvn.log:"
        tail -n 40 "$LOG_DIR/mvn.log" >&2
        exit 1
    fi
    if ! compgen -G "$tmp/kafka_2.13-*.jar" >/dev/null; then
        rm -rf "$tmp"
        err "maven finished but kafka_2.13 jar is missing"
        exit 1
    fi
    pom_stamp >"$tmp/.pom.sha256"
    rm -rf "$LIB_DIR"
    mv "$tmp" "$LIB_DIR" # atomic: an interrupted fetch never leaves a half-filled lib/
    log "fetched $(find "$LIB_DIR" -name '*.jar' | wc -l) jars ($(du -sh "$LIB_DIR" | cut -f1)) in $((SECONDS - t0))s"
}

# ---------------------------------------------------------------- config

secure_config() { # the TLS+SASL listeners, when FOLLOWUP_KAFKA_TLS_DIR is set
    [[ -n "$TLS_DIR" ]] || return 0
    local plain="" entry
    for entry in $SASL_USERS; do plain="$plain user_${entry%%:*}=\"${entry#*:}\""; done
    cat <<EOF
ssl.keystore.type=PEM
ssl.keystore.location=$TLS_DIR/server.pem
ssl.truststore.type=PEM
ssl.truststore.location=$TLS_DIR/ca.pem
listener.name.ssl.ssl.client.auth=required
sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required$plain;
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
EOF
}

write_config() {
    mkdir -p "$CONF_DIR" "$DATA_DIR" "$LOG_DIR"
    local listeners="PLAINTEXT://$HOST:$PORT" protocols="PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
    if [[ -n "$TLS_DIR" ]]; then
        listeners="$listeners,SASL_SSL://$HOST:$SASL_SSL_PORT,SSL://$HOST:$SSL_PORT"
        protocols="$protocols,SASL_SSL:SASL_SSL,SSL:SSL"
    fi
    cat >"$CONF_DIR/server.properties" <<EOF
# Generated by deploy/local/kafka.sh on every 'up' -- edit the script, not this file.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$HOST:$CONTROLLER_PORT
listeners=$listeners,CONTROLLER://$HOST:$CONTROLLER_PORT
advertised.listeners=$listeners
listener.security.protocol.map=$protocols
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
log.dirs=$DATA_DIR
num.partitions=4
default.replication.factor=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
auto.create.topics.enable=true
delete.topic.enable=true
group.initial.rebalance.delay.ms=0
log.retention.hours=24
log.segment.bytes=104857600
num.network.threads=2
num.io.threads=4
$(secure_config)
EOF
    cat >"$CONF_DIR/log4j2.properties" <<EOF
# Generated by deploy/local/kafka.sh. Kafka 4.x logs through log4j2.
rootLogger.level=INFO
rootLogger.appenderRef.server.ref=server
appender.server.type=File
appender.server.name=server
appender.server.fileName=$LOG_DIR/server.log
appender.server.layout.type=PatternLayout
appender.server.layout.pattern=[%d] %p %m (%c)%n
logger.request.name=kafka.request.logger
logger.request.level=WARN
EOF
    cat >"$CONF_DIR/log4j.properties" <<EOF
# Generated by deploy/local/kafka.sh. log4j 1.x syntax (reload4j via slf4j-reload4j).
log4j.rootLogger=INFO, server

log4j.appender.server=org.apache.log4j.RollingFileAppender
log4j.appender.server.File=$LOG_DIR/server.log
log4j.appender.server.MaxFileSize=20MB
log4j.appender.server.MaxBackupIndex=3
log4j.appender.server.layout=org.apache.log4j.PatternLayout
log4j.appender.server.layout.ConversionPattern=[%d] %p %m (%c)%n

log4j.appender.stateChange=org.apache.log4j.RollingFileAppender
log4j.appender.stateChange.File=$LOG_DIR/state-change.log
log4j.appender.stateChange.MaxFileSize=10MB
log4j.appender.stateChange.MaxBackupIndex=1
log4j.appender.stateChange.layout=org.apache.log4j.PatternLayout
log4j.appender.stateChange.layout.ConversionPattern=[%d] %p %m (%c)%n

log4j.logger.kafka=INFO
log4j.logger.org.apache.kafka=INFO
log4j.logger.kafka.request.logger=WARN
log4j.logger.kafka.network.RequestChannel\$=WARN
log4j.logger.kafka.log.LogCleaner=WARN
log4j.logger.state.change.logger=INFO, stateChange
log4j.additivity.state.change.logger=false
EOF
}

format_storage() {
    [[ -f "$DATA_DIR/meta.properties" ]] && return 0
    local cluster_id
    cluster_id="$(java -cp "$LIB_DIR/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n1)"
    [[ -n "$cluster_id" ]] || { err "could not generate a cluster id"; exit 1; }
    log "formatting KRaft storage in $DATA_DIR (cluster id $cluster_id)"
    local -a scram=()
    local entry mechanism
    for entry in $SASL_USERS; do
        for mechanism in SCRAM-SHA-256 SCRAM-SHA-512; do
            scram+=(--add-scram "$mechanism=[name=${entry%%:*},password=${entry#*:}]")
        done
    done
    # shellcheck disable=SC2046
    java -cp "$LIB_DIR/*" $(log_opts) \
        kafka.tools.StorageTool format -t "$cluster_id" -c "$CONF_DIR/server.properties" "${scram[@]}"
}

log_opts() { # point either logging library (log4j 1 for 3.x, log4j2 for 4.x) at its config
    echo "-Dlog4j.configuration=file:$CONF_DIR/log4j.properties -Dlog4j2.configurationFile=$CONF_DIR/log4j2.properties"
}

# ---------------------------------------------------------------- up/down/status

wait_ready() { # pid
    local pid=$1 deadline=$((SECONDS + START_TIMEOUT))
    while ((SECONDS < deadline)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            err "broker process $pid exited during startup"
            dump_logs
            rm -f "$PID_FILE"
            return 1
        fi
        if port_open "$PORT" && grep -q 'Kafka Server started' "$LOG_DIR/server.log" 2>/dev/null; then
            return 0
        fi
        sleep 1
    done
    err "broker not ready after ${START_TIMEOUT}s; stopping it"
    dump_logs
    stop_pid "$pid"
    return 1
}

dump_logs() {
    local f
    for f in "$LOG_DIR/kafka.out" "$LOG_DIR/server.log"; do
        [[ -s "$f" ]] || continue
        echo "----- tail -n 40 $f -----" >&2
        tail -n 40 "$f" >&2
    done
}

stop_pid() { # pid
    local pid=$1 deadline=$((SECONDS + STOP_TIMEOUT))
    kill -TERM "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then
        log "broker $pid did not exit within ${STOP_TIMEOUT}s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
    fi
    rm -f "$PID_FILE"
}

lock() { # serialise up/down of this state dir between concurrent callers
    mkdir -p "$KAFKA_DIR"
    exec 9>"$KAFKA_DIR/.lock"
    flock 9
}

cmd_up() {
    lock
    local pid
    if pid="$(broker_pid)"; then
        if ! port_open "$PORT"; then
            log "broker (pid $pid) is starting; waiting for it"
            wait_ready "$pid" || exit 1
        fi
        log "kafka already up on $HOST:$PORT (pid $pid)"
        return 0
    fi
    if port_open "$PORT"; then
        log "kafka already up on $HOST:$PORT (port in use by a process not started from $KAFKA_DIR; reusing it)"
        return 0
    fi
    rm -f "$PID_FILE"
    if [[ -n "$TLS_DIR" ]] && { port_open "$SASL_SSL_PORT" || port_open "$SSL_PORT"; }; then
        err "port $SASL_SSL_PORT or $SSL_PORT is taken; set FOLLOWUP_KAFKA_SASL_SSL_PORT/FOLLOWUP_KAFKA_SSL_PORT"
        exit 1
    fi
    if port_open "$CONTROLLER_PORT"; then
        err "controller port $HOST:$CONTROLLER_PORT is taken by another process; set FOLLOWUP_KAFKA_CONTROLLER_PORT"
        exit 1
    fi

    cmd_fetch
    command -v java >/dev/null 2>&1 || ensure_tools
    write_config
    format_storage

    # keep the previous run's logs for one restart, start the new run on fresh files
    local f
    for f in server.log kafka.out; do
        [[ -f "$LOG_DIR/$f" ]] && mv -f "$LOG_DIR/$f" "$LOG_DIR/$f.prev"
    done

    log "starting broker on $HOST:$PORT (controller $CONTROLLER_PORT), state in $KAFKA_DIR"
    # setsid: own session, so the broker survives the calling shell/job.
    # bash writes its own pid, then exec's java, so the pid file is the JVM's pid.
    # 9>&-: the broker must not inherit the lock fd, or it would hold the lock forever.
    # shellcheck disable=SC2086
    setsid bash -c 'echo $$ >"$0"; exec "$@"' "$PID_FILE" \
        java $HEAP_OPTS -XX:+UseG1GC -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
        $(log_opts) \
        -Dkafka.logs.dir="$LOG_DIR" \
        -cp "$LIB_DIR/*" kafka.Kafka "$CONF_DIR/server.properties" \
        </dev/null >"$LOG_DIR/kafka.out" 2>&1 9>&- &
    local t0=$SECONDS
    for _ in $(seq 50); do [[ -s "$PID_FILE" ]] && break; sleep 0.1; done
    pid="$(tr -dc '0-9' <"$PID_FILE" 2>/dev/null || true)"
    if [[ -z "$pid" ]]; then
        err "broker did not start"
        dump_logs
        exit 1
    fi
    wait_ready "$pid" || exit 1
    log "kafka up on $HOST:$PORT (pid $pid, ready in $((SECONDS - t0))s)"
}

cmd_down() {
    lock
    local pid
    if pid="$(broker_pid)"; then
        log "stopping broker (pid $pid)"
        stop_pid "$pid"
        log "kafka stopped"
    else
        rm -f "$PID_FILE"
        if port_open "$PORT"; then
            log "no broker started from $KAFKA_DIR; $HOST:$PORT is served by another process, leaving it alone"
        else
            log "kafka not running"
        fi
    fi
}

cmd_status() {
    local pid
    if pid="$(broker_pid)" && port_open "$PORT"; then
        log "up on $HOST:$PORT (pid $pid)"
        return 0
    elif [[ -n "${pid:-}" ]]; then
        log "starting (pid $pid, port $PORT not accepting yet)"
        return 3
    elif port_open "$PORT"; then
        log "up on $HOST:$PORT (not started from $KAFKA_DIR)"
        return 0
    fi
    log "down"
    return 3
}

case "${1:-}" in
fetch) cmd_fetch ;;
up) cmd_up ;;
down) cmd_down ;;
status) cmd_status ;;
*)
    echo "usage: $0 fetch|up|down|status" >&2
    exit 2
    ;;
esac
