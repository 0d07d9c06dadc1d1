#!/usr/bin/env bash
# Runs the coserve benchmark end to end and prints a markdown report:
#   bench/run.sh
# It builds the release preset (incrementally), starts coserve and the epoll-echo baseline on
# loopback ports the kernel picks, runs every scenario with coserve-bench, prints the results
# and target checks, and stops every process it started. See bench/README.md.
#
# Knobs (environment):
#   BENCH_DURATION=10 BENCH_WARMUP=1     measured / warm-up seconds of each ping-pong run
#   BENCH_CONNS=50 BENCH_SIZE=64         ping-pong connections and message size (bytes)
#   BENCH_BULK_CONNS=4 BENCH_BULK_BYTES=256M
#   BENCH_IDLE_CONNS=10000 BENCH_IDLE_HOLD=3
#   BENCH_THREADS=1                      load generator threads
#   BENCH_CHAT_MEMBERS=1000 BENCH_CHAT_RATE=100 BENCH_CHAT_SENDERS=4   chat fan-out
#   BENCH_COMMAND_RUNS=1000              command.run ["true"] in a row
#   BENCH_WS_IDLE_CONNS=$BENCH_IDLE_CONNS  idle WebSocket connections
#   BENCH_NODE=auto                      0: skip the Node.js `ws` baseline of ws_echo
#   BENCH_NODE_DIR=build/bench-node      where `npm install --no-save ws` puts the package
#   BENCH_FILE_BYTES=1G                  files: size of the file uploaded and downloaded
#   BENCH_SCENARIOS="raw_pingpong framed_pingpong bulk idle framed_idle chat_fanout command_true ws_echo ws_idle files"
#   BENCH_REPEAT=3                       runs of each ping-pong; targets use the medians
#   BENCH_SERVER_CPUS=0 BENCH_CLIENT_CPUS=1  taskset CPU lists of servers / generator; the
#                                        defaults need 2+ CPUs (fewer: no pinning); "" unpins
#   BENCH_WORKERS=1                      coserve's server.workers (default 1 when pinned to
#                                        one CPU, as the one-thread baselines are; else auto)
#   BENCH_COSERVE_ARGS=                  extra coserve flags, e.g. "--set some.key=value"
#   BENCH_BUILD=1                        0: use the binaries as they are
#   BENCH_BIN_DIR=build/release/bin      where coserve, coserve-bench and epoll-echo are
#   BENCH_OUT=build/bench                where results-*.jsonl and report-*.md are kept
#   BENCH_STRICT=0                       1: exit non-zero when a target is missed
#
# Adding a scenario: write a function scenario_NAME that calls run_bench (and add_check for its
# targets), add NAME to the default BENCH_SCENARIOS, and turn on the coserve listener it needs
# in coserve_listeners below.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

DURATION=${BENCH_DURATION:-10}
WARMUP=${BENCH_WARMUP:-1}
CONNS=${BENCH_CONNS:-50}
SIZE=${BENCH_SIZE:-64}
BULK_CONNS=${BENCH_BULK_CONNS:-4}
BULK_BYTES=${BENCH_BULK_BYTES:-256M}
IDLE_CONNS=${BENCH_IDLE_CONNS:-10000}
IDLE_HOLD=${BENCH_IDLE_HOLD:-3}
THREADS=${BENCH_THREADS:-1}
CHAT_MEMBERS=${BENCH_CHAT_MEMBERS:-1000}
CHAT_RATE=${BENCH_CHAT_RATE:-100}
CHAT_SENDERS=${BENCH_CHAT_SENDERS:-4}
COMMAND_RUNS=${BENCH_COMMAND_RUNS:-1000}
WS_IDLE_CONNS=${BENCH_WS_IDLE_CONNS:-$IDLE_CONNS}
FILE_BYTES=${BENCH_FILE_BYTES:-1G}
SCENARIOS=${BENCH_SCENARIOS:-raw_pingpong framed_pingpong bulk idle framed_idle chat_fanout command_true ws_echo ws_idle files}
REPEAT=${BENCH_REPEAT:-3}
# Like for like on a small machine: the server on one core, the generator on the other, so
# neither steals the other's time slices and server CPU per round trip is comparable.
if [ "$(nproc)" -ge 2 ]; then
  SERVER_CPUS=${BENCH_SERVER_CPUS-0}
  CLIENT_CPUS=${BENCH_CLIENT_CPUS-1}
