#!/bin/bash
# The stack scenario's converge and idempotence on the lab, with one converge fewer when it can:
# on a lab that `make lab` has already converged, a converge that changes nothing on any host IS
# the second converge of the idempotence rule, so it is not run a third time. When the converge
# did change something (a fresh lab, or a change since `make lab`), Molecule's idempotence step
# runs it again and fails on any change, as `molecule test` would.
set -euo pipefail
log="$(mktemp /tmp/kv-stack-converge.XXXXXX.log)"
trap 'rm -f "$log"' EXIT

molecule create -s stack
molecule converge -s stack 2>&1 | tee "$log"
recap="$(grep -E ' : ok=[0-9]+ +changed=[0-9]+' "$log" || true)"
if [ -z "$recap" ]; then
  echo "stack-converge: no PLAY RECAP in the converge's output" >&2
  exit 1
fi
if grep -Eq 'changed=[1-9]|failed=[1-9]|unreachable=[1-9]' <<<"$recap"; then
  echo "stack-converge: the converge changed something: running the idempotence step"
  molecule idempotence -s stack
else
  echo "stack-converge: the lab was already converged; this converge reported changed=0 on" \
       "every host, which is the idempotence check"
fi
