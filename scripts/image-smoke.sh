#!/usr/bin/env bash
# Image smoke test without a Docker engine or a registry: builds the
# Dockerfile's runtime stage with buildah (vfs storage, chroot isolation,
# --pull=never) around a cartpulse binary built on the host, then runs that
# image's binary against a fresh Postgres database with a little demo-like
# traffic and checks what a deployment relies on.
#
#   CARTPULSE_BIN=target/debug/cartpulse scripts/image-smoke.sh
#
# No base image can be pulled, so they are made from Debian's packages and
# kept under $HOME/.cache/cartpulse-image:
#   - debian:<release>-slim is a debootstrap --variant=minbase root file
#     system of the Dockerfile's DEBIAN_RELEASE (documentation and apt lists
#     removed), committed locally under that name;
#   - the static busybox of the HEALTHCHECK comes from Debian's
#     busybox-static of the same upstream version as the Dockerfile's
#     busybox image (1.37, trixie; bookworm's 1.35 wget crashes on -T).
# The Rust toolchain and npm cannot be fetched inside a build stage either,
# so the build uses RUNTIME_INPUTS=prebuilt (see the Dockerfile): the binary
# under test, that busybox, the host's CA bundle and the committed static/.
#
# Checks: the image's user, entrypoint and environment; `migrate` and
# `keys create` through the entrypoint; `serve` becomes ready; the image's own
# HEALTHCHECK command passes; events are accepted, a resend is counted as
# duplicates, the customer is readable; /metrics counts the events; SIGTERM
# stops the server cleanly.
#
# Needs root (buildah's chroot isolation), Postgres on 127.0.0.1:5432 with
# trust auth for user postgres (scripts/services.sh), and installs buildah and
# debootstrap from Debian's packages when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "[image-smoke] $*" >&2; }
started=$SECONDS

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/cartpulse-target}"
BIN="${CARTPULSE_BIN:-$CARGO_TARGET_DIR/debug/cartpulse}"
[[ -x "$BIN" ]] || { log "no cartpulse binary at $BIN (set CARTPULSE_BIN)"; exit 1; }
CACHE="${CARTPULSE_IMAGE_CACHE:-$HOME/.cache/cartpulse-image}"
PG_ADMIN="${CARTPULSE_SMOKE_PG:-postgres://postgres@127.0.0.1:5432}"
IMAGE=localhost/cartpulse:image-smoke
mkdir -p "$CACHE"

# --- tools ---------------------------------------------------------------------
if ! command -v buildah >/dev/null || ! command -v debootstrap >/dev/null; then
    log "installing buildah and debootstrap (Debian packages)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q buildah debootstrap >/dev/null
fi
# Its own store (vfs: no overlay or fuse needed) and run root, so nothing here
# touches other buildah or podman users on the machine.
bh() {
    buildah --storage-driver vfs --root "$HOME/.cache/cartpulse-image-storage" \
        --runroot "${TMPDIR:-/tmp}/cartpulse-image-run" "$@"
}

release=$(sed -n 's/^ARG DEBIAN_RELEASE=//p' Dockerfile)
[[ -n "$release" ]] || { log "no ARG DEBIAN_RELEASE in the Dockerfile"; exit 1; }

# The Debian mirror this machine's apt uses (deb822 or one-line sources).
debian_mirror() {
    local uri
    uri=$(grep -hs -m1 '^URIs:.*/debian/\?$' /etc/apt/sources.list.d/*.sources | awk '{print $2}' || true)
    [[ -n "$uri" ]] || uri=$(grep -hs -m1 '^deb .*/debian/\? ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list | awk '{print $2}' || true)
    echo "${DEBIAN_MIRROR:-${uri:-http://deb.debian.org/debian}}"
}

