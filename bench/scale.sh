#!/usr/bin/env bash
# Many containers on one host: N × `run -d busybox sleep` (default 1000) through Berth's daemon,
# then the cost per container (daemon RSS growth, monitors' USS, host memory used: meaningful on
# an otherwise quiet host only), how long `ps` takes with them all running, and how long
# removing them all takes.
#   bench/scale.sh [BERTH_BINARY]   (N=1000; DOCKER=1 also runs Debian's dockerd, slow)
set -euo pipefail
source "$(dirname "$0")/lib/engines.sh"
trap bench_cleanup EXIT
n=${N:-1000}

rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
uss_kb() { awk '/^Private_(Clean|Dirty):/ { s += $2 } END { print s + 0 }' "/proc/$1/smaps_rollup" 2>/dev/null || echo 0; }
used_kb() { awk '/^MemTotal:/ { t = $2 } /^MemAvailable:/ { a = $2 } END { print t - a }' /proc/meminfo; }
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
ms() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f", (b - a) * 1000 }'; }

# scale ENGINE HOST CLI DAEMON_PIDS...: runs the containers and prints one result line.
scale() {
  local engine=$1 host=$2 cli=$3
  shift 3
  local pids=("$@") d0=0 d1=0 p t0 t1 t2 t3 t4 used0 used1 ids
  export DOCKER_HOST=$host
  sleep 1
  for p in "${pids[@]}"; do d0=$((d0 + $(rss_kb "$p"))); done
  used0=$(used_kb)
  t0=$(now)
  for _ in $(seq "$n"); do "$cli" run -d --network none busybox sleep 3600 >/dev/null; done
  t1=$(now)
  sleep 2
  for p in "${pids[@]}"; do d1=$((d1 + $(rss_kb "$p"))); done
  used1=$(used_kb)
  t2=$(now)
  "$cli" ps -q | wc -l | grep -qx "$n" || echo "# $engine: not all $n containers run" >&2
  t3=$(now)
  ids=$("$cli" ps -aq)
  # shellcheck disable=SC2086
  "$cli" rm -f $ids >/dev/null
  t4=$(now)
  printf '%-8s %7s s %9s ms %9s KiB %9s KiB %8s s\n' "$engine" "$(secs "$t0" "$t1")" \
    "$(ms "$t2" "$t3")" $(((d1 - d0) / n)) $(((used1 - used0) / n)) "$(secs "$t3" "$t4")"
}

start_berth "${1:-$here/target/release/berth}"
printf '# %s containers: busybox sleep, --network none\n' "$n"
printf '%-8s %9s %12s %13s %13s %10s\n' engine "run -d" "ps (all)" "daemon/ctr" "host mem/ctr" "rm -f all"
# The monitors' private memory, sampled while they run.
export DOCKER_HOST=$berth_host
(
  sleep 0.5
  while [ "$("$berth" ps -q | wc -l)" -lt "$n" ]; do sleep 1; done
  total=0 count=0
  for f in "$bench_dir"/run/containers/*/monitor.pid; do
    pid=$(cat "$f" 2>/dev/null) || continue
    total=$((total + $(uss_kb "$pid"))); count=$((count + 1))
  done
  [ "$count" -gt 0 ] && echo "# berth monitors: $count, USS $((total / count)) KiB each" >&2
) &
sampler=$!
scale berth "$berth_host" "$berth" "$berth_pid"
wait "$sampler" 2>/dev/null || true
if [ "${DOCKER:-0}" = 1 ]; then
  start_docker
  if [ -n "$docker_host" ]; then
    ref=${REF_DIR:-/var/tmp/peer/ref}
    dockerd_pid=$(cat "$ref/dockerd.pid")
    containerd_pid=$(pgrep -P "$dockerd_pid" containerd | head -1 || true)
    scale docker "$docker_host" docker "$dockerd_pid" ${containerd_pid:+"$containerd_pid"}
  fi
fi
