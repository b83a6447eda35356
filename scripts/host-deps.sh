#!/bin/bash
# Install the Debian packages a make target needs on the machine that runs it, when they are
# missing: as root on Debian/Ubuntu with apt-get it installs them; elsewhere it prints, in one
# line, what to install and exits 1. Package scripts never start services here (a policy-rc.d is
# in place during the install), so the machine does not run its own PostgreSQL or Prometheus.
#   scripts/host-deps.sh venv | test | bench
set -euo pipefail

# what each target needs: "check:package", the check being an absolute path that must exist, a
# command on PATH, or a shell command line (with a space) that must succeed
case "${1:?usage: $0 venv|test|bench}" in
  venv)  needs=("python3:python3" "python3 -c 'import ensurepip':python3-venv") ;;
  test)  needs=("/usr/lib/postgresql/15/bin/initdb:postgresql-15" "promtool:prometheus"
                "ruby:ruby" "systemd-analyze:systemd") ;;
  bench) needs=("wrk:wrk") ;;
  *) echo "usage: $0 venv|test|bench" >&2; exit 2 ;;
esac

missing=()
for need in "${needs[@]}"; do
  what="${need%%:*}" package="${need##*:}"
  if [[ "$what" == /* ]]; then [ -e "$what" ] && continue
  elif [[ "$what" == *" "* ]]; then bash -c "$what" >/dev/null 2>&1 && continue
  else command -v "$what" >/dev/null 2>&1 && continue
  fi
  missing+=("$package")
done
[ "${#missing[@]}" = 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1 || [ "$(id -u)" != 0 ]; then
  echo "missing for 'make $1': install the packages ${missing[*]} (Debian names) and run it again" >&2
  exit 1
fi
echo "installing for 'make $1': ${missing[*]}"
policy=/usr/sbin/policy-rc.d
[ -e "$policy" ] || { printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod 755 "$policy" && trap 'rm -f "$policy"' EXIT; }
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
