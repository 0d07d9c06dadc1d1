#!/usr/bin/env bash
# Proves `docker compose up` works: builds the image, starts docker/compose.yaml under its own
# project name on high host ports, waits for the healthcheck, then over the published ports:
# core.hello (framed), raw TCP and UDP echo (nc), /healthz and the console page (HTTP), an echo
# over WebSocket, the first admin password from the log and a login with it; a timed
# `compose stop` (graceful SIGTERM, exit status 0), a restart that keeps the data volume (the
# same password still works), and a fresh volume with COSERVE_ADMIN_PASSWORD. Then `down -v`.
#
# It starts dockerd itself when no engine is running, and then stops it at the end and restores
# the iptables tables (filter, nat), ip_forward and the docker0 bridge as they were. When the
# base images debian:bookworm / debian:bookworm-slim are missing and cannot be pulled, it builds
# them with debootstrap from the host's apt mirror (air-gapped hosts, no Docker Hub).
# The images it builds stay: coserve:latest, coserve-build-cache:latest (the build stage) and
# the debian base images are the build cache of the next run (older coserve images are pruned);
# `docker image rm coserve:latest coserve-build-cache:latest` frees the space.
#
# Exit status: 0 when every check passed, or (printed loudly) when this machine cannot run a
# Docker engine at all; anything else fails with the container logs printed.
# Environment: COSERVE_SMOKE_{FRAMED,HTTP,ECHO,CHAT}_PORT (host ports, default 27070, 28080,
# 27001, 27002), COSERVE_SMOKE_PROJECT (compose project, default coserve-smoke),
# COSERVE_DEBIAN_MIRROR (default: the bookworm mirror in the host's apt sources).
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then  # dockerd, iptables and debootstrap need root
  exec sudo --preserve-env "$0" "$@"
fi
cd "$(dirname "$0")/.."

started=$SECONDS
step() { printf '\n=== smoke: %s (%ss)\n' "$*" $((SECONDS - started)); }
ok() { printf 'smoke: ok: %s\n' "$*"; }
die() { printf '\nsmoke: FAILED: %s\n' "$*" >&2; exit 1; }

# --- host tools ---------------------------------------------------------------------------
need=()
command -v dockerd >/dev/null || need+=(docker.io)
command -v docker >/dev/null || need+=(docker.io)
command -v iptables-save >/dev/null || need+=(iptables)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v python3 >/dev/null || need+=(python3)
command -v curl >/dev/null || need+=(curl)
command -v nc >/dev/null || need+=(netcat-openbsd)
command -v ip >/dev/null || need+=(iproute2)
if ! docker compose version >/dev/null 2>&1 && ! command -v docker-compose >/dev/null; then
  need+=(docker-compose)
fi
if [ ${#need[@]} -gt 0 ]; then
  step "installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    $(printf '%s\n' "${need[@]}" | sort -u) >/dev/null
fi
if docker compose version >/dev/null 2>&1; then
  compose_cmd=(docker compose)
else
  compose_cmd=(docker-compose)
fi

# --- state to restore, cleanup ------------------------------------------------------------
tmp=$(mktemp -d /tmp/coserve-smoke.XXXXXX)
project=${COSERVE_SMOKE_PROJECT:-coserve-smoke}
compose() { "${compose_cmd[@]}" -p "$project" -f docker/compose.yaml "$@"; }
dockerd_pid=""
compose_used=0
skipped=0
ip_forward_before=$(cat /proc/sys/net/ipv4/ip_forward)
docker0_before=0
ip link show docker0 >/dev/null 2>&1 && docker0_before=1
# Runtime directories dockerd, containerd and mount create: removed again if they are new.
new_run_dirs=()
for dir in /run/docker /run/containerd /run/mount; do
  [ -e "$dir" ] || new_run_dirs+=("$dir")
done
saved_tables=()
absent_tables=()

# Saves one iptables table; a table that does not exist yet is saved as empty with ACCEPT
# policies, which is what the kernel behaves like without it.
save_table() {
  local table=$1 file="$tmp/iptables.$1"
  iptables-save -t "$table" >"$file" 2>/dev/null || true
  if ! grep -q "^\*$table" "$file"; then
    absent_tables+=("$table")
    case $table in
      filter) printf '*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n' ;;
      nat) printf '*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n' ;;
    esac >"$file"
  fi
  saved_tables+=("$table")
}

