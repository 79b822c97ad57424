#!/usr/bin/env bash
# Container start-to-exit latency: `berth runtime run` against `runc run` (and `crun run`) on
# the same busybox `true` bundle in the same hyperfine session, then the berth/runc ratio.
# Also measures the RSS and PSS of `berth monitor` holding a running container.
#
#   bench/runtime.sh [runs]          (default 100 runs each)
#
# crun: Debian's crun refuses this host's hybrid cgroup layout unless /sys/fs/cgroup/unified
# is unmounted, so it runs inside `unshare -m` (which adds a fork+exec of its own to its time).
set -euo pipefail

RUNS=${1:-100}
REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=${BENCH_DIR:-/var/tmp/berth-bench-runtime}
BERTH=${BERTH:-$REPO/target/release/berth}
rm -rf "$WORK" && mkdir -p "$WORK"
cleanup() {
  [ -n "${MON_ID:-}" ] && "$BERTH" runtime --root "$WORK/state" delete --force "$MON_ID" 2>/dev/null || true
  for d in /sys/fs/cgroup/*/berth-bench/* /sys/fs/cgroup/*/berth-bench; do [ -d "$d" ] && rmdir "$d" 2>/dev/null || true; done
  [ -n "${KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT

if [ -z "${NO_BUILD:-}" ]; then
  cargo build --release -q -p berth --manifest-path "$REPO/Cargo.toml"
fi

echo "== busybox bundle"
B="$WORK/bundle"
mkdir -p "$B/rootfs/bin" "$B/rootfs"/{proc,sys,dev,etc,tmp}
cp /bin/busybox "$B/rootfs/bin/busybox"
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$B/rootfs/bin/$a"; done
(cd "$B" && runc spec)
jq '.process.terminal = false | .process.args = ["true"] | .linux.cgroupsPath = "/berth-bench/c"' \
  "$B/config.json" >"$B/config.json.new" && mv "$B/config.json.new" "$B/config.json"

cmds=(
  -n berth "$BERTH runtime --root $WORK/state run --bundle $B bench-berth"
  -n runc "runc --root $WORK/runc run --bundle $B bench-runc"
)
if unshare -m sh -c "umount /sys/fs/cgroup/unified && crun --root $WORK/crun run --bundle $B bench-crun" >/dev/null 2>&1; then
  cmds+=(-n crun "unshare -m sh -c 'umount /sys/fs/cgroup/unified && crun --root $WORK/crun run --bundle $B bench-crun'")
else
  echo "(crun does not run here; skipped)"
fi

echo "== hyperfine: $RUNS runs each"
hyperfine -N --warmup 5 --runs "$RUNS" --export-json "$WORK/result.json" "${cmds[@]}"
jq -r '(.results | map({key: .command, value: .mean}) | from_entries) as $m
  | "berth/runc mean ratio: \(($m.berth / $m.runc * 1000 | round) / 1000)  (goal <= 0.8)"' "$WORK/result.json"

echo "== monitor memory (a running container)"
jq '.process.args = ["sleep", "600"] | .linux.cgroupsPath = "/berth-bench/mon"' "$B/config.json" >"$WORK/mon-config.json"
MB="$WORK/mon-bundle"
mkdir -p "$MB" && cp "$WORK/mon-config.json" "$MB/config.json" && ln -s "$B/rootfs" "$MB/rootfs"
jq '.root.path = "'"$B"'/rootfs"' "$MB/config.json" >"$MB/c" && mv "$MB/c" "$MB/config.json"
MON_ID=bench-mon
cat >"$WORK/monitor.json" <<EOF
{"id":"$MON_ID","runtime_root":"$WORK/state","mode":{"kind":"container","bundle":"$MB"},
 "log":{"path":"$WORK/mon/$MON_ID-json.log"},"exit_file":"$WORK/mon/exit.json",
 "attach_socket":"$WORK/mon/attach.sock","monitor_pid_file":"$WORK/mon/monitor.pid",
 "container_pid_file":"$WORK/mon/container.pid"}
EOF
mkdir -p "$WORK/mon"
"$BERTH" monitor --config "$WORK/monitor.json"
for _ in $(seq 100); do [ -s "$WORK/mon/container.pid" ] && break; sleep 0.05; done
MPID=$(cat "$WORK/mon/monitor.pid")
sleep 0.5
rss=$(ps -o rss= -p "$MPID" | tr -d ' ')
pss=$(awk '/^Pss:/ {print $2}' "/proc/$MPID/smaps_rollup")
echo "berth monitor pid $MPID: RSS ${rss} KiB, PSS ${pss} KiB   (conmon: 2.0 MB RSS / 351 KB PSS; goal RSS <= 1 MB)"
