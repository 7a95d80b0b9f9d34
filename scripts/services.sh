#!/usr/bin/env bash
# Starts the local services the tests need when they are not running:
# Postgres on 127.0.0.1:5432 (trust auth, user postgres), Redis on 6379 and an
# S3-compatible server (moto) on 5055; and installs the Python with DuckDB
# that the data-lake tests read the Parquet files with.
# Installs them from Debian's packages on a machine that has neither.
set -euo pipefail

log() { echo "[services] $*" >&2; }

pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }

ensure_postgres() {
    if ! command -v pg_isready >/dev/null 2>&1; then
        log "installing PostgreSQL"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null
    fi
    if ! pg_up; then
        log "starting PostgreSQL"
        local version
        version=$(ls /etc/postgresql | sort -V | tail -1)
        pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
        for _ in $(seq 1 60); do pg_up && break; sleep 0.5; done
    fi
    pg_up || { log "PostgreSQL did not come up on 127.0.0.1:5432"; exit 1; }
    if ! psql -h 127.0.0.1 -U postgres -d postgres -Atc 'select 1' >/dev/null 2>&1; then
        # A fresh Debian install asks for passwords on TCP; the tests expect
        # the trust auth of the dev/CI machines, on loopback only.
        log "allowing trust auth on loopback"
        local hba
        hba=$(ls /etc/postgresql/*/main/pg_hba.conf | sort -V | tail -1)
        sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
        local version
        version=$(ls /etc/postgresql | sort -V | tail -1)
        pg_ctlcluster --skip-systemctl-redirect "$version" main reload
        sleep 1
    fi
    psql -h 127.0.0.1 -U postgres -d postgres -Atc 'select 1' >/dev/null
}

ensure_redis() {
    if ! command -v redis-server >/dev/null 2>&1; then
        log "installing Redis"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server >/dev/null
    fi
    if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
        log "starting Redis"
        mkdir -p /var/lib/redis /var/log/redis
        redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
            --dir /var/lib/redis --logfile /var/log/redis/ci.log
        for _ in $(seq 1 40); do redis-cli ping >/dev/null 2>&1 && break; sleep 0.25; done
    fi
    redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 || { log "Redis did not come up on 127.0.0.1:6379"; exit 1; }
}

# Tests put their Redis keys under cp_t_* prefixes; delete what earlier runs left.
drop_test_redis_keys() {
    redis-cli -h 127.0.0.1 -p 6379 --scan --pattern 'cp_t_*' | xargs -r -n 500 redis-cli -h 127.0.0.1 -p 6379 del >/dev/null || true
}

# An S3-compatible server for the model-store tests: moto's standalone server
# (pinned, from PyPI) in its own venv, on 127.0.0.1:5055, started in the
# background when nothing answers there.
MOTO_VERSION="5.2.5"
moto_up() { curl -s -o /dev/null --max-time 2 http://127.0.0.1:5055/ 2>/dev/null; }

ensure_moto() {
    if moto_up; then return 0; fi
    local venv="$HOME/.cache/cartpulse-venv-moto"
    if [ ! -x "$venv/bin/moto_server" ] || ! "$venv/bin/python" -c "import moto, sys; sys.exit(moto.__version__ != '$MOTO_VERSION')" 2>/dev/null; then
        log "installing moto[server]==$MOTO_VERSION into $venv"
        mkdir -p "$(dirname "$venv")"
        python3 -m venv "$venv"
        "$venv/bin/pip" install -q --disable-pip-version-check "moto[server]==$MOTO_VERSION"
    fi
    log "starting moto_server on 127.0.0.1:5055"
    mkdir -p "$HOME/.cache"
    nohup "$venv/bin/moto_server" -H 127.0.0.1 -p 5055 >"$HOME/.cache/cartpulse-moto.log" 2>&1 &
    for _ in $(seq 1 80); do moto_up && break; sleep 0.25; done
    moto_up || { log "moto did not come up on 127.0.0.1:5055 (see $HOME/.cache/cartpulse-moto.log)"; exit 1; }
}

# Python with DuckDB (pinned, from PyPI) in its own venv, for the data-lake
# test that reads the archived Parquet files with a standard tool
# (tests/api/lake.rs; CARTPULSE_TEST_LAKE_PYTHON points elsewhere).
DUCKDB_VERSION="1.5.6"
ensure_lake_python() {
    local venv="$HOME/.cache/cartpulse-venv-lake"
    if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "import duckdb, sys; sys.exit(duckdb.__version__ != '$DUCKDB_VERSION')" 2>/dev/null; then
        return 0
    fi
    log "installing duckdb==$DUCKDB_VERSION into $venv"
    mkdir -p "$(dirname "$venv")"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "duckdb==$DUCKDB_VERSION"
    "$venv/bin/python" -c "import duckdb" || { log "duckdb did not install into $venv"; exit 1; }
}

# Test databases are named cp_test_*; drop the ones earlier runs left behind.
drop_test_databases() {
    psql -h 127.0.0.1 -U postgres -d postgres -Atc \
        "select datname from pg_database where datname like 'cp_test_%'" |
        while read -r db; do
            psql -h 127.0.0.1 -U postgres -d postgres -qc "drop database if exists \"$db\" with (force)" >/dev/null || true
        done
}

# --- Redis Cluster -------------------------------------------------------------
# A real Redis Cluster on loopback for the cluster-mode tests: 3 primaries and
# 3 replicas on REDIS_CLUSTER_BASE_PORT .. +5 (default 7000-7005; the cluster
# bus uses the same ports + 10000). No persistence: a node that is restarted
# comes back empty and takes its data from its primary (or becomes a replica of
# the node that took its slots over). Data directories live under
# /var/lib/redis-cluster/<port> (root) or ~/.cache/cartpulse-redis-cluster/<port>.

redis_cluster_base_port() {
    local base="${REDIS_CLUSTER_BASE_PORT:-7000}"
    if ! [[ $base =~ ^[0-9]+$ ]] || ((base < 1024 || base > 55530)); then
        log "REDIS_CLUSTER_BASE_PORT must be a port from 1024 to 55530 (the bus ports are +10000), not '$base'"
        return 1
    fi
    echo "$base"
}

redis_cluster_url() {
    local base
    base=$(redis_cluster_base_port) || return 1
    echo "redis://127.0.0.1:$base"
}

_rc_ports() {
    local base
    base=$(redis_cluster_base_port) || return 1
    seq "$base" $((base + 5))
}

_rc_root() {
    if [ "$(id -u)" -eq 0 ]; then echo /var/lib/redis-cluster; else echo "$HOME/.cache/cartpulse-redis-cluster"; fi
}

# redis-cli against one node; replies without the \r of CLUSTER INFO and INFO.
_rc_cli() {
    local port=$1
    shift
    redis-cli -h 127.0.0.1 -p "$port" "$@" 2>/dev/null | tr -d '\r'
}

_rc_answers() { [ "$(_rc_cli "$1" ping)" = PONG ]; }

# Prints why the cluster is not healthy and fails; silent and 0 when it is:
# every node answers and sees cluster_state:ok with 6 nodes and 3 shards,
# there are 3 primaries, each with a replica, and 3 replicas whose link to
# their primary is up.
_rc_check() {
    local port info repl masters=0 replicas=0
    for port in $(_rc_ports); do
        _rc_answers "$port" || { echo "node $port does not answer"; return 1; }
        info=$(_rc_cli "$port" cluster info)
        grep -qx 'cluster_state:ok' <<<"$info" || { echo "node $port: cluster_state is not ok"; return 1; }
        grep -qx 'cluster_known_nodes:6' <<<"$info" || { echo "node $port does not know 6 nodes"; return 1; }
        grep -qx 'cluster_size:3' <<<"$info" || { echo "node $port does not see 3 shards"; return 1; }
        repl=$(_rc_cli "$port" info replication)
        if grep -qx 'role:master' <<<"$repl"; then
            masters=$((masters + 1))
            grep -qx 'connected_slaves:0' <<<"$repl" && { echo "primary $port has no replica"; return 1; }
        elif grep -qx 'role:slave' <<<"$repl"; then
            replicas=$((replicas + 1))
            grep -qx 'master_link_status:up' <<<"$repl" || { echo "replica $port: link to its primary is not up"; return 1; }
        else
            echo "node $port: unknown role"
            return 1
        fi
    done
    ((masters == 3 && replicas == 3)) || { echo "$masters primaries and $replicas replicas instead of 3 and 3"; return 1; }
}

_rc_wait_healthy() {
    local seconds=$1 why=""
    for _ in $(seq 1 $((seconds * 2))); do
        why=$(_rc_check) && return 0
        sleep 0.5
    done
    log "Redis Cluster not healthy after ${seconds}s: $why"
    return 1
}

_rc_start_node() {
    local port=$1 root dir
    root=$(_rc_root)
    dir="$root/$port"
    mkdir -p "$dir" "$root/log"
    redis-server --daemonize yes --port "$port" --bind 127.0.0.1 \
        --cluster-enabled yes --cluster-config-file "nodes-$port.conf" --cluster-node-timeout 2000 \
        --save "" --appendonly no --repl-diskless-sync-delay 0 \
        --dir "$dir" --pidfile "$dir/redis.pid" --logfile "$root/log/$port.log" 9>&-
}

# Stops the cluster node on PORT (refusing to stop anything that is not a
# cluster-enabled Redis) and deletes its directory, nodes-PORT.conf included.
_rc_reset_node() {
    local port=$1 root pid
    root=$(_rc_root)
    if _rc_answers "$port"; then
        if ! grep -qx 'cluster_enabled:1' <<<"$(_rc_cli "$port" info cluster)"; then
            log "127.0.0.1:$port answers but is not a cluster-enabled Redis; not touching it"
            return 1
        fi
        redis-cli -h 127.0.0.1 -p "$port" shutdown nosave >/dev/null 2>&1 || true
        for _ in $(seq 1 40); do _rc_answers "$port" || break; sleep 0.25; done
        if _rc_answers "$port"; then
            pid=$(cat "$root/$port/redis.pid" 2>/dev/null || true)
            [[ $pid =~ ^[0-9]+$ ]] && kill -9 "$pid" 2>/dev/null || true
            sleep 0.5
        fi
        _rc_answers "$port" && { log "cannot stop the Redis node on 127.0.0.1:$port"; return 1; }
    fi
    [[ $port =~ ^[0-9]+$ ]] && rm -rf "${root:?}/$port"
}

# Every node has a config of a formed 6-node cluster: restarting the nodes
# that are down is worth a try before starting from scratch.
_rc_repairable() {
    local port root conf
    root=$(_rc_root)
    for port in $(_rc_ports); do
        conf="$root/$port/nodes-$port.conf"
        [ -f "$conf" ] || return 1
        [ "$(grep -c '@' "$conf")" -eq 6 ] || return 1
    done
}

_rc_create() {
    local port out base
    local -a addrs=()
    base=$(redis_cluster_base_port) || return 1
    log "creating the Redis Cluster on 127.0.0.1:$base-$((base + 5))"
    for port in $(_rc_ports); do _rc_reset_node "$port" || return 1; done
    for port in $(_rc_ports); do
        _rc_start_node "$port" || return 1
        addrs+=("127.0.0.1:$port")
    done
    for port in $(_rc_ports); do
        for _ in $(seq 1 40); do _rc_answers "$port" && break; sleep 0.25; done
        _rc_answers "$port" || { log "Redis node 127.0.0.1:$port did not start (see $(_rc_root)/log/$port.log)"; return 1; }
    done
    if ! out=$(redis-cli --cluster create "${addrs[@]}" --cluster-replicas 1 --cluster-yes 2>&1); then
        log "redis-cli --cluster create failed:"
        echo "$out" >&2
        return 1
    fi
    _rc_wait_healthy 60
}

_rc_ensure() {
    local why port down=()
    why=$(_rc_check) && return 0
    if ! command -v redis-server >/dev/null 2>&1; then
        log "installing Redis"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server >/dev/null || return 1
    fi
    if _rc_repairable; then
        for port in $(_rc_ports); do _rc_answers "$port" || down+=("$port"); done
        log "Redis Cluster not healthy ($why); restarting the nodes that are down: ${down[*]:-none}"
        for port in "${down[@]}"; do _rc_start_node "$port"; done
        _rc_wait_healthy 30 && return 0
        log "repair did not work; creating the cluster again"
    fi
    _rc_create
}

# Starts (or repairs, or re-creates) the local Redis Cluster; does nothing when
# it is healthy. Serialised with flock so that parallel callers do not race.
ensure_redis_cluster() {
    local root
    redis_cluster_base_port >/dev/null || exit 1
    root=$(_rc_root)
    mkdir -p "$root"
    (
        if command -v flock >/dev/null 2>&1; then
            # The daemons are started with fd 9 closed, or they would hold the lock for good.
            exec 9>"$root/.ensure.lock"
            flock -w 300 9 || { log "timed out waiting for $root/.ensure.lock"; exit 1; }
        fi
        _rc_ensure
    ) || { log "Redis Cluster did not come up on $(redis_cluster_url)"; exit 1; }
}

# Tests put their Redis keys under cp_t_* prefixes, hash-tagged or not
# ({cp_t_abc:events:3}, cp_t_abc:events:{3}); delete what earlier runs left on
# every primary of the cluster. One UNLINK per key (keys of one call must share
# a slot), sent through redis-cli --pipe.
drop_test_redis_cluster_keys() {
    local port pattern
    for port in $(_rc_ports); do
        grep -qx 'role:master' <<<"$(_rc_cli "$port" info replication)" || continue
        for pattern in 'cp_t_*' '{cp_t_*'; do
            redis-cli -h 127.0.0.1 -p "$port" --scan --pattern "$pattern" 2>/dev/null |
                LC_ALL=C awk '{ printf "*2\r\n$6\r\nUNLINK\r\n$%d\r\n%s\r\n", length($0), $0 }' |
                redis-cli -h 127.0.0.1 -p "$port" --pipe >/dev/null 2>&1 || true
        done
    done
    return 0
}