cleanup() {
  local status=$?
  trap - EXIT INT TERM ERR
  set +e
  if [ "$compose_used" = 1 ]; then
    if [ "$status" -ne 0 ]; then
      echo "--- docker compose logs ---------------------------------------------" >&2
      compose logs --no-color --timestamps >&2
      echo "----------------------------------------------------------------------" >&2
    fi
    compose down -v --remove-orphans >/dev/null 2>&1 || echo "smoke: warning: compose down -v failed" >&2
  fi
  if [ -n "$dockerd_pid" ]; then
    kill -TERM "$dockerd_pid" 2>/dev/null
    for _ in $(seq 1 60); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$dockerd_pid" 2>/dev/null; then
      echo "smoke: dockerd did not stop in 30 s; killing it" >&2
      kill -KILL "$dockerd_pid" 2>/dev/null
    fi
    wait "$dockerd_pid" 2>/dev/null
    [ "$docker0_before" = 1 ] || ip link delete docker0 2>/dev/null
    for table in "${saved_tables[@]}"; do
      iptables-restore -T "$table" <"$tmp/iptables.$table" \
        || echo "smoke: warning: could not restore the iptables $table table" >&2
    done
    # With the nf_tables backend a restored table that did not exist stays as an empty table;
    # nft (when installed) removes it.
    if command -v nft >/dev/null && iptables --version | grep -q nf_tables; then
      for table in "${absent_tables[@]}"; do nft delete table ip "$table" 2>/dev/null; done
    fi
    echo "$ip_forward_before" >/proc/sys/net/ipv4/ip_forward
  fi
  if [ -d "$tmp/rootfs" ]; then  # a debootstrap that failed half way may leave mounts behind
    findmnt -rn -o TARGET | grep "^$tmp/rootfs/" | sort -r | xargs -r -n1 umount -l 2>/dev/null
  fi
  rm -rf --one-file-system "$tmp"
  local mounts
  mounts=$(findmnt -rn -o TARGET)
  for dir in "${new_run_dirs[@]}"; do
    if [ "$dir" = /run/mount ]; then
      rmdir "$dir" 2>/dev/null  # libmount's; only while nothing is recorded in it
    elif ! grep -q "^$dir\(/\|\$\)" <<<"$mounts"; then
      rm -rf --one-file-system "$dir"
    fi
  done
  if [ "$skipped" = 1 ]; then
    printf '\nsmoke: SKIPPED (no Docker engine on this machine)\n' >&2
  elif [ "$status" -eq 0 ]; then
    printf '\nsmoke: PASSED in %ss\n' $((SECONDS - started))
  else
    printf '\nsmoke: FAILED (exit %s) after %ss\n' "$status" $((SECONDS - started)) >&2
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'echo "smoke: error: line $LINENO: $BASH_COMMAND" >&2' ERR
trap 'exit 130' INT
trap 'exit 143' TERM

# --- the engine ---------------------------------------------------------------------------
if docker info >/dev/null 2>&1; then
  step "using the running Docker engine"
else
  step "starting dockerd"
  save_table filter
  save_table nat
  # Containers must not get a larger MTU than the host's uplink (builds download packages).
  uplink=$(ip -o route show default 2>/dev/null | awk '{for (i = 1; i < NF; i++) if ($i == "dev") print $(i + 1)}' | head -n 1) || true
  mtu_flag=()
  [ -n "$uplink" ] && mtu_flag=(--mtu "$(cat "/sys/class/net/$uplink/mtu")")
  dockerd --pidfile "$tmp/dockerd.pid" "${mtu_flag[@]}" >"$tmp/dockerd.log" 2>&1 &
  dockerd_pid=$!
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    kill -0 "$dockerd_pid" 2>/dev/null || break
    sleep 0.5
  done
  if ! docker info >/dev/null 2>&1; then
    cat >&2 <<EOF

##############################################################################
##  SMOKE TEST SKIPPED: this machine cannot run a Docker engine (dockerd did
##  not start). The container path was NOT tested. dockerd's last words:
##############################################################################
EOF
    tail -n 20 "$tmp/dockerd.log" | sed 's/^/##  /' >&2
    skipped=1
    exit 0
  fi
fi

# --- base images --------------------------------------------------------------------------
# The first enabled apt source of SUITE on this host: deb822 (*.sources) or one-line format.
apt_uri() {
  local suite=$1
  {
    cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk -v want="$suite" '
      function flush() { if (match_ && uri != "" && !done) { print uri; done = 1 } match_ = 0; uri = "" }
      /^[[:space:]]*$/ { flush(); next }
      /^URIs:/ { uri = $2 }
      /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == want) match_ = 1 }
      /^Enabled:[[:space:]]*no/ { uri = "" }
      END { flush() }'
    cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
      | awk -v want="$suite" '$1 == "deb" && $3 == want { print $2 }'
  } | head -n 1 || true
}

