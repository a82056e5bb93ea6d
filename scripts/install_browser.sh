#!/usr/bin/env bash
# Chromium for the browser tests (tests/ui): Debian's package, installed once. Playwright drives it
# and never downloads a browser of its own. Without apt-get or root, it says so and the browser
# tests are skipped with that reason until a Chromium is on PATH (or named by CTCID_CHROMIUM).
set -uo pipefail
if [ -n "${CTCID_CHROMIUM:-}" ] && [ -x "${CTCID_CHROMIUM}" ]; then exit 0; fi
for name in chromium chromium-browser google-chrome google-chrome-stable; do
  if command -v "$name" >/dev/null; then exit 0; fi
done
skip="the browser tests (tests/ui) will be skipped until Chromium is installed"
if ! command -v apt-get >/dev/null; then
  echo "note: no apt-get here; install Chromium (or set CTCID_CHROMIUM to its binary): $skip" >&2
  exit 0
fi
sudo=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    sudo=(sudo -n)
  else
    echo "note: installing Chromium needs root: sudo apt-get install chromium; $skip" >&2
    exit 0
  fi
fi
echo "Installing Debian's chromium for the browser tests (once)"
export DEBIAN_FRONTEND=noninteractive
install=("${sudo[@]}" apt-get install -y -q --no-install-recommends chromium)
"${install[@]}" >/dev/null || { "${sudo[@]}" apt-get update -q >/dev/null && "${install[@]}" >/dev/null; } \
  || echo "warning: apt-get could not install chromium; $skip" >&2
exit 0
