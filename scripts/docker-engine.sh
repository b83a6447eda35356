#!/bin/bash
# Make sure a Docker engine answers. On Debian/Ubuntu it installs docker.io when the engine is
# missing, and starts dockerd (through systemd when systemd runs the machine, in the background
# otherwise). Elsewhere it says what to do.
set -euo pipefail
log="${KVLAB_DOCKERD_LOG:-/var/log/kvlab-dockerd.log}"

if docker info >/dev/null 2>&1; then
  exit 0
fi

if ! command -v dockerd >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "docker engine missing: installing docker.io"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
  else
    echo "No Docker engine here. Install Docker Engine (https://docs.docker.com/engine/install/)" >&2
    echo "or Docker Desktop, start it, and run this again (as root or a member of 'docker')." >&2
    exit 1
  fi
fi

if [ -d /run/systemd/system ]; then
  systemctl start docker
else
  echo "starting dockerd in the background (log: $log)"
  setsid dockerd >"$log" 2>&1 < /dev/null &
fi
for _ in $(seq 60); do
  docker info >/dev/null 2>&1 && { echo "docker engine is up"; exit 0; }
  sleep 1
done
echo "dockerd did not answer within 60 s; see $log" >&2
exit 1