# --- base image: debian:<release>-slim from debootstrap -------------------------
rootfs_tar="$CACHE/debian-$release-minbase.tar.gz"
if [[ ! -s "$rootfs_tar" ]]; then
    mirror=$(debian_mirror)
    log "debootstrap --variant=minbase $release from $mirror (once; cached in $rootfs_tar)"
    tmp_root=$(mktemp -d "$CACHE/rootfs.XXXXXX")
    debootstrap --variant=minbase "$release" "$tmp_root" "$mirror" >"$CACHE/debootstrap.log" 2>&1 \
        || { tail -20 "$CACHE/debootstrap.log" >&2; rm -rf "$tmp_root"; exit 1; }
    # What debian:*-slim leaves out too; /dev is the runtime's.
    rm -rf "${tmp_root:?}"/var/cache/apt/archives/*.deb "${tmp_root:?}"/var/lib/apt/lists/* \
        "${tmp_root:?}"/usr/share/doc/* "${tmp_root:?}"/usr/share/man/* "${tmp_root:?}"/usr/share/info/* \
        "${tmp_root:?}"/usr/share/locale/* "${tmp_root:?}"/dev/*
    tar --numeric-owner -C "$tmp_root" -czf "$rootfs_tar.tmp" .
    mv "$rootfs_tar.tmp" "$rootfs_tar"
    rm -rf "$tmp_root"
fi
base="docker.io/library/debian:$release-slim"
rootfs_sum=$(sha256sum "$rootfs_tar" | cut -c1-64)
have_sum=$(bh inspect --type image --format '{{index .OCIv1.Config.Labels "cartpulse.rootfs"}}' "$base" 2>/dev/null || true)
if [[ "$have_sum" != "$rootfs_sum" ]]; then
    log "committing the debootstrap root file system as $base"
    ctr=$(bh from scratch)
    mnt=$(bh mount "$ctr")
    tar --numeric-owner -xzf "$rootfs_tar" -C "$mnt"
    bh umount "$ctr" >/dev/null
    bh config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --cmd bash --label "cartpulse.rootfs=$rootfs_sum" "$ctr"
    bh commit --quiet --format docker "$ctr" "$base" >/dev/null
    bh rm "$ctr" >/dev/null
fi

# --- the HEALTHCHECK's busybox: Debian's busybox-static 1.37 --------------------
busybox="$CACHE/busybox"
if [[ ! -x "$busybox" ]]; then
    log "fetching busybox-static from Debian trixie (once; cached in $busybox)"
    apt_dir="$CACHE/apt-trixie"
    mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $(debian_mirror) trixie main" >"$apt_dir/sources.list"
    apt_opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
        -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache"
        -o Acquire::Languages=none -o APT::Sandbox::User=root)
    apt-get "${apt_opts[@]}" update -qq >/dev/null
    (cd "$apt_dir" && rm -f busybox-static_*.deb && apt-get "${apt_opts[@]}" download -qq busybox-static)
    rm -rf "$apt_dir/x"
    dpkg-deb -x "$apt_dir"/busybox-static_*.deb "$apt_dir/x"
    install -m 0755 "$apt_dir/x/usr/bin/busybox" "$busybox"
    rm -rf "$apt_dir"
fi

# --- build the runtime stage around the binary ----------------------------------
work=$(mktemp -d)
ctr=""
server_pid=""
db=""
cleanup() {
    if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
        kill -KILL "$server_pid" 2>/dev/null || true
    fi
    if [[ -n "$ctr" ]]; then bh rm "$ctr" >/dev/null 2>&1 || true; fi
    bh rmi "$IMAGE" >/dev/null 2>&1 || true
    bh rmi --prune >/dev/null 2>&1 || true
    if [[ -n "$db" ]]; then psql "$PG_ADMIN/postgres" -qAtc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

ctx="$work/context"
mkdir -p "$ctx/prebuilt"
cp Dockerfile .dockerignore "$ctx/"
cp -r static "$ctx/static"
cp "$BIN" "$ctx/prebuilt/cartpulse"
cp "$busybox" "$ctx/prebuilt/busybox"
cp /etc/ssl/certs/ca-certificates.crt "$ctx/prebuilt/ca-certificates.crt"

log "buildah bud --target runtime --build-arg RUNTIME_INPUTS=prebuilt ($(buildah --version))"
build_started=$SECONDS
containers_before=$(bh containers -aq | sort)
bh bud --pull=never --isolation chroot --format docker --layers=false \
    --build-arg RUNTIME_INPUTS=prebuilt --target runtime -t "$IMAGE" "$ctx" >"$work/build.log" 2>&1 \
    || { cat "$work/build.log" >&2; log "FAILED: buildah bud"; exit 1; }
log "image built in $((SECONDS - build_started)) s"
# buildah 1.28 leaves the working container of a stage whose FROM is another
# stage picked by a build argument (`inputs`); remove what this build left.
while read -r leftover; do
    bh rm "$leftover" >/dev/null
done < <(comm -13 <(echo "$containers_before") <(bh containers -aq | sort))

fail() { log "FAILED: $*"; [[ -f "$work/server.log" ]] && tail -40 "$work/server.log" >&2; exit 1; }

# The image's configuration, as ECS would take it.
bh inspect --type image "$IMAGE" >"$work/image.json"
python3 - "$work/image.json" >"$work/healthcheck.sh" <<'PY' || fail "image configuration"
import json, shlex, sys
c = json.load(open(sys.argv[1]))["Docker"]["config"]
def need(ok, what):
    if not ok:
        sys.exit(f"image config: {what}: {json.dumps(c)}")
need(c.get("User") == "10001:10001", "User is not 10001:10001")
need(c.get("Entrypoint") == ["/usr/local/bin/cartpulse"], "Entrypoint")
need(c.get("Cmd") == ["serve"], "Cmd")
env = dict(e.split("=", 1) for e in c.get("Env", []))
need(env.get("CARTPULSE_LISTEN") == "0.0.0.0:8080", "CARTPULSE_LISTEN")
need(env.get("CARTPULSE_LOG__FORMAT") == "json", "CARTPULSE_LOG__FORMAT")
test = (c.get("Healthcheck") or {}).get("Test") or []
need(test[:1] == ["CMD"] and len(test) > 1, "HEALTHCHECK")
print(" ".join(shlex.quote(a) for a in test[1:]))
PY

# --- run the image's binary against Postgres -------------------------------------
db="cp_image_smoke_$$"
psql "$PG_ADMIN/postgres" -qAtc "CREATE DATABASE $db" >/dev/null || fail "CREATE DATABASE on $PG_ADMIN"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base_url="http://127.0.0.1:$port"
ctr=$(bh from --pull-never --name "cartpulse-image-smoke-$$" "$IMAGE")
# buildah run keeps the image's user, working directory and environment; chroot
# isolation shares the host's network, so loopback is the host's.
# A short drain (shutdown.drain_s) keeps the SIGTERM check quick.
run_env=(--env "CARTPULSE_DATABASE_URL=$PG_ADMIN/$db" --env "CARTPULSE_LISTEN=127.0.0.1:$port"
    --env "CARTPULSE_SHUTDOWN__DRAIN_S=2")
in_image() { bh run --isolation chroot "${run_env[@]}" "$ctr" -- "$@"; }

in_image /usr/local/bin/cartpulse migrate >"$work/migrate.log" 2>&1 || { cat "$work/migrate.log" >&2; fail "cartpulse migrate"; }
ingest_key=$(in_image /usr/local/bin/cartpulse keys create --name image-smoke --scope ingest 2>>"$work/keys.log") || fail "keys create"
read_key=$(in_image /usr/local/bin/cartpulse keys create --name image-smoke-read --scope read 2>>"$work/keys.log") || fail "keys create"
[[ "$ingest_key" =~ ^[^[:space:]]{16,}$ && "$read_key" =~ ^[^[:space:]]{16,}$ ]] \
    || { cat "$work/keys.log" >&2; fail "keys create printed no key"; }

in_image /usr/local/bin/cartpulse serve >"$work/server.log" 2>&1 &
server_pid=$!
ready=""
for _ in $(seq 1 120); do
    kill -0 "$server_pid" 2>/dev/null || fail "serve exited before it was ready"
    if [[ "$(curl -s -o /dev/null -w '%{http_code}' "$base_url/readyz")" == 200 ]]; then ready=1; break; fi
    sleep 0.5
done
[[ -n "$ready" ]] || fail "/readyz never answered 200"
log "serve ready on $base_url"

# The HEALTHCHECK exactly as the image declares it, inside the image.
bh run --isolation chroot "${run_env[@]}" "$ctr" -- sh -c "$(cat "$work/healthcheck.sh")" \
    || fail "the image's HEALTHCHECK command failed against a ready server"

# Demo-like traffic: three customers' sessions, page views and an order.
now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
python3 - "$now" >"$work/events.json" <<'PY'
import json, sys
now = sys.argv[1]
events = []
for c in range(3):
    for i in range(6):
        events.append({"type": "page_view", "event_id": f"smoke-{c}-{i}", "customer_id": f"smoke-c{c}",
                       "session_id": f"smoke-s{c}", "time": now, "page_kind": "product", "duration_s": 12 + i,
                       "bounce_rate": 0.02, "exit_rate": 0.05, "page_value": 3.5})
print(json.dumps(events))
PY
n=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' "$work/events.json")
post() {
    curl -s -w '\n%{http_code}' -X POST "$base_url/v1/events" -H "Authorization: Bearer $ingest_key" \
        -H 'Content-Type: application/json' --data-binary @"$work/events.json"
}
answer=$(post) || fail "POST /v1/events: no answer"
[[ "${answer##*$'\n'}" == 200 ]] || fail "POST /v1/events: $answer"
python3 -c 'import json,sys; a=json.loads(sys.argv[1]); n=int(sys.argv[2]); sys.exit(0 if a["accepted"]==n and a["duplicates"]==0 and not a["rejected"] else f"first post: {a}")' \
    "${answer%$'\n'*}" "$n" || fail "events not all accepted"
answer=$(post) || fail "POST /v1/events: no answer"
python3 -c 'import json,sys; a=json.loads(sys.argv[1]); n=int(sys.argv[2]); sys.exit(0 if a["accepted"]==0 and a["duplicates"]==n else f"resend: {a}")' \
    "${answer%$'\n'*}" "$n" || fail "a resend was not counted as duplicates"

# The actors applied them: the customer is readable with their page views.
seen=""
for _ in $(seq 1 60); do
    if [[ "$(curl -s -o "$work/customer.json" -w '%{http_code}' -H "Authorization: Bearer $read_key" "$base_url/v1/customers/smoke-c0")" == 200 ]]; then
        seen=1
        break
    fi
    sleep 0.5
done
[[ -n "$seen" ]] || fail "GET /v1/customers/smoke-c0 never answered 200"
[[ "$(curl -s -o /dev/null -w '%{http_code}' "$base_url/readyz")" == 200 ]] || fail "/readyz after traffic"
ingested=$(curl -s "$base_url/metrics" | awk '$1 == "cartpulse_events_ingested_total" {print $2}')
python3 -c 'import sys; sys.exit(0 if float(sys.argv[1] or 0) >= int(sys.argv[2]) else 1)' "$ingested" "$n" \
    || fail "cartpulse_events_ingested_total is '$ingested', expected >= $n"
stored=$(psql "$PG_ADMIN/$db" -qAtc "SELECT count(*) FROM events WHERE event_id LIKE 'smoke-%'")
[[ "$stored" == "$n" ]] || fail "the event log holds $stored smoke events, expected $n"

# SIGTERM, as ECS stops a task: the server must exit 0 by itself. buildah run
# does not pass SIGTERM on (it kills its child), so the signal goes to the
# cartpulse process it started.
serve_process() {
    local pids=("$1") i=0 p
    while ((i < ${#pids[@]})); do
        p=${pids[i]}
        i=$((i + 1))
        if [[ "$(cat "/proc/$p/comm" 2>/dev/null)" == cartpulse ]]; then
            echo "$p"
            return 0
        fi
        mapfile -t -O "${#pids[@]}" pids < <(ps -o pid= --ppid "$p" | tr -d ' ')
    done
    return 1
}
cartpulse_pid=$(serve_process "$server_pid") || fail "no cartpulse process under buildah run ($server_pid)"
stop_started=$SECONDS
kill -TERM "$cartpulse_pid"
stopped=""
for _ in $(seq 1 120); do
    if ! kill -0 "$server_pid" 2>/dev/null; then stopped=1; break; fi
    sleep 0.5
done
[[ -n "$stopped" ]] || fail "serve still running 60 s after SIGTERM"
status=0
wait "$server_pid" || status=$?
server_pid=""
[[ $status -eq 0 ]] || fail "serve exited with status $status after SIGTERM"

log "OK: image built and run as uid 10001; migrate, keys, serve, HEALTHCHECK, $n events accepted and stored, resend counted as duplicates, customer readable, stopped $((SECONDS - stop_started)) s after SIGTERM (total $((SECONDS - started)) s)"
