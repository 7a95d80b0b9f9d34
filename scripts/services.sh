#!/usr/bin/env bash
# Starts the local services the tests need when they are not running:
# Postgres on 127.0.0.1:5432 (trust auth, user postgres), Redis on 6379 and an
# S3-compatible server (moto) on 5055.
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

# Test databases are named cp_test_*; drop the ones earlier runs left behind.
drop_test_databases() {
    psql -h 127.0.0.1 -U postgres -d postgres -Atc \
        "select datname from pg_database where datname like 'cp_test_%'" |
        while read -r db; do
            psql -h 127.0.0.1 -U postgres -d postgres -qc "drop database if exists \"$db\" with (force)" >/dev/null || true
        done
}
