#!/usr/bin/env bash
# Installs the Debian packages Berth's build, tests and benchmarks need. Idempotent.
set -euo pipefail

packages=(
  libseccomp-dev pkg-config   # libseccomp for the runtime's seccomp filters
  busybox-static              # the rootfs of every test image (no registry access here)
  runc crun skopeo hyperfine  # peers the tests and benchmarks compare against
  docker-registry             # CNCF distribution, the registry interop test's peer
  jq iproute2 util-linux openssl
  nftables iptables           # NAT, port publishing and isolation for bridge networks
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
