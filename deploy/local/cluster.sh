#!/usr/bin/env bash
# A local cluster in the real topology, on this machine's loopback: Debian's PostgreSQL (one
# shared data store), N recsys-serve replicas on one shared artifacts directory, nginx in front
# (deploy/nginx, balancing over the replicas) and the trainer's refresh loop publishing into
# the artifacts directory. Everything it starts lives under one state directory.
#
#   deploy/local/cluster.sh up [--replicas N] [--dir DIR] [--port-base P] [--data FILE]
#                              [--refresh-every D|off] [--poll-seconds S] [--max-inflight N]
#                              [--train-args "ARGS"]
#   deploy/local/cluster.sh status [--dir DIR]
#   deploy/local/cluster.sh down [--dir DIR] [--purge]
#
# up: initdb (once) and start PostgreSQL; when DIR/artifacts holds no version, copy README
#     command 1's newest version (var/artifacts) or else train --data (default
#     var/data/interactions.tsv, generated like README command 1 when missing) into it;
#     start the replicas (`--store postgresql://…`), nginx and `recsys-train refresh --every D`
#     (its first run after D), wait until every replica reports SERVING and print the endpoints
#     (also in DIR/endpoints). Ports: nginx P, replica i P+i, its metrics P+100+i, PostgreSQL
#     P+99; P=0 picks free ports.
# down: stops what up started (pid files in DIR/run), newest first; idempotent. --purge also
#     deletes DIR and the PostgreSQL data.
# Settings also come from the environment: RECSYS_CLUSTER_DIR, RECSYS_REPLICAS,
# RECSYS_CLUSTER_PORT_BASE, RECSYS_CLUSTER_DATA, RECSYS_REFRESH_EVERY, RECSYS_POLL_SECONDS,
# RECSYS_MAX_INFLIGHT, RECSYS_CLUSTER_TRAIN_ARGS, RECSYS_PYTHON (default .venv/bin/python).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PY="${RECSYS_PYTHON:-$ROOT/.venv/bin/python}"
DIR="${RECSYS_CLUSTER_DIR:-$ROOT/var/cluster}"
REPLICAS="${RECSYS_REPLICAS:-2}"
PORT_BASE="${RECSYS_CLUSTER_PORT_BASE:-50060}"
DATA="${RECSYS_CLUSTER_DATA:-$ROOT/var/data/interactions.tsv}"
REFRESH_EVERY="${RECSYS_REFRESH_EVERY:-10m}"
POLL_SECONDS="${RECSYS_POLL_SECONDS:-2}"
MAX_INFLIGHT="${RECSYS_MAX_INFLIGHT:-64}"
TRAIN_ARGS="${RECSYS_CLUSTER_TRAIN_ARGS:-}"
PURGE=0

die() { echo "[cluster] error: $*" >&2; exit 1; }
say() { echo "[cluster] $*"; }

cmd="${1:-}"
[[ $cmd == up || $cmd == down || $cmd == status ]] || {
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"
    exit 2
}
shift
while (($#)); do
    case "$1" in
        --replicas) REPLICAS="$2"; shift 2 ;;
        --dir) DIR="$2"; shift 2 ;;
        --port-base) PORT_BASE="$2"; shift 2 ;;
        --data) DATA="$2"; shift 2 ;;
        --refresh-every) REFRESH_EVERY="$2"; shift 2 ;;
        --poll-seconds) POLL_SECONDS="$2"; shift 2 ;;
        --max-inflight) MAX_INFLIGHT="$2"; shift 2 ;;
        --train-args) TRAIN_ARGS="$2"; shift 2 ;;
        --purge) PURGE=1; shift ;;
        *) die "unknown option $1" ;;
    esac
done
[[ $REPLICAS =~ ^[1-9][0-9]*$ ]] || die "--replicas must be a positive integer, got '$REPLICAS'"
[[ $PORT_BASE =~ ^[0-9]+$ ]] || die "--port-base must be a port number or 0, got '$PORT_BASE'"
if [[ $cmd == up ]]; then mkdir -p "$DIR"; fi
if [[ -d $DIR ]]; then DIR="$(cd "$DIR" && pwd)"; fi
RUN="$DIR/run"
LOGS="$DIR/logs"
ARTIFACTS="$DIR/artifacts"

# --- processes: DIR/run/NAME.pid holds "pid starttime", so a reused pid is never signalled ---

start_time() { awk '{print $22}' "/proc/$1/stat" 2>/dev/null; }

alive() {  # alive NAME: the process NAME.pid names is still the one started
    local f="$RUN/$1.pid" pid st
    [[ -f $f ]] || return 1
    read -r pid st <"$f"
    [[ -n $pid && "$(start_time "$pid")" == "$st" ]]
}

pid_of() { awk '{print $1}' "$RUN/$1.pid"; }

