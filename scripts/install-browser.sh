#!/usr/bin/env bash
# Headless Chromium for the dashboard's browser test (tests/e2e/test_dashboard_browser.py).
# It comes from Debian's `chromium` package: the test drives it over the DevTools protocol, so
# no browser build is downloaded by any Python package. Installing needs root (apt-get).
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "install-browser: /usr/bin/chromium is missing; run as root: apt-get install -y chromium" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq chromium >/dev/null
/usr/bin/chromium --version
