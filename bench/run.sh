#!/usr/bin/env bash
# Container start latency through the daemon, Berth against Debian's docker engine (and podman,
# when installed), same run:
#   1. `run --rm busybox true` with --network none, with the default bridge and with a published
#      port `-p 127.0.0.1:18080:80` (hyperfine);
#   2. 100 × `run -d busybox sleep 600`, then removing them all.
#   bench/run.sh [BERTH_BINARY]   (default target/release/berth; RUNS=30, DETACHED=100)
#
# RCU_EXPEDITED=1 runs both engines with /sys/kernel/rcu_expedited set (restored afterwards).
# BERTH_DAEMON_ARGS=--cgroup-favordynmods lets Berth's daemon set the cgroup2 favordynmods
# option, which then applies to every engine on the host until reboot (see ARCHITECTURE.md).
# On a cgroup-v1 host the first task migration into a cgroup after a quiet spell waits for an
# RCU grace period (~20 ms on a 2-vCPU VM), and network namespace teardown holds the RTNL lock
# across grace periods; expedited grace periods shorten both, for every engine alike.
# Berth's bridge runs do no link work on the start or removal path: containers take a network
# namespace made ahead of time (veth up, address and routes set, plugged into the bridge; see
# crates/berth-network/src/pool.rs), and a removed container's namespace and veth are destroyed
# by the kernel afterwards. What the bridge adds is the endpoint record, /etc files and, with -p,
# the nftables update.
set -euo pipefail
source "$(dirname "$0")/lib/engines.sh"
rcu_saved=
restore_rcu() { [ -n "$rcu_saved" ] && echo "$rcu_saved" >/sys/kernel/rcu_expedited || true; }
trap 'restore_rcu; bench_cleanup' EXIT
if [ "${RCU_EXPEDITED:-0}" = 1 ]; then
  rcu_saved=$(cat /sys/kernel/rcu_expedited)
  echo 1 >/sys/kernel/rcu_expedited
  echo "# /sys/kernel/rcu_expedited=1 for this run"
fi
runs=${RUNS:-30}
detached=${DETACHED:-100}

start_berth "${1:-$here/target/release/berth}"
start_docker

time_run() { # engine-host cli network [run flags] -> prints mean ms
  local host=$1 cli=$2 net=$3 extra=${4:-} out="$bench_dir/h-$RANDOM.json"
  DOCKER_HOST=$host hyperfine -N --warmup 3 --runs "$runs" --export-json "$out" \
    "$cli run --rm --network $net $extra busybox true" >/dev/null
  mean_ms "$out"
}

time_detached() { # host cli -> seconds for $detached × run -d
  local host=$1 cli=$2 start end
  start=$(date +%s.%N)
  for i in $(seq "$detached"); do
    DOCKER_HOST=$host $cli run -d --network none busybox sleep 600 >/dev/null
  done
  end=$(date +%s.%N)
  awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f", b - a }'
  DOCKER_HOST=$host $cli rm -f $(DOCKER_HOST=$host $cli ps -aq) >/dev/null
}

b_none=$(time_run "$berth_host" "$berth" none)
b_bridge=$(time_run "$berth_host" "$berth" bridge)
b_port=$(time_run "$berth_host" "$berth" bridge "-p 127.0.0.1:18080:80")
b_det=$(time_detached "$berth_host" "$berth")
printf '%-44s %10s %10s %8s\n' "benchmark" "berth" "docker" "ratio"
if [ -n "$docker_host" ]; then
  d_none=$(time_run "$docker_host" docker none)
  d_bridge=$(time_run "$docker_host" docker bridge)
  d_port=$(time_run "$docker_host" docker bridge "-p 127.0.0.1:18080:80")
  d_det=$(time_detached "$docker_host" docker)
  ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
  printf '%-44s %8s ms %8s ms %7sx\n' "run --rm --network none busybox true" "$b_none" "$d_none" "$(ratio "$b_none" "$d_none")"
  printf '%-44s %8s ms %8s ms %7sx\n' "run --rm (default bridge) busybox true" "$b_bridge" "$d_bridge" "$(ratio "$b_bridge" "$d_bridge")"
  printf '%-44s %8s ms %8s ms %7sx\n' "run --rm -p 127.0.0.1:18080:80 busybox true" "$b_port" "$d_port" "$(ratio "$b_port" "$d_port")"
  printf '%-44s %9s s %9s s %7sx\n' "$detached x run -d busybox sleep" "$b_det" "$d_det" "$(ratio "$b_det" "$d_det")"
else
  printf '%-44s %8s ms\n' "run --rm --network none busybox true" "$b_none"
  printf '%-44s %8s ms\n' "run --rm (default bridge) busybox true" "$b_bridge"
  printf '%-44s %8s ms\n' "run --rm -p 127.0.0.1:18080:80 busybox true" "$b_port"
  printf '%-44s %9s s\n' "$detached x run -d busybox sleep" "$b_det"
fi
start_podman
if [ -n "$podman" ]; then
  out="$bench_dir/h-podman.json"
  hyperfine -N --warmup 3 --runs "$runs" --export-json "$out" \
    "$podman run --rm --network none ${podman_run_args[*]} busybox true" >/dev/null
  p_none=$(mean_ms "$out")
  printf '%-44s %8s ms (podman %s ms, %sx)\n' "run --rm --network none busybox true" "$b_none" \
    "$p_none" "$(awk -v a="$b_none" -v b="$p_none" 'BEGIN { printf "%.3f", a / b }')"
fi
diff_ms() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", a - b }'; }
echo "bridge cost: berth +$(diff_ms "$b_bridge" "$b_none") ms${docker_host:+, docker +$(diff_ms "${d_bridge:-0}" "${d_none:-0}") ms}"
echo "published port cost: berth +$(diff_ms "$b_port" "$b_bridge") ms${docker_host:+, docker +$(diff_ms "${d_port:-0}" "${d_bridge:-0}") ms}"
