#!/usr/bin/env bash
# Set up refunddesk on a fresh Debian/Ubuntu machine: a virtualenv in .venv with the service
# (and, with --test, everything the test suite needs: Dovecot, Chromium, swaks).
set -euo pipefail
cd "$(dirname "$0")/.."
want_test=0
[ "${1:-}" = "--test" ] && want_test=1

if [ "$want_test" = 1 ]; then
  missing=()
  command -v dovecot >/dev/null 2>&1 || missing+=(dovecot-imapd)
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  command -v swaks >/dev/null 2>&1 || missing+=(swaks)
  if [ "${#missing[@]}" -gt 0 ]; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
if [ "$want_test" = 1 ]; then
  .venv/bin/python -m pip install -q -e '.[test]'
else
  .venv/bin/python -m pip install -q -e .
fi
