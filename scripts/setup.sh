#!/usr/bin/env bash
# Set up refunddesk on a fresh Debian/Ubuntu machine: a virtualenv in .venv with the service
# (and, with --test, everything the test suite needs: Dovecot, Chromium with CJK fonts, swaks).
# It prints a few lines of its own; what apt and pip say goes to var/setup.log.
set -euo pipefail
cd "$(dirname "$0")/.."
want_test=0
[ "${1:-}" = "--test" ] && want_test=1

log=var/setup.log
mkdir -p var
: >"$log"
say() { echo "setup: $*"; }
# Runs a command with its output in the log; on failure shows the log's end, so no error is hidden.
quietly() {
  echo "+ $*" >>"$log"
  if ! "$@" >>"$log" 2>&1; then
    tail -n 25 "$log" >&2
    say "failed: $* (whole output in $log)" >&2
    exit 1
  fi
}

# Debian's chromium registers itself as x-www-browser and gnome-www-browser in its postinst,
# which makes it the machine's browser wherever it is the best of them. The tests need neither,
# so a registration that this install made is taken back.
browser_links=(x-www-browser gnome-www-browser)
chromium_registered() { update-alternatives --list "$1" 2>/dev/null | grep -qx /usr/bin/chromium; }

if [ "$want_test" = 1 ]; then
  missing=()
  command -v dovecot >/dev/null 2>&1 || missing+=(dovecot-imapd)
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  # The console's pages in Chinese are screenshotted; without a CJK font they render as boxes.
  dpkg-query -W -f='${Status}' fonts-noto-cjk 2>/dev/null | grep -q "ok installed" || missing+=(fonts-noto-cjk)
  command -v swaks >/dev/null 2>&1 || missing+=(swaks)
  if [ "${#missing[@]}" -gt 0 ]; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    already=()
    for link in "${browser_links[@]}"; do chromium_registered "$link" && already+=("$link"); done
    say "installing with apt: ${missing[*]}"
    quietly $SUDO apt-get update
    quietly $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
    for link in "${browser_links[@]}"; do
      if chromium_registered "$link" && [[ " ${already[*]-} " != *" $link "* ]]; then
        quietly $SUDO update-alternatives --remove "$link" /usr/bin/chromium
        say "kept the system's $link as it was (chromium's package had registered itself)"
      fi
    done
  fi
fi

if [ ! -x .venv/bin/python ]; then
  say "creating the virtualenv .venv"
  quietly python3 -m venv .venv
fi
quietly .venv/bin/python -m pip install --upgrade pip
if [ "$want_test" = 1 ]; then
  say "installing refunddesk (editable) and its test tools into .venv"
  quietly .venv/bin/python -m pip install -e '.[test]'
  next="scripts/lint.sh && .venv/bin/python -m pytest -q"
else
  say "installing refunddesk (editable) into .venv"
  quietly .venv/bin/python -m pip install -e .
  next=".venv/bin/refunddesk init && .venv/bin/refunddesk serve"
fi
say "done; apt's and pip's output is in $log"
say "next: $next"
