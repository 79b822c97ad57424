#!/usr/bin/env bash
# Memory: the daemon idle and after use, and the per-container monitor, against Debian's
# dockerd + containerd and containerd-shim-runc-v2, and podman's conmon, measured in the same run.
#   bench/memory.sh [BERTH_BINARY]   (default target/release/berth; CONTAINERS=20, QUIET=35)
set -euo pipefail
source "$(dirname "$0")/lib/engines.sh"
trap bench_cleanup EXIT
n=${CONTAINERS:-20}

rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
pss_kb() { awk '/^Pss:/ { print $2 }' "/proc/$1/smaps_rollup" 2>/dev/null || echo 0; }
# USS: the pages only this process maps, what each more container really costs. RSS also counts
# shared library and binary text (with the kernel's fault-around, 64 KiB per page touched).
uss_kb() { awk '/^Private_(Clean|Dirty):/ { s += $2 } END { print s + 0 }' "/proc/$1/smaps_rollup" 2>/dev/null || echo 0; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f MiB", k / 1024 }'; }
# avg_of FUNC PIDS...: the mean of FUNC over the pids, in KiB.
avg_of() {
  local f=$1 total=0 count=0 pid
  shift
  for pid in "$@"; do total=$((total + $($f "$pid"))); count=$((count + 1)); done
  [ "$count" -gt 0 ] && echo $((total / count)) || echo 0
}

start_berth "${1:-$here/target/release/berth}"
export DOCKER_HOST=$berth_host
sleep 1
b_idle=$(rss_kb "$berth_pid")
for _ in $(seq "$n"); do "$berth" run -d --network none busybox sleep 600 >/dev/null; done
sleep 1
monitors=$(for f in "$bench_dir"/run/containers/*/monitor.pid; do echo "$(cat "$f")"; done)
# shellcheck disable=SC2086
b_mon_rss=$(avg_of rss_kb $monitors)
# shellcheck disable=SC2086
b_mon_pss=$(avg_of pss_kb $monitors)
# shellcheck disable=SC2086
b_mon_uss=$(avg_of uss_kb $monitors)
b_busy=$(rss_kb "$berth_pid")
"$berth" rm -f $("$berth" ps -aq) >/dev/null
for _ in $(seq 50); do "$berth" run --rm --network none busybox true; done
sleep 1
b_after=$(rss_kb "$berth_pid")
# A quiet spell: the daemon gives back what its requests touched after 30 s without any.
sleep "${QUIET:-35}"
b_quiet=$(rss_kb "$berth_pid")
b_quiet_pss=$(pss_kb "$berth_pid")

start_docker
d_idle=- d_busy=- d_shim_rss=0 d_shim_pss=0 d_shim_uss=0
if [ -n "$docker_host" ]; then
  ref=${REF_DIR:-/var/tmp/peer/ref}
  dockerd_pid=$(cat "$ref/dockerd.pid")
  containerd_pid=$(pgrep -P "$dockerd_pid" containerd | head -1 || true)
  sleep 1
  engine_rss() { echo $(( $(rss_kb "$dockerd_pid") + $([ -n "$containerd_pid" ] && rss_kb "$containerd_pid" || echo 0) )); }
  d_idle=$(mib "$(engine_rss)")
  for _ in $(seq "$n"); do DOCKER_HOST=$docker_host docker run -d --network none busybox sleep 600 >/dev/null; done
  sleep 1
  shims=$(pgrep -f "containerd-shim-runc-v2 -namespace moby" || true)
  # shellcheck disable=SC2086
  d_shim_rss=$(avg_of rss_kb $shims)
  # shellcheck disable=SC2086
  d_shim_pss=$(avg_of pss_kb $shims)
  # shellcheck disable=SC2086
  d_shim_uss=$(avg_of uss_kb $shims)
  d_busy=$(mib "$(engine_rss)")
fi

# podman's conmon, the other per-container monitor.
p_rss=0 p_pss=0 p_uss=0
start_podman
if [ -n "$podman" ]; then
  for _ in $(seq "$n"); do
    $podman run -d --network none "${podman_run_args[@]}" busybox sleep 600 >/dev/null
  done
  sleep 1
  conmons=$(pgrep -f "conmon .*$bench_dir/podman" || true)
  # shellcheck disable=SC2086
  p_rss=$(avg_of rss_kb $conmons)
  # shellcheck disable=SC2086
  p_pss=$(avg_of pss_kb $conmons)
  # shellcheck disable=SC2086
  p_uss=$(avg_of uss_kb $conmons)
  $podman rm -af -t 0 >/dev/null 2>&1 || true
fi
or_dash() { [ "$1" = 0 ] && echo - || mib "$1"; }

printf '%-46s %16s %16s %16s\n' "" "berth" "docker" "podman"
printf '%-46s %16s %16s %16s\n' "engine idle RSS (dockerd + containerd)" "$(mib "$b_idle")" "$d_idle" -
printf '%-46s %16s %16s %16s\n' "engine RSS with $n containers" "$(mib "$b_busy")" "$d_busy" -
printf '%-46s %16s %16s %16s\n' "daemon RSS after 50 more run --rm" "$(mib "$b_after")" - -
printf '%-46s %16s %16s %16s\n' "daemon RSS / PSS after ${QUIET:-35} s quiet" "$(mib "$b_quiet") / $(mib "$b_quiet_pss")" - -
printf '%-46s %16s %16s %16s\n' "per-container monitor RSS (monitor/shim/conmon)" "$(mib "$b_mon_rss")" "$(or_dash "$d_shim_rss")" "$(or_dash "$p_rss")"
printf '%-46s %16s %16s %16s\n' "per-container monitor PSS" "$(mib "$b_mon_pss")" "$(or_dash "$d_shim_pss")" "$(or_dash "$p_pss")"
printf '%-46s %16s %16s %16s\n' "per-container monitor USS (private)" "$(mib "$b_mon_uss")" "$(or_dash "$d_shim_uss")" "$(or_dash "$p_uss")"
