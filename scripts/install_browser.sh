#!/usr/bin/env bash
# Installs Debian's headless Chromium and its WebDriver for the browser tests (tests/browser),
# only when they are missing. Needs root (apt-get); never downloads a browser build of its own.
#   bash scripts/install_browser.sh          install when missing
#   bash scripts/install_browser.sh --check  exit 0 when present, 1 when not
set -euo pipefail

have() { command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; }

if [ "${1:-}" = "--check" ]; then
    have && exit 0 || exit 1
fi
if have; then
    echo "[install_browser] chromium $(chromium --version 2>/dev/null | awk '{print $2}') is installed" >&2
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "[install_browser] chromium is missing and this is not root: run" \
         "'sudo apt-get install -y chromium chromium-driver' (the browser tests skip until then)" >&2
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "[install_browser] no apt-get here: install Chromium and chromedriver with your package manager" \
         "(the browser tests skip until then)" >&2
    exit 0
fi
echo "[install_browser] installing chromium and chromium-driver from Debian's packages (about 2 minutes)" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
apt-get install -y -q --no-install-recommends chromium chromium-driver fonts-dejavu-core >/dev/null
echo "[install_browser] $(chromium --version)" >&2
