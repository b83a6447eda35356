#!/bin/bash
# `ansible-playbook --check --diff site.yml` on the converged lab, over SSH (inventory/lab-ssh, the
# path real users take): every role must run to the end in check mode and report no change on a
# host it has converged. Fails on any changed, failed or unreachable host; prints its duration.
#   scripts/stack-check-mode.sh [INVENTORY]      (default: inventory/lab-ssh)
set -euo pipefail
inventory="${1:-inventory/lab-ssh}"
log="$(mktemp /tmp/kv-stack-check.XXXXXX.log)"
trap 'rm -f "$log"' EXIT

start=$SECONDS
rc=0
ansible-playbook -i "$inventory" --vault-password-file inventory/lab/vault-password.txt \
  --check --diff site.yml 2>&1 | tee "$log" || rc=$?
echo "stack-check-mode: site.yml --check --diff took $((SECONDS - start)) s (exit $rc)"
recap="$(grep -E ' : ok=[0-9]+ +changed=[0-9]+' "$log" || true)"
if [ -z "$recap" ]; then
  echo "stack-check-mode: no PLAY RECAP in the check run's output" >&2
  exit 1
fi
hosts="$(wc -l <<<"$recap")"
if [ "$rc" -ne 0 ] || grep -Eq 'changed=[1-9]|failed=[1-9]|unreachable=[1-9]' <<<"$recap"; then
  echo "stack-check-mode: check mode reported a change or a failure on a converged lab:" >&2
  grep -E 'changed=[1-9]|failed=[1-9]|unreachable=[1-9]' <<<"$recap" >&2 || true
  exit 1
fi
echo "stack-check-mode: changed=0 on all $hosts hosts"
