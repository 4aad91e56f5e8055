#!/usr/bin/env bash
# Headless Chromium and its WebDriver for scripts/check_docs_math.py: installs Debian's
# `chromium` and `chromium-driver` with apt-get when `chromium` or `chromedriver` is missing.
#   scripts/install_chromium.sh      (as root on Debian; elsewhere it says what to install)
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "install_chromium.sh: no chromium/chromedriver on PATH and no apt-get (not Debian):" \
        "install Chromium and its matching ChromeDriver by hand" >&2
    exit 1
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "install_chromium.sh: no chromium/chromedriver on PATH and not root:" \
        "run 'sudo apt-get install chromium chromium-driver'" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