have_image() { docker image inspect "$1" >/dev/null 2>&1; }
missing_bases=()
for image in debian:bookworm debian:bookworm-slim; do
  have_image "$image" || missing_bases+=("$image")
done
if [ ${#missing_bases[@]} -gt 0 ]; then
  step "pulling ${missing_bases[*]}"
  still_missing=()
  for image in "${missing_bases[@]}"; do
    timeout 60 docker pull -q "$image" >/dev/null 2>&1 || still_missing+=("$image")
  done
  if [ ${#still_missing[@]} -gt 0 ]; then
    mirror=${COSERVE_DEBIAN_MIRROR:-$(apt_uri bookworm)}
    mirror=${mirror:-http://deb.debian.org/debian}
    security=$(apt_uri bookworm-security)
    step "no registry: building ${still_missing[*]} with debootstrap from $mirror"
    rootfs="$tmp/rootfs"
    debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$tmp/debootstrap.log" 2>&1 \
      || { tail -n 30 "$tmp/debootstrap.log" >&2; die "debootstrap failed"; }
    # apt inside the image uses the same mirror as this host.
    {
      echo "deb $mirror bookworm main"
      echo "deb $mirror bookworm-updates main"
      [ -z "$security" ] || echo "deb $security bookworm-security main"
    } >"$rootfs/etc/apt/sources.list"
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/etc/hostname
    # One import serves both tags: a minbase system is about what debian:bookworm-slim holds.
    tar -C "$rootfs" --numeric-owner -c . \
      | docker import -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
          -c 'CMD ["bash"]' - "${still_missing[0]}" >/dev/null
    for image in "${still_missing[@]:1}"; do docker tag "${still_missing[0]}" "$image"; done
    ok "imported ${still_missing[*]}"
    rm -rf --one-file-system "$rootfs"
  fi
fi

# --- build and start ----------------------------------------------------------------------
export COSERVE_BIND=127.0.0.1
export COSERVE_FRAMED_PORT=${COSERVE_SMOKE_FRAMED_PORT:-27070}
export COSERVE_HTTP_PORT=${COSERVE_SMOKE_HTTP_PORT:-28080}
export COSERVE_ECHO_PORT=${COSERVE_SMOKE_ECHO_PORT:-27001}
export COSERVE_CHAT_PORT=${COSERVE_SMOKE_CHAT_PORT:-27002}
export COSERVE_ADMIN_PASSWORD=""  # first run: the random password from the log
# The classic builder uses the local base images as they are; BuildKit would ask a registry.
export DOCKER_BUILDKIT=0 COMPOSE_DOCKER_CLI_BUILD=0
compose_used=1
compose down -v --remove-orphans >/dev/null 2>&1 || true  # leftovers of an interrupted run

step "building the image (${compose_cmd[*]} build)"
build_started=$SECONDS
compose build
ok "image built in $((SECONDS - build_started))s"
# The build stage is the cache of the next run: tag it (all cached, a second), then drop the
# untagged coserve images that older sources left behind (and nothing else of the host's).
docker build -q -f docker/Dockerfile --target build -t coserve-build-cache:latest . \
  >/dev/null 2>"$tmp/cache-tag.log" || { cat "$tmp/cache-tag.log" >&2; die "tagging the build stage"; }
docker image prune -f --filter label=org.coserve.image >/dev/null
ok "images kept: $(docker images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E '^(coserve|debian)' | tr '\n' ' ')"

container=""
wait_healthy() {
  local status=""
  container=$(compose ps -q coserve)
  [ -n "$container" ] || die "no coserve container"
  for _ in $(seq 1 60); do
    status=$(docker inspect -f '{{.State.Status}} {{.State.Health.Status}}' "$container")
    case $status in
      "running healthy") ok "healthy after $1 in $((SECONDS - phase_started))s"; return 0 ;;
      exited* | dead*) die "the container stopped: $status" ;;
    esac
    sleep 1
  done
  die "not healthy after 60 s: $status"
}

step "up"
phase_started=$SECONDS
compose up -d
wait_healthy "up"

# --- checks over the published ports ------------------------------------------------------
host=127.0.0.1
step "checks over the published ports"
python3 docker/smoke_client.py hello "$host" "$COSERVE_FRAMED_PORT" || die "core.hello on the framed port"
ok "core.hello on :$COSERVE_FRAMED_PORT"

got=$(printf 'coserve smoke\n' | nc -N -w 5 "$host" "$COSERVE_ECHO_PORT") || die "nc to the echo port"
[ "$got" = "coserve smoke" ] || die "raw TCP echo returned '$got'"
ok "raw TCP echo through nc on :$COSERVE_ECHO_PORT"
got=$(printf 'datagram' | nc -u -w 2 "$host" "$COSERVE_ECHO_PORT") || true
[ "$got" = "datagram" ] || die "UDP echo returned '$got'"
ok "UDP echo through nc on :$COSERVE_ECHO_PORT"

health=$(curl -fsS --max-time 5 "http://$host:$COSERVE_HTTP_PORT/healthz") || die "GET /healthz"
grep -q '"status":"ok"' <<<"$health" || die "/healthz answered: $health"
ok "GET /healthz: $health"
# Into a variable first: `curl | grep -q` fails under pipefail when grep stops reading early.
page=$(curl -fsS --max-time 5 "http://$host:$COSERVE_HTTP_PORT/") || die "GET /"
grep -q '<title>coserve console</title>' <<<"$page" || die "GET / did not return the console page"
ok "GET / returns the console"
curl -fsS --max-time 5 -o /dev/null "http://$host:$COSERVE_HTTP_PORT/app.js" || die "GET /app.js"
ok "GET /app.js"

python3 docker/smoke_client.py ws "$host" "$COSERVE_HTTP_PORT" || die "WebSocket echo on /ws"
ok "WebSocket echo on :$COSERVE_HTTP_PORT/ws"

uid=$(docker exec "$container" id -u) || die "docker exec id -u"
[ "$uid" != 0 ] || die "the server runs as root"
ok "the server runs as uid $uid"
docker exec "$container" coserve-cli hello >/dev/null || die "coserve-cli hello inside the container"
ok "coserve-cli hello inside the container"
users=$(docker exec "$container" coserve user list --data-dir /var/lib/coserve) || die "coserve user list"
grep -q admin <<<"$users" || die "coserve user list: $users"
ok "coserve user list inside the container shows admin"

password=$(compose logs --no-color coserve | sed -n "s/.*created user 'admin' with password: *\([^[:space:]]*\).*/\1/p" | tail -n 1)
[ -n "$password" ] || die "no admin password in the log"
COSERVE_PASSWORD=$password python3 docker/smoke_client.py login "$host" "$COSERVE_FRAMED_PORT" admin \
  || die "login with the password from the log"
ok "auth.login as admin with the password printed in the log"
# The command sandbox works under the compose file's settings: the program sees its home at
# /home/<user> (a refused run, when bubblewrap cannot make its namespaces, fails here).
cwd=$(docker exec -e COSERVE_PASSWORD="$password" "$container" coserve-cli --user admin exec pwd) \
  || die "command.run in the sandbox inside the container: $(compose logs --no-color coserve | grep -i sandbox | tail -n 3)"
[ "$cwd" = /home/admin ] || die "command.run printed '$cwd', expected /home/admin"
ok "command.run in the bubblewrap sandbox inside the container"

# --- graceful stop, restart with the same volume ------------------------------------------
step "stop (SIGTERM)"
stop_started=$SECONDS
compose stop
stop_took=$((SECONDS - stop_started))
exit_code=$(docker inspect -f '{{.State.ExitCode}}' "$container")
[ "$exit_code" = 0 ] || die "the server exited with $exit_code after SIGTERM (137 = killed)"
[ "$stop_took" -le 6 ] || die "compose stop took ${stop_took}s"
ok "stopped in ${stop_took}s, exit status 0"

step "start again on the same volume"
phase_started=$SECONDS
compose start
wait_healthy "restart"
COSERVE_PASSWORD=$password python3 docker/smoke_client.py login "$host" "$COSERVE_FRAMED_PORT" admin \
  || die "the admin password did not survive the restart (data volume lost?)"
ok "the data volume survived: same admin password works"

# --- a fresh volume with COSERVE_ADMIN_PASSWORD -------------------------------------------
step "fresh volume with COSERVE_ADMIN_PASSWORD"
compose down -v >/dev/null 2>&1
COSERVE_ADMIN_PASSWORD="smoke-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
phase_started=$SECONDS
compose up -d
wait_healthy "up with a new volume"
COSERVE_PASSWORD=$COSERVE_ADMIN_PASSWORD python3 docker/smoke_client.py login "$host" "$COSERVE_FRAMED_PORT" admin \
  || die "login with COSERVE_ADMIN_PASSWORD"
ok "auth.login as admin with COSERVE_ADMIN_PASSWORD"
log=$(compose logs --no-color coserve)
if grep -q "created user 'admin' with password:" <<<"$log"; then
  die "a random password was printed although COSERVE_ADMIN_PASSWORD was set"
fi

step "down -v"
