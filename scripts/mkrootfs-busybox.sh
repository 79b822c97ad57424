#!/usr/bin/env bash
# Writes a busybox root filesystem tarball, made offline from Debian's busybox-static, to $1.
#   scripts/mkrootfs-busybox.sh /tmp/busybox.tar
set -euo pipefail
out=${1:?usage: mkrootfs-busybox.sh OUTPUT.tar}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
mkdir -p "$dir"/{bin,etc,proc,sys,dev,tmp,root,var/www,home}
chmod 1777 "$dir/tmp"
cp /bin/busybox "$dir/bin/busybox"
for applet in $(/bin/busybox --list); do
  [ "$applet" = busybox ] || ln -s busybox "$dir/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n' >"$dir/etc/passwd"
printf 'root:x:0:\ntty:x:5:\nnogroup:x:65534:\n' >"$dir/etc/group"
tar --numeric-owner --owner=0 --group=0 -C "$dir" -cf "$out" .
