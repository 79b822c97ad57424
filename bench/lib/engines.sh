# Shared by bench/*.sh: start a private Berth daemon and, when available, Debian's reference
# dockerd, each with busybox loaded. Source it, then call start_berth / start_docker.
# Cleanup is registered with `trap bench_cleanup EXIT` by the sourcing script.

# The engines are chosen with DOCKER_HOST below; a BERTH_HOST from the caller would win.
unset BERTH_HOST
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
bench_dir=$(mktemp -d /var/tmp/berth-bench.XXXXXX)
berth_pid=
started_docker=

bench_cleanup() {
  if [ -n "$berth_pid" ]; then
    # Containers left running by a benchmark are stopped through the daemon first.
    DOCKER_HOST="unix://$bench_dir/b.sock" "$berth" rm -f $(DOCKER_HOST="unix://$bench_dir/b.sock" "$berth" ps -aq 2>/dev/null) >/dev/null 2>&1 || true
    kill "$berth_pid" 2>/dev/null && wait "$berth_pid" 2>/dev/null || true
    # The daemon keeps its default bridge and rules across restarts, as dockerd keeps docker0;
    # the benchmark's instance ("bn") goes with the benchmark.
    ip link del berth-bn 2>/dev/null || true
    nft delete table ip berth-bn 2>/dev/null || true
    nft delete table ip6 berth-bn 2>/dev/null || true
  fi
  if [ -n "${podman:-}" ]; then
    $podman rm -af -t 0 >/dev/null 2>&1 || true
  fi
  if [ -n "$started_docker" ]; then
    DOCKER_HOST="$docker_host" docker rm -f $(DOCKER_HOST="$docker_host" docker ps -aq) >/dev/null 2>&1 || true
    /work/shared/acceptance/reference/stop-dockerd.sh >/dev/null 2>&1 || true
    # Gone before the next benchmark starts it again.
    local ref=${REF_DIR:-/var/tmp/peer/ref}
    for _ in $(seq 100); do
      [ -f "$ref/dockerd.pid" ] && kill -0 "$(cat "$ref/dockerd.pid")" 2>/dev/null || break
      sleep 0.1
    done
  fi
  # Whatever is still mounted below the bench dir (rootfs, volumes, pooled netns files of a
  # daemon that did not shut down cleanly), deepest first.
  awk -v d="$bench_dir/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r |
    while read -r m; do umount -l "$m" 2>/dev/null || true; done
  rm -rf "$bench_dir"
}

# start_berth BINARY: a daemon on $bench_dir/b.sock with busybox:latest imported; extra daemon
# flags from $BERTH_DAEMON_ARGS (e.g. --cgroup-favordynmods).
start_berth() {
  berth=$(realpath "$1")
  echo '{}' >"$bench_dir/daemon.json"
  "$berth" daemon -H "unix://$bench_dir/b.sock" --data-root "$bench_dir/data" \
    --exec-root "$bench_dir/run" --config-file "$bench_dir/daemon.json" \
    --network-instance bn ${BERTH_DAEMON_ARGS:-} >"$bench_dir/daemon.log" 2>&1 &
  berth_pid=$!
  for _ in $(seq 200); do [ -S "$bench_dir/b.sock" ] && break; sleep 0.05; done
  [ -S "$bench_dir/b.sock" ] || { echo "berth daemon did not start:" >&2; cat "$bench_dir/daemon.log" >&2; exit 1; }
  berth_host="unix://$bench_dir/b.sock"
  [ -f "$bench_dir/busybox.tar" ] || "$here/scripts/mkrootfs-busybox.sh" "$bench_dir/busybox.tar" >/dev/null
  DOCKER_HOST=$berth_host "$berth" import "$bench_dir/busybox.tar" busybox:latest >/dev/null
}

# start_docker: Debian's dockerd on its private socket (reused if already running), with the
# same busybox image. Sets docker_host, or leaves it empty when there is no engine.
start_docker() {
  docker_host=
  local starter=/work/shared/acceptance/reference/start-dockerd.sh
  if [ ! -x /usr/sbin/dockerd ] || [ ! -x "$starter" ]; then
    echo "# docker: no Debian dockerd here, skipped" >&2
    return
  fi
  local out
  out=$("$starter" 2>&1) || { echo "# docker: did not start: $out" >&2; return; }
  case "$out" in *"already running"*) ;; *) started_docker=1 ;; esac
  docker_host="unix://${REF_DIR:-/var/tmp/peer/ref}/docker.sock"
  [ -f "$bench_dir/busybox.tar" ] || "$here/scripts/mkrootfs-busybox.sh" "$bench_dir/busybox.tar" >/dev/null
  DOCKER_HOST=$docker_host docker import "$bench_dir/busybox.tar" busybox:latest >/dev/null
}

# mean_ms JSON: a hyperfine --export-json file's first mean, in milliseconds.
mean_ms() { jq -r '.results[0].mean * 1000 | . * 10 | round / 10' "$1"; }

# start_podman: podman with private storage under the bench dir and busybox imported. Sets
# `podman` to the command line (empty when podman is missing or cannot run here). Uses runc
# (Debian's crun refuses this host's hybrid cgroup layout) and cgroupfs; containers must be run
# with "${podman_run_args[@]}" (nofile and nproc limits root here can set: it cannot raise them).
start_podman() {
  podman=
  command -v podman >/dev/null || { echo "# podman: not installed, skipped" >&2; return; }
  local root="$bench_dir/podman"
  local cmd="podman --root $root/root --runroot $root/run --runtime runc --cgroup-manager cgroupfs --events-backend file"
  [ -f "$bench_dir/busybox.tar" ] || "$here/scripts/mkrootfs-busybox.sh" "$bench_dir/busybox.tar" >/dev/null
  $cmd import "$bench_dir/busybox.tar" busybox:latest >/dev/null 2>&1 ||
    { echo "# podman: cannot import the image, skipped" >&2; return; }
  podman=$cmd
  podman_run_args=(--ulimit "nofile=$(ulimit -n):$(ulimit -Hn)" --ulimit nproc=4096:4096)
}