else
  SERVER_CPUS=${BENCH_SERVER_CPUS-}
  CLIENT_CPUS=${BENCH_CLIENT_CPUS-}
fi
if [ -n "$SERVER_CPUS" ] && [[ "$SERVER_CPUS" =~ ^[0-9]+$ ]]; then
  WORKERS=${BENCH_WORKERS:-1}
else
  WORKERS=${BENCH_WORKERS:-}
fi
BIN_DIR=${BENCH_BIN_DIR:-$root/build/release/bin}
OUT_DIR=${BENCH_OUT:-$root/build/bench}
NODE_DIR=${BENCH_NODE_DIR:-$root/build/bench-node}

# Every coserve we start has a fresh data dir, so its first start creates user `admin` with this
# password (COSERVE_ADMIN_PASSWORD); command_true logs in with it (COSERVE_BENCH_PASSWORD).
bench_password=$(head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')
export COSERVE_ADMIN_PASSWORD=$bench_password COSERVE_BENCH_PASSWORD=$bench_password

# Listeners coserve starts with; an empty value turns one off. Port 0: the kernel picks.
coserve_listeners=(
  --set listeners.framed=127.0.0.1:0
  --set listeners.echo_tcp=127.0.0.1:0
  --set listeners.echo_udp=127.0.0.1:0
  --set listeners.http=127.0.0.1:0
  --set listeners.chat_line=
  --set listeners.echo_unix=
  --set listeners.echo_unix_dgram=
  # Every load generator connects from 127.0.0.1: the per-address cap (256 by default) would
  # refuse the idle and chat fan-out scenarios' thousands of connections.
  --set access.max_per_address=0
)

work=$(mktemp -d "${TMPDIR:-/tmp}/coserve-bench.XXXXXX")
results=$work/results.jsonl
started_pids=()  # every background process we started, stopped on exit
checks=()        # --check specs for the report table
failed_runs=0
coserve_pid=
epoll_pid=
epoll_addr=
server_pid=   # the last baseline start_port_server started
server_addr=

log() { echo "run.sh: $*" >&2; }
die() {
  log "$*"
  exit 1
}

# Stops one process we started: TERM, then KILL if it has not gone within 5 s.
stop_pid() {
  local pid=$1
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  forget_pid "$pid"
}

# Drops a pid that has been reaped from started_pids, so cleanup never signals a recycled pid.
forget_pid() {
  local kept=() p
  for p in "${started_pids[@]}"; do [ "$p" = "$1" ] || kept+=("$p"); done
  started_pids=("${kept[@]}")
}

cleanup() {
  local status=$? i
  # Newest first: the generator goes before the servers it is loading.
  for ((i = ${#started_pids[@]} - 1; i >= 0; i--)); do stop_pid "${started_pids[i]}"; done
  if [ "$status" -ne 0 ] && [ -f "$work/coserve.log" ]; then
    log "last lines of the coserve log:"
    tail -n 20 "$work/coserve.log" >&2 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM  # leave through the EXIT trap

# Optional CPU pinning, as a command prefix.
pin() {
  if [ -n "$1" ]; then echo "taskset -c $1"; fi
}

build() {
  if [ "${BENCH_BUILD:-1}" = 0 ]; then return 0; fi
  (
    cd "$root"
    [ -f build/release/CMakeCache.txt ] || cmake --preset release
    cmake --build --preset release --target coserve coserve-bench epoll-echo beast-ws-echo
  )
}

check_binaries() {
  local b
  for b in coserve coserve-bench epoll-echo beast-ws-echo; do
    [ -x "$BIN_DIR/$b" ] || die "missing $BIN_DIR/$b (build the release preset, or set BENCH_BIN_DIR)"
  done
}

# wait_for_file FILE PID SECONDS: until FILE is non-empty; fails early if PID has exited.
wait_for_file() {
  local file=$1 pid=$2 tries=$(($3 * 10))
  while [ "$tries" -gt 0 ]; do
    [ -s "$file" ] && return 0
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.1
    tries=$((tries - 1))
  done
  return 1
}

# coserve_addr NAME: the bound address of listener NAME from the ready file (jq-free: the
# file is one flat JSON object of string values).
coserve_addr() {
  local addr
  addr=$(tr -d '\n' <"$work/ready.json" | sed -n "s/.*\"$1\"[[:space:]]*:[[:space:]]*\"\([^\"]*\)\".*/\1/p")
  [ -n "$addr" ] || die "listener $1 is not in the ready file: $(cat "$work/ready.json")"
  echo "$addr"
}

# start_coserve [coserve flags...]: a fresh coserve (new data dir); the flags come after the
# defaults, e.g. a scenario's --set of a service limit.
start_coserve() {
  rm -rf "$work/data" "$work/ready.json"
  mkdir -p "$work/data"
  # shellcheck disable=SC2086 # BENCH_COSERVE_ARGS is a list of words on purpose
  $(pin "$SERVER_CPUS") "$BIN_DIR/coserve" --data-dir "$work/data" --ready-file "$work/ready.json" \
    "${coserve_listeners[@]}" ${WORKERS:+--set server.workers=$WORKERS} ${BENCH_COSERVE_ARGS:-} "$@" \
    >"$work/coserve.log" 2>&1 &
  coserve_pid=$!
  started_pids+=("$coserve_pid")
  wait_for_file "$work/ready.json" "$coserve_pid" 30 || die "coserve did not write its ready file"
  log "coserve (pid $coserve_pid) ready: $(tr -d '\n' <"$work/ready.json")"
}

# wait_rss_settled PID: until the process's VmRSS stops moving (three reads 0.2 s apart within
# 256 KiB), at most 5 s. A fresh coserve is ready before the Argon2id hash of its first user
# (64 MiB) is freed; an idle baseline taken then would make every connection look free.
wait_rss_settled() {
  local pid=$1 prev=-1 rss steady=0 _
  for _ in $(seq 25); do
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null) || return 0
    [ -n "$rss" ] || return 0
    if [ "$prev" -ge 0 ] && [ $((rss > prev ? rss - prev : prev - rss)) -le 256 ]; then
      steady=$((steady + 1))
      [ "$steady" -ge 2 ] && return 0
    else
      steady=0
    fi
    prev=$rss
    sleep 0.2
  done
  log "VmRSS of $pid still moving; measuring anyway"
}

stop_coserve() {
  [ -n "$coserve_pid" ] || return 0
  stop_pid "$coserve_pid"
  coserve_pid=
}

start_epoll() {
  rm -f "$work/epoll.port"
  $(pin "$SERVER_CPUS") "$BIN_DIR/epoll-echo" 0 >"$work/epoll.port" 2>"$work/epoll.log" &
  epoll_pid=$!
  started_pids+=("$epoll_pid")
  wait_for_file "$work/epoll.port" "$epoll_pid" 10 || die "epoll-echo did not start: $(cat "$work/epoll.log")"
  epoll_addr=127.0.0.1:$(head -n 1 "$work/epoll.port")
  log "epoll-echo (pid $epoll_pid) on $epoll_addr"
}

stop_epoll() {
  [ -n "$epoll_pid" ] || return 0
  stop_pid "$epoll_pid"
  epoll_pid=
}

# start_port_server NAME COMMAND...: starts a baseline server that prints its port on stdout
# (beast-ws-echo, the Node.js script); sets server_pid and server_addr.
start_port_server() {
  local name=$1
  shift
  rm -f "$work/$name.port"
  # shellcheck disable=SC2046
  $(pin "$SERVER_CPUS") "$@" >"$work/$name.port" 2>"$work/$name.log" &
  server_pid=$!
  started_pids+=("$server_pid")
  wait_for_file "$work/$name.port" "$server_pid" 10 || die "$name did not start: $(cat "$work/$name.log")"
  server_addr=127.0.0.1:$(head -n 1 "$work/$name.port")
  log "$name (pid $server_pid) on $server_addr"
}

# node_ws_ready: true when Node.js can run bench/ws_echo_server.js, installing the npm package
# `ws` into NODE_DIR the first time (never into the source tree).
node_ws_ready() {
  [ "${BENCH_NODE:-auto}" != 0 ] || return 1
  if ! command -v node >/dev/null; then
    log "node not found: no Node.js ws baseline"
    return 1
  fi
  [ -f "$NODE_DIR/node_modules/ws/package.json" ] && return 0
  if ! command -v npm >/dev/null; then
    log "npm not found: no Node.js ws baseline"
    return 1
  fi
  mkdir -p "$NODE_DIR"
  log "installing the npm package ws into $NODE_DIR"
  if ! npm install --no-save --no-audit --no-fund --prefix "$NODE_DIR" ws >"$work/npm.log" 2>&1; then
    log "npm install ws failed, no Node.js ws baseline:"
    tail -n 5 "$work/npm.log" >&2 || true
    return 1
  fi
}

# run_bench NAME SCENARIO TARGET [coserve-bench options...]: one measured run, appended to the
# results. A run that reports errors is counted and the rest of the benchmark goes on.
run_bench() {
  local name=$1 scenario=$2 target=$3 pid status=0
  shift 3
  log "$name: $scenario against $target"
  # In the background and waited for, so a TERM or Ctrl-C reaches the trap at once (bash
  # defers traps while a foreground child runs) and cleanup stops the generator too.
  # shellcheck disable=SC2046 # pin prints nothing or a command prefix
  $(pin "$CLIENT_CPUS") "$BIN_DIR/coserve-bench" "$scenario" --target "$target" --name "$name" \
    --threads "$THREADS" --results "$results" "$@" &
  pid=$!
  started_pids+=("$pid")
  wait "$pid" || status=$?
  forget_pid "$pid"
  if [ "$status" -ne 0 ]; then
    failed_runs=$((failed_runs + 1))
    log "$name reported errors (exit status $status)"
  fi
}

# add_check 'TITLE|A/B:METRIC>=X' or 'TITLE|A:METRIC<=X' (see coserve-bench --help).
add_check() { checks+=(--check "$1"); }

pingpong_args() { echo --conns "$CONNS" --size "$SIZE" --duration "$DURATION" --warmup "$WARMUP"; }

# ---- scenarios ----------------------------------------------------------------------------

# Scenarios read coserve addresses into a variable first: a failing $(...) inside a command's
# arguments would not stop the script under set -e.

# The ping-pongs run REPEAT times, each server in turn, so a slow minute hits both alike.
scenario_raw_pingpong() {
  local echo_tcp r
  echo_tcp=$(coserve_addr echo_tcp)
  for r in $(seq "$REPEAT"); do
    # shellcheck disable=SC2046
    run_bench epoll-raw raw-pingpong "$epoll_addr" $(pingpong_args) --server-pid "$epoll_pid"
    # shellcheck disable=SC2046
    run_bench coserve-raw raw-pingpong "$echo_tcp" $(pingpong_args) --server-pid "$coserve_pid"
  done
  add_check "raw echo ping-pong, coserve / epoll|coserve-raw/epoll-raw:msgs_per_s>=0.95"
  add_check "server CPU per round trip, coserve raw / epoll (lower is better)|coserve-raw/epoll-raw:server_cpu_us_per_msg"
}

scenario_framed_pingpong() {
  local framed r
  framed=$(coserve_addr framed)
  for r in $(seq "$REPEAT"); do
    # shellcheck disable=SC2046
    run_bench coserve-framed framed-pingpong "$framed" $(pingpong_args) --server-pid "$coserve_pid"
  done
  add_check "framed echo / raw echo (coserve)|coserve-framed/coserve-raw:msgs_per_s"
  add_check "server CPU per round trip, framed / raw|coserve-framed/coserve-raw:server_cpu_us_per_msg<=1.5"
}

scenario_bulk() {
  local echo_tcp
  echo_tcp=$(coserve_addr echo_tcp)
  run_bench epoll-bulk bulk "$epoll_addr" --conns "$BULK_CONNS" --bytes "$BULK_BYTES"
  run_bench coserve-bulk bulk "$echo_tcp" --conns "$BULK_CONNS" --bytes "$BULK_BYTES"
  add_check "raw echo bulk, coserve / epoll|coserve-bulk/epoll-bulk:mb_per_s>=0.90"
}

scenario_idle() {
  # Fresh servers, so the RSS baseline holds no buffers left over from the runs before.
  local echo_tcp
  stop_coserve
  start_coserve
  wait_rss_settled "$coserve_pid"
  echo_tcp=$(coserve_addr echo_tcp)
  run_bench coserve-idle idle "$echo_tcp" --conns "$IDLE_CONNS" --hold "$IDLE_HOLD" \
    --server-pid "$coserve_pid"
  stop_epoll
  start_epoll
  run_bench epoll-idle idle "$epoll_addr" --conns "$IDLE_CONNS" --hold "$IDLE_HOLD" --server-pid "$epoll_pid"
  add_check "idle connection, coserve KiB RSS each|coserve-idle:kib_per_conn"
}

# Idle framed sessions on a fresh coserve: each connection answers one core.ping first, so it
# holds a whole Session (reader, watchdog, state), not only a raw echo.
scenario_framed_idle() {
  local framed
  stop_coserve
  start_coserve
  wait_rss_settled "$coserve_pid"
  framed=$(coserve_addr framed)
  run_bench coserve-framed-idle framed-idle "$framed" --conns "$IDLE_CONNS" --hold "$IDLE_HOLD" \
    --server-pid "$coserve_pid"
  add_check "idle framed session, coserve KiB RSS each|coserve-framed-idle:kib_per_conn<=6"
}

# Chat fan-out: CHAT_MEMBERS members in one room, CHAT_SENDERS of them sending CHAT_RATE
# messages/s in total; then the same with one member that never reads. The server's flood
# control (10 msgs/s per member, bursts of 20) would refuse the senders, so it is raised, and
# members_per_room is raised if the room needs more than its default 10000.
scenario_chat_fanout() {
  local framed per_room=10000 chat_args
  [ $((CHAT_MEMBERS + 1)) -le "$per_room" ] || per_room=$((CHAT_MEMBERS + 1))
  stop_coserve
  start_coserve --set services.chat.messages_per_second=1000000 --set services.chat.burst=1000000 \
    --set services.chat.members_per_room="$per_room"
  framed=$(coserve_addr framed)
  chat_args=(--conns "$CHAT_MEMBERS" --rate "$CHAT_RATE" --senders "$CHAT_SENDERS" --duration "$DURATION" --warmup "$WARMUP")
  run_bench coserve-chat chat-fanout "$framed" "${chat_args[@]}"
  run_bench coserve-chat-stalled chat-fanout "$framed" "${chat_args[@]}" --stalled
  add_check "chat fan-out, deliveries/s|coserve-chat:msgs_per_s"
  add_check "chat fan-out, p99 delivery latency µs|coserve-chat:p99_us"
  add_check "chat fan-out with a stalled member, p99 delivery latency µs|coserve-chat-stalled:p99_us"
}

# COMMAND_RUNS sequential command.run ["true"] over one logged-in session.
scenario_command_true() {
  local framed
  framed=$(coserve_addr framed)
  run_bench coserve-command command-true "$framed" --user admin --count "$COMMAND_RUNS"
  add_check "command.run true x$COMMAND_RUNS, seconds|coserve-command:seconds"
  add_check "command.run true, runs/s|coserve-command:msgs_per_s"
}

# WebSocket echo ping-pong: coserve's /ws beside beast-ws-echo and, when Node.js is there, the
# npm package ws. Each baseline runs only while it is measured.
scenario_ws_echo() {
  local http r
  http=$(coserve_addr http)
  start_port_server beast-ws-echo "$BIN_DIR/beast-ws-echo" 0
  for r in $(seq "$REPEAT"); do
    # shellcheck disable=SC2046
    run_bench coserve-ws ws-echo "$http" $(pingpong_args) --server-pid "$coserve_pid"
    # shellcheck disable=SC2046
    run_bench beast-ws ws-echo "$server_addr" $(pingpong_args) --server-pid "$server_pid"
  done
  stop_pid "$server_pid"
  add_check "WebSocket echo, coserve / Beast|coserve-ws/beast-ws:msgs_per_s"
  add_check "server CPU per round trip, coserve / Beast|coserve-ws/beast-ws:server_cpu_us_per_msg<=1.5"
  if node_ws_ready; then
    start_port_server node-ws env NODE_PATH="$NODE_DIR/node_modules" node "$root/bench/ws_echo_server.js" 0
    # shellcheck disable=SC2046
    run_bench node-ws ws-echo "$server_addr" $(pingpong_args) --server-pid "$server_pid"
    stop_pid "$server_pid"
    add_check "WebSocket echo, coserve / Node.js ws|coserve-ws/node-ws:msgs_per_s"
  fi
}

# Idle WebSocket connections on a fresh coserve (as scenario_idle), and on beast-ws-echo for
# reference.
scenario_ws_idle() {
  local http
  stop_coserve
  start_coserve
  wait_rss_settled "$coserve_pid"
  http=$(coserve_addr http)
  run_bench coserve-ws-idle ws-idle "$http" --conns "$WS_IDLE_CONNS" --hold "$IDLE_HOLD" --server-pid "$coserve_pid"
  start_port_server beast-ws-echo "$BIN_DIR/beast-ws-echo" 0
  run_bench beast-ws-idle ws-idle "$server_addr" --conns "$WS_IDLE_CONNS" --hold "$IDLE_HOLD" --server-pid "$server_pid"
  stop_pid "$server_pid"
  add_check "idle WebSocket connection, coserve KiB RSS each|coserve-ws-idle:kib_per_conn<=8"
}

# File transfer: one FILE_BYTES file of random bytes uploaded and downloaded through coserve's
# files service with the real client (`coserve-cli put/get`, as user admin), then through vsftpd
# (when installed) with curl over ftp://. Each figure is the file's bytes over the wall time of
# the whole client command: for coserve that includes login, the client's SHA-256 of the file,
# the transfer, the server's SHA-256 check, fsync and rename (put), and the client's fsync and
# SHA-256 check (get). vsftpd checks nothing and syncs nothing, so it is measured twice: as it is
# (`-cached`), and with the stored (put) or downloaded (get) file fsynced after curl (`sync FILE`),
# which is coserve's durability. Outside the timing the script compares the SHA-256 of the
# source with the server's stored copy and with the download, on both servers. Every file lives
# under the run's temp dir: TMPDIR=/dev/shm measures the servers instead of the disk.
scenario_files() {
  local bytes dir framed src_sha port ok vs_pid
  local cli=(env COSERVE_PASSWORD="$bench_password" "$BIN_DIR/coserve-cli" --host 127.0.0.1)
  bytes=$(numfmt --from=iec "$FILE_BYTES") || die "BENCH_FILE_BYTES: not a size: $FILE_BYTES"
  dir=$work/files
  rm -rf "$dir"
  mkdir -p "$dir/vsftpd/root/pub" "$dir/vsftpd/empty"
  log "files: writing $bytes random bytes to $dir/source.bin"
  head -c "$bytes" /dev/urandom >"$dir/source.bin"
  src_sha=$(files_sha256 "$dir/source.bin")

  stop_coserve
  start_coserve
  framed=$(coserve_addr framed)
  cli+=(--port "${framed##*:}" --user admin --quiet)
  files_timed coserve-put files-put "$framed" "$bytes" "$src_sha" "$work/data/homes/admin/bench.bin" \
    "${cli[@]}" put "$dir/source.bin" /bench.bin
  files_timed coserve-get files-get "$framed" "$bytes" "$src_sha" "$dir/coserve-download.bin" \
    "${cli[@]}" get /bench.bin "$dir/coserve-download.bin"
  rm -f "$dir/coserve-download.bin"
  # A fresh coserve (and data dir) for whatever runs next, without the stored copy.
  stop_coserve
  start_coserve
  add_check "file upload, coserve MB/s|coserve-put:mb_per_s"
  add_check "file download, coserve MB/s|coserve-get:mb_per_s"

  if ! command -v vsftpd >/dev/null && [ ! -x /usr/sbin/vsftpd ]; then
    log "vsftpd not installed (scripts/install-deps.sh bench installs it): coserve figures only"
    return 0
  fi
  # vsftpd runs as whoever runs this script (run_as_launching_user: no privilege separation, no
  # chroot, so root and non-root alike), anonymous with upload and overwrite into root/pub,
  # passive ports right above the control port. It has no "port 0", so a busy port is retried.
  ok=0
  for _ in 1 2 3 4 5; do
    port=$((20000 + RANDOM % 40000))
    cat >"$dir/vsftpd/vsftpd.conf" <<EOF
listen=YES
listen_ipv6=NO
listen_address=127.0.0.1
listen_port=$port
background=NO
run_as_launching_user=YES
seccomp_sandbox=NO
anonymous_enable=YES
no_anon_password=YES
anon_root=$dir/vsftpd/root
write_enable=YES
anon_upload_enable=YES
anon_other_write_enable=YES
anon_umask=022
local_enable=NO
allow_writeable_chroot=YES
secure_chroot_dir=$dir/vsftpd/empty
pasv_enable=YES
pasv_address=127.0.0.1
pasv_min_port=$((port + 1))
pasv_max_port=$((port + 40))
xferlog_enable=NO
vsftpd_log_file=$dir/vsftpd/vsftpd.log
EOF
    chmod 555 "$dir/vsftpd/root"  # vsftpd refuses a writable anonymous root for non-root users
    # shellcheck disable=SC2046
    $(pin "$SERVER_CPUS") "$(command -v vsftpd || echo /usr/sbin/vsftpd)" "$dir/vsftpd/vsftpd.conf" \
      >"$dir/vsftpd/stdout.log" 2>&1 &
    vs_pid=$!
    started_pids+=("$vs_pid")
    for _ in $(seq 30); do
      kill -0 "$vs_pid" 2>/dev/null || break
      if curl -s --max-time 2 -o /dev/null "ftp://127.0.0.1:$port/"; then
        ok=1
        break
      fi
      sleep 0.1
    done
    [ "$ok" = 1 ] && break
    stop_pid "$vs_pid"
  done
  if [ "$ok" != 1 ]; then
    log "vsftpd did not start: $(cat "$dir/vsftpd/stdout.log" "$dir/vsftpd/vsftpd.log" 2>/dev/null | tail -n 3)"
    failed_runs=$((failed_runs + 1))
    return 0
  fi
  log "vsftpd (pid $vs_pid) on 127.0.0.1:$port"
  local url=ftp://127.0.0.1:$port/pub/bench.bin stored=$dir/vsftpd/root/pub/bench.bin
  files_timed vsftpd-put-cached files-put "127.0.0.1:$port" "$bytes" "$src_sha" "$stored" \
    curl -sS -T "$dir/source.bin" "$url"
  rm -f "$stored"
  sync
  # shellcheck disable=SC2016 # $1.. belong to the inner sh
  files_timed vsftpd-put files-put "127.0.0.1:$port" "$bytes" "$src_sha" "$stored" \
    sh -c 'curl -sS -T "$1" "$2" && sync "$3"' sh "$dir/source.bin" "$url" "$stored"
  files_timed vsftpd-get-cached files-get "127.0.0.1:$port" "$bytes" "$src_sha" "$dir/vsftpd-download.bin" \
    curl -sS -o "$dir/vsftpd-download.bin" "$url"
  rm -f "$dir/vsftpd-download.bin"
  sync
  # shellcheck disable=SC2016
  files_timed vsftpd-get files-get "127.0.0.1:$port" "$bytes" "$src_sha" "$dir/vsftpd-download.bin" \
    sh -c 'curl -sS -o "$1" "$2" && sync "$1"' sh "$dir/vsftpd-download.bin" "$url"
  stop_pid "$vs_pid"
  rm -rf "$dir"
  add_check "file upload, coserve / vsftpd + fsync|coserve-put/vsftpd-put:mb_per_s>=1.0"
  add_check "file download, coserve / vsftpd + fsync|coserve-get/vsftpd-get:mb_per_s>=1.0"
  add_check "file upload, coserve / vsftpd as shipped (no fsync)|coserve-put/vsftpd-put-cached:mb_per_s>=1.0"
  add_check "file download, coserve / vsftpd as shipped (no fsync)|coserve-get/vsftpd-get-cached:mb_per_s>=1.0"
}

# files_sha256 FILE: lower-case hex SHA-256 (OpenSSL when present: it uses the CPU's SHA
# instructions, coreutils does not).
files_sha256() {
  if command -v openssl >/dev/null; then
    openssl dgst -sha256 -r "$1" | cut -d' ' -f1
  else
    sha256sum "$1" | cut -d' ' -f1
  fi
}

# files_timed NAME SCENARIO TARGET BYTES SHA256 CHECK_FILE COMMAND...: runs COMMAND (pinned like the
# generator), appends its MB/s (10^6 bytes/s) to the results, then compares CHECK_FILE's SHA-256
# with SHA256 (a mismatch or a failed command is an error of the run).
files_timed() {
  local name=$1 scenario=$2 target=$3 bytes=$4 want=$5 check=$6 start end status=0 errors=0 secs mb got
  shift 6
  log "$name: $*"
  start=$(date +%s.%N)
  # shellcheck disable=SC2046
  $(pin "$CLIENT_CPUS") "$@" >"$work/files-client.log" 2>&1 || status=$?
  end=$(date +%s.%N)
  if [ "$status" -ne 0 ]; then
    log "$name failed (exit status $status): $(tail -n 3 "$work/files-client.log")"
    errors=1
  else
    got=$(files_sha256 "$check" 2>/dev/null || true)
    if [ "$got" != "$want" ]; then
      log "$name: SHA-256 of $check is '$got', the source's is $want"
      errors=1
    fi
  fi
  secs=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.3f", b - a }')
  mb=$(awk -v n="$bytes" -v s="$secs" 'BEGIN { printf "%.1f", (s > 0 ? n / s / 1e6 : 0) }')
  [ "$errors" -eq 0 ] || failed_runs=$((failed_runs + 1))
  log "$name: $bytes bytes in $secs s = $mb MB/s, errors $errors"
  printf '{"scenario":"%s","name":"%s","target":"%s","size":%s,"bytes":%s,"conns":1,"seconds":%s,"mb_per_s":%s,"errors":%s}\n' \
    "$scenario" "$name" "$target" "$bytes" "$bytes" "$secs" "$mb" "$errors" >>"$results"
}

# ---- report -------------------------------------------------------------------------------

machine_line() {
  local cpu
  cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
  echo "$(nproc) CPUs (${cpu:-unknown CPU}), $(uname -sr), $(grep -m1 MemTotal /proc/meminfo | awk '{printf "%.0f GiB RAM", $2/1048576}')"
}

report() {
  local commit stamp
  commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo "uncommitted")
  stamp=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  echo "## coserve benchmark, $stamp, commit $commit"
  echo
  echo "Settings: ping-pong ${CONNS} conns x ${SIZE} B for ${DURATION} s (+${WARMUP} s warm-up);" \
    "bulk ${BULK_BYTES} over ${BULK_CONNS} conns; idle ${IDLE_CONNS} conns held ${IDLE_HOLD} s;" \
    "chat ${CHAT_MEMBERS} members, ${CHAT_SENDERS} senders at ${CHAT_RATE} msgs/s; command ${COMMAND_RUNS} runs;" \
    "idle WebSocket ${WS_IDLE_CONNS} conns;" \
    "ping-pongs run ${REPEAT} times (targets: medians); coserve workers ${WORKERS:-auto};" \
    "generator threads ${THREADS}${SERVER_CPUS:+; servers on CPUs $SERVER_CPUS}${CLIENT_CPUS:+; generator on CPUs $CLIENT_CPUS}."
  echo
  local strict=()
  [ "${BENCH_STRICT:-0}" = 1 ] && strict=(--strict)
  "$BIN_DIR/coserve-bench" table --results "$results" --machine "$(machine_line)" "${checks[@]}" "${strict[@]}"
}

main() {
  build
  check_binaries
  start_coserve
  start_epoll
  local s
  for s in $SCENARIOS; do
    declare -F "scenario_$s" >/dev/null || die "unknown scenario $s"
    "scenario_$s"
  done

  mkdir -p "$OUT_DIR"
  local stamp status=0
  stamp=$(date +%Y%m%d-%H%M%S)
  cp "$results" "$OUT_DIR/results-$stamp.jsonl"
  echo
  report | tee "$OUT_DIR/report-$stamp.md" || status=$?
  log "results kept in $OUT_DIR/results-$stamp.jsonl and report-$stamp.md"
  [ "$failed_runs" -eq 0 ] || die "$failed_runs run(s) reported errors (see above)"
  return "$status"
}

main "$@"
