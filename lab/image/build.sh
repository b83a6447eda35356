#!/bin/bash
# Build the lab's systemd host image unless an image built from this exact recipe already exists.
#   lab/image/build.sh [IMAGE_REPO]      (default: kvlab/debian)
# The tag is the Debian suite plus a hash of this directory, so the image is rebuilt only when the
# recipe changes. With a reachable registry the Dockerfile (FROM debian:bookworm) is used; without
# one the root file system is made with debootstrap and imported.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="${1:-kvlab/debian}"
suite="${KVLAB_SUITE:-bookworm}"
mirror="${KVLAB_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
recipe_hash="$(cd "$here" && cat build.sh Dockerfile setup-rootfs.sh packages-base.txt packages-cache.txt \
  | sha256sum | cut -c1-12)"
tag="$repo:$suite-$recipe_hash"

if docker image inspect "$tag" >/dev/null 2>&1; then
  echo "lab image $tag is up to date"
  docker tag "$tag" "$repo:$suite"
  exit 0
fi

pkgs() { grep -v '^#' "$here/$1" | tr '\n' ' '; }

if [ "${KVLAB_IMAGE_SOURCE:-auto}" != debootstrap ] && [ "$suite" = bookworm ] \
   && timeout 20 docker pull -q debian:bookworm >/dev/null 2>&1; then
  echo "building $tag from debian:bookworm (registry reachable)"
  docker build -q -t "$tag" "$here"
else
  echo "building $tag with debootstrap (no registry reachable)"
  command -v debootstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq debootstrap; }
  work="$(mktemp -d /var/tmp/kvlab-rootfs.XXXXXX)"
  trap 'rm -rf "$work"' EXIT
  debootstrap --variant=minbase --include="$(pkgs packages-base.txt | tr ' ' ',' | sed 's/,$//')" \
    "$suite" "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log"; exit 1; }
  cat > "$work/rootfs/etc/apt/sources.list" <<SOURCES
deb $mirror $suite main
deb $mirror $suite-updates main
deb http://deb.debian.org/debian-security $suite-security main
SOURCES
  sh "$here/setup-rootfs.sh" "$work/rootfs"
  cp /etc/resolv.conf "$work/rootfs/etc/resolv.conf"
  chroot "$work/rootfs" apt-get update -qq
  # shellcheck disable=SC2046
  DEBIAN_FRONTEND=noninteractive chroot "$work/rootfs" apt-get install -y -qq --download-only \
    $(pkgs packages-cache.txt) >/dev/null
  : > "$work/rootfs/etc/resolv.conf"
  tar -C "$work/rootfs" -c . | docker import \
    -c 'CMD ["/lib/systemd/systemd"]' \
    -m "kvlab host image ($suite, debootstrap)" - "$tag" >/dev/null
fi
docker tag "$tag" "$repo:$suite"
echo "built $tag"
