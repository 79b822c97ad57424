#!/usr/bin/env bash
# Load + unpack a ~200 MB, 4-layer image with Berth, against skopeo (and docker, if an engine
# is reachable) in the same run, and print the ratios.
#
# The image is generated offline: each layer holds random (incompressible) and text
# (compressible) files. skopeo turns the OCI layout into the docker-archive everyone loads.
#
#   bench/image-load.sh [runs]        (default 5 runs each, via hyperfine)
set -euo pipefail

RUNS=${1:-5}
REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=${BENCH_DIR:-/var/tmp/berth-bench-image}
rm -rf "$WORK" && mkdir -p "$WORK"
trap '[ -n "${KEEP:-}" ] || rm -rf "$WORK"' EXIT

cargo build --release -q -p berth-image --bin berth-image-tool --manifest-path "$REPO/Cargo.toml"
TOOL="$REPO/target/release/berth-image-tool"

echo "== generating a 4-layer ~200 MB image"
layout="$WORK/layout"
mkdir -p "$layout/blobs/sha256"
diff_ids=() layer_descs=()
for i in 1 2 3 4; do
  d="$WORK/layer$i"
  mkdir -p "$d/data$i/rand" "$d/data$i/text"
  for f in 1 2 3 4 5; do head -c $((5 << 20)) /dev/urandom >"$d/data$i/rand/r$f"; done
  for f in $(seq 1 50); do (yes "layer $i file $f berth image bench line" || true) | head -c $((500 << 10)) >"$d/data$i/text/t$f"; done
  tar -C "$d" -cf "$WORK/layer$i.tar" .
  gzip -1 -c "$WORK/layer$i.tar" >"$WORK/layer$i.tar.gz"
  diff_ids+=("\"sha256:$(sha256sum "$WORK/layer$i.tar" | cut -d' ' -f1)\"")
  h=$(sha256sum "$WORK/layer$i.tar.gz" | cut -d' ' -f1)
  mv "$WORK/layer$i.tar.gz" "$layout/blobs/sha256/$h"
  layer_descs+=("{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"sha256:$h\",\"size\":$(stat -c %s "$layout/blobs/sha256/$h")}")
  rm -rf "$d" "$WORK/layer$i.tar"
done
join() { local IFS=,; echo "$*"; }
config="{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{},\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[$(join "${diff_ids[@]}")]}}"
ch=$(printf '%s' "$config" | sha256sum | cut -d' ' -f1)
printf '%s' "$config" >"$layout/blobs/sha256/$ch"
manifest="{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"sha256:$ch\",\"size\":${#config}},\"layers\":[$(join "${layer_descs[@]}")]}"
mh=$(printf '%s' "$manifest" | sha256sum | cut -d' ' -f1)
printf '%s' "$manifest" >"$layout/blobs/sha256/$mh"
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%d,"annotations":{"org.opencontainers.image.ref.name":"latest"}}]}' "$mh" "${#manifest}" >"$layout/index.json"
echo '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"
archive="$WORK/image.tar"
skopeo --insecure-policy copy -q "oci:$layout:latest" "docker-archive:$archive:bench/image:latest"
rm -rf "$layout"
echo "docker-archive: $(du -h "$archive" | cut -f1), image ID sha256:$ch"

echo "== sanity: Berth loads it with the same ID"
"$TOOL" load "$WORK/check" "$archive"
"$TOOL" fsck "$WORK/check"
rm -rf "$WORK/check"

cmds=(
  -n berth-load --prepare "rm -rf $WORK/berth" "$TOOL load $WORK/berth $archive"
  -n skopeo-oci --prepare "rm -rf $WORK/skopeo" "skopeo --insecure-policy copy -q docker-archive:$archive oci:$WORK/skopeo:x"
  -n skopeo-dir --prepare "rm -rf $WORK/skopeo-dir" "skopeo --insecure-policy copy -q docker-archive:$archive dir:$WORK/skopeo-dir"
)
if docker info >/dev/null 2>&1; then
  cmds+=(-n docker-load --prepare "docker rmi -f bench/image:latest >/dev/null 2>&1 || true" "docker load -q -i $archive")
else
  echo "(no docker engine reachable: skipping docker load)"
fi
hyperfine --runs "$RUNS" --warmup 1 --export-json "$WORK/results.json" "${cmds[@]}"

echo "== container rootfs from the loaded image (overlay mount of 4 snapshots)"
"$TOOL" rootfs-cycle "$WORK/berth" bench/image:latest 50

echo "== ratios (mean time / berth-load mean time; >1 means Berth is faster)"
jq -r '.results as $r | ($r[] | select(.command=="berth-load") | .mean) as $b
       | $r[] | "\(.command): \(.mean*1000|floor) ms  ratio \((.mean/$b*100|floor)/100)"' "$WORK/results.json"