launch() {  # launch NAME CMD...: in its own session (a Ctrl-C of up does not reach it)
    local name="$1"
    shift
    setsid "$@" </dev/null >>"$LOGS/$name.log" 2>&1 &
    local pid=$!
    echo "$pid $(start_time "$pid")" >"$RUN/$name.pid"
}

stop() {  # stop NAME SIGNAL: signal, wait up to 30 s, then SIGKILL
    local name="$1" sig="$2" pid
    if alive "$name"; then
        pid="$(pid_of "$name")"
        kill "-$sig" "$pid" 2>/dev/null || true
        for _ in $(seq 300); do
            alive "$name" || break
            sleep 0.1
        done
        if alive "$name"; then
            say "$name (pid $pid) still running after 30 s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.2
        fi
        # Anything left in its process group (launch made it the leader), e.g. the refresh
        # loop's sleep.
        kill -KILL -- "-$pid" 2>/dev/null || true
        say "stopped $name (pid $pid)"
    fi
    rm -f "$RUN/$name.pid"
}

log_tail() { tail -n 20 "$LOGS/$1.log" 2>/dev/null | sed 's/^/    /' >&2; }

# --- PostgreSQL ---------------------------------------------------------------------------

pg_bindir() {
    local d
    for d in "${RECSYS_PG_BINDIR:-}" "$(pg_config --bindir 2>/dev/null || true)" \
        $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        [[ -n $d && -x $d/initdb && -x $d/postgres && -x $d/pg_isready ]] && { echo "$d"; return; }
    done
    die "PostgreSQL server binaries not found: run .ci/system-deps (installs Debian's postgresql)"
}

# PostgreSQL refuses to run as root: then it runs as user postgres (or nobody), and its data
# lives where that user can reach it (DIR itself when it can, else a directory under /tmp).
as_pg() {
    if ((EUID == 0)); then
        setpriv --reuid "$PG_USER" --regid "$PG_USER" --clear-groups -- "$@"
    else
        "$@"
    fi
}

pg_dir() {
    if [[ -f $DIR/postgres.dir ]]; then cat "$DIR/postgres.dir"; return; fi
    local d="$DIR/postgres"
    if ((EUID == 0)); then
        mkdir -p "$d" && chown "$PG_USER:" "$d"
        as_pg test -w "$d" || { rmdir "$d"; d="$(mktemp -d /tmp/recsys-cluster-pg.XXXXXX)"; }
        chown "$PG_USER:" "$d"
    else
        mkdir -p "$d"
    fi
    echo "$d" >"$DIR/postgres.dir"
    echo "$d"
}

start_postgres() {
    BIN="$(pg_bindir)"
    PG_USER=postgres
    id postgres >/dev/null 2>&1 || PG_USER=nobody
    PGDIR="$(pg_dir)"
    if [[ ! -f $PGDIR/data/PG_VERSION ]]; then
        say "initdb in $PGDIR/data"
        head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$DIR/postgres.password"
        chmod 600 "$DIR/postgres.password"
        install -m 600 "$DIR/postgres.password" "$PGDIR/pwfile"
        ((EUID == 0)) && chown "$PG_USER:" "$PGDIR/pwfile"
        as_pg "$BIN/initdb" --pgdata="$PGDIR/data" --username=recsys --pwfile="$PGDIR/pwfile" \
            --auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 --no-locale \
            --no-instructions >"$LOGS/initdb.log" 2>&1 || { log_tail initdb; die "initdb failed"; }
        rm -f "$PGDIR/pwfile"
    fi
    if ! alive postgres; then
        local as=()
        ((EUID == 0)) && as=(setpriv --reuid "$PG_USER" --regid "$PG_USER" --clear-groups --)
        launch postgres "${as[@]}" "$BIN/postgres" -D "$PGDIR/data" \
            -c listen_addresses=127.0.0.1 -c "port=$PG_PORT" -c "unix_socket_directories=$PGDIR" \
            -c max_connections=200
        for _ in $(seq 300); do
            "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -t 1 && break
            alive postgres || { log_tail postgres; die "PostgreSQL exited while starting"; }
            sleep 0.1
        done
        "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -t 1 || die "PostgreSQL not ready"
    fi
    if ! "$BIN/psql" -h "$PGDIR" -p "$PG_PORT" -U recsys -d postgres -tAc \
        "SELECT 1 FROM pg_database WHERE datname = 'recsys'" | grep -q 1; then
        "$BIN/createdb" -h "$PGDIR" -p "$PG_PORT" -U recsys recsys
    fi
    DSN="postgresql://recsys:$(cat "$DIR/postgres.password")@127.0.0.1:$PG_PORT/recsys"
}

# --- up -----------------------------------------------------------------------------------

free_ports() {  # free_ports N: N distinct free loopback ports
    "$PY" - "$1" <<'EOF'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

assign_ports() {
    if [[ -f $DIR/ports ]] && [[ "$(wc -w <"$DIR/ports")" -eq $((2 * REPLICAS + 2)) ]]; then
        read -r -a P <"$DIR/ports"  # the ports of an earlier up with as many replicas
    elif ((PORT_BASE == 0)); then
        read -r -a P <<<"$(free_ports $((2 * REPLICAS + 2)))"
    else
        P=("$PORT_BASE" $((PORT_BASE + 99)))
        for i in $(seq "$REPLICAS"); do P+=($((PORT_BASE + i)) $((PORT_BASE + 100 + i))); done
    fi
    echo "${P[*]}" >"$DIR/ports"
    NGINX_PORT="${P[0]}"
    PG_PORT="${P[1]}"
}

replica_port() { echo "${P[$((2 * $1))]}"; }
metrics_port() { echo "${P[$((2 * $1 + 1))]}"; }

train_if_empty() {
    mkdir -p "$ARTIFACTS"
    if "$PY" -c "import sys; from recsys_core.artifacts import latest_version as l; \
sys.exit(0 if l(sys.argv[1]) else 1)" "$ARTIFACTS"; then
        return
    fi
    # README command 1 has trained the default data already: start from its newest version.
    local seed="$ROOT/var/artifacts" v
    if [[ $DATA == "$ROOT/var/data/interactions.tsv" ]] && v="$("$PY" -c "import sys; \
from recsys_core.artifacts import latest_version as l; print(l(sys.argv[1]) or '')" "$seed")" \
        && [[ -n $v ]]; then
        say "copying $seed/$v (README command 1's version) into $ARTIFACTS"
        cp -r "$seed/$v" "$ARTIFACTS/.$v.tmp" && mv "$ARTIFACTS/.$v.tmp" "$ARTIFACTS/$v"
        echo "$v" >"$ARTIFACTS/latest"
        return
    fi
    if [[ ! -f $DATA ]]; then
        say "generating the synthetic data set into $DATA (10k users, 5k items, 500k events)"
        "$PY" -m recsys_trainer.cli generate --out "$DATA"
    fi
    say "training $DATA into $ARTIFACTS (the default set: about 1.5-2 min on 2 cores)"
    # shellcheck disable=SC2086  # TRAIN_ARGS is a list of arguments
    "$PY" -m recsys_trainer.cli train --interactions "$DATA" --out "$ARTIFACTS" $TRAIN_ARGS \
        >>"$LOGS/train.log" 2>&1 || { log_tail train; die "training failed ($LOGS/train.log)"; }
}

start_replica() {
    local i="$1"
    alive "replica$i" && return
    launch "replica$i" "$PY" -m recsys_server.app --artifacts "$ARTIFACTS" --store "$DSN" \
        --host 127.0.0.1 --port "$(replica_port "$i")" --metrics-port "$(metrics_port "$i")" \
        --poll-seconds "$POLL_SECONDS"
}

wait_serving() {  # wait_serving I...: until each replica's health Check answers SERVING
    local targets=() i
    for i in "$@"; do targets+=("replica$i=127.0.0.1:$(replica_port "$i")"); done
    "$PY" - "$RUN" "${targets[@]}" <<'EOF' || exit 1
import sys, time
from pathlib import Path
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

run, pending = Path(sys.argv[1]), dict(t.split("=", 1) for t in sys.argv[2:])
deadline = time.monotonic() + 600  # a first load of the default set's models takes a while
while pending:
    for name, addr in list(pending.items()):
        pid, st = (run / f"{name}.pid").read_text().split()
        try:
            alive = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19] == st
        except OSError:
            alive = False
        if not alive:
            sys.exit(f"[cluster] error: {name} exited while starting (see its log)")
        with grpc.insecure_channel(addr) as ch:
            try:
                r = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=2)
                if r.status == health_pb2.HealthCheckResponse.SERVING:
                    del pending[name]
            except grpc.RpcError:
                pass
    if pending and time.monotonic() > deadline:
        sys.exit(f"[cluster] error: not SERVING after 600 s: {', '.join(pending)}")
    time.sleep(0.2)
EOF
}

start_nginx() {
    alive nginx && return
    local nginx ups=() i
    nginx="$(command -v nginx || echo /usr/sbin/nginx)"
    [[ -x $nginx ]] || die "nginx is missing: run .ci/system-deps (Debian's nginx-light)"
    for i in $(seq "$REPLICAS"); do ups+=("127.0.0.1:$(replica_port "$i")"); done
    mkdir -p "$DIR/nginx"
    RECSYS_LISTEN="127.0.0.1:$NGINX_PORT" RECSYS_UPSTREAM="${ups[*]}" \
        RECSYS_MAX_INFLIGHT="$MAX_INFLIGHT" "$ROOT/deploy/nginx/render.sh" \
        >"$DIR/nginx/recsys-grpc.conf"
    cat >"$DIR/nginx/nginx.conf" <<EOF
worker_processes 1;
pid $DIR/nginx/nginx.pid;
error_log $LOGS/nginx.log warn;
events { worker_connections 8192; }
http {
    client_body_temp_path $DIR/nginx/body;
    include $DIR/nginx/recsys-grpc.conf;
}
EOF
    "$nginx" -t -q -p "$DIR/nginx" -c "$DIR/nginx/nginx.conf" -g "daemon off;" \
        2>>"$LOGS/nginx.log" || { log_tail nginx; die "nginx rejects its configuration"; }
    launch nginx "$nginx" -p "$DIR/nginx" -c "$DIR/nginx/nginx.conf" -g "daemon off;"
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$NGINX_PORT") 2>/dev/null && return
        alive nginx || { log_tail nginx; die "nginx exited while starting"; }
        sleep 0.1
    done
    die "nginx is not listening on 127.0.0.1:$NGINX_PORT"
}

start_refresh() {
    [[ $REFRESH_EVERY == off ]] && return
    alive refresh && return
    # The first refresh after one interval: up has just trained or found a version.
    # shellcheck disable=SC2016
    launch refresh bash -c 'sleep "$1" && shift && exec "$@"' refresh "$REFRESH_EVERY" \
        "$PY" -m recsys_trainer.cli refresh --interactions "$DATA" --store "$DSN" \
        --out "$ARTIFACTS" --every "$REFRESH_EVERY" $TRAIN_ARGS
}

endpoints() {
    {
        echo "nginx      127.0.0.1:$NGINX_PORT  (balances over the replicas)"
        for i in $(seq "$REPLICAS"); do
            echo "replica$i   127.0.0.1:$(replica_port "$i")  metrics" \
                "http://127.0.0.1:$(metrics_port "$i")/metrics"
        done
        echo "store      $DSN"
        echo "artifacts  $ARTIFACTS"
        if [[ $REFRESH_EVERY == off ]]; then echo "refresh    off"; else
            echo "refresh    every $REFRESH_EVERY  (log $LOGS/refresh.log)"; fi
        echo "state      $DIR  (logs in $LOGS)"
    } >"$DIR/endpoints"
    cat "$DIR/endpoints"
}

up() {
    mkdir -p "$RUN" "$LOGS"
    if [[ -f $DIR/replicas ]] && [[ "$(cat "$DIR/replicas")" != "$REPLICAS" ]] \
        && ls "$RUN"/replica*.pid >/dev/null 2>&1; then
        die "running with $(cat "$DIR/replicas") replicas: down first"
    fi
    echo "$REPLICAS" >"$DIR/replicas"
    assign_ports
    start_postgres
    train_if_empty
    # The first replica creates the store's schema; the others start once it serves.
    start_replica 1
    wait_serving 1
    for i in $(seq 2 "$REPLICAS"); do start_replica "$i"; done
    (("$REPLICAS" > 1)) && wait_serving $(seq 2 "$REPLICAS")
    start_nginx
    start_refresh
    say "up: $REPLICAS replica(s) SERVING"
    endpoints
    cat <<EOF
[cluster] try: $PY -m recsys_client.cli --target 127.0.0.1:$NGINX_PORT recommend --user u0042 --k 5
[cluster] stop: deploy/local/cluster.sh down --dir $DIR
EOF
}

down() {
    [[ -d $RUN ]] || { say "nothing running under $DIR"; [[ $PURGE == 1 ]] && purge; return 0; }
    stop refresh TERM
    stop nginx QUIT
    local f name
    for f in "$RUN"/replica*.pid; do
        [[ -e $f ]] || continue
        name="$(basename "$f" .pid)"
        stop "$name" TERM
    done
    stop postgres INT  # "fast" shutdown: rolls back, closes connections, checkpoints
    say "down"
    [[ $PURGE == 1 ]] && purge
    return 0
}

purge() {
    if [[ -f $DIR/postgres.dir ]]; then rm -rf "$(cat "$DIR/postgres.dir")"; fi
    rm -rf "$DIR"
    say "purged $DIR"
}

status() {
    local f name state rc=0
    [[ -d $RUN ]] || { say "nothing started under $DIR"; return 3; }
    for f in "$RUN"/*.pid; do
        [[ -e $f ]] || continue
        name="$(basename "$f" .pid)"
        if alive "$name"; then state="running (pid $(pid_of "$name"))"; else state="DEAD"; rc=1; fi
        printf '%-10s %s\n' "$name" "$state"
    done
    [[ -f $DIR/endpoints ]] && cat "$DIR/endpoints"
    return $rc
}

"$cmd"
