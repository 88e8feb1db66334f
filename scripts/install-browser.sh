#!/usr/bin/env bash
# Headless Chromium for the dashboard's browser test (tests/e2e/test_dashboard_browser.py), and
# only for it: `make test` runs this, `make install` and `make run` never do.
#
# A Chromium already on the machine is used as it is: $FLEETBUS_CHROMIUM if set, else the first
# of chromium, chromium-browser, google-chrome, google-chrome-stable on PATH. Without one, root
# installs Debian's `chromium` package with apt-get; anyone else is told what to do, and the
# script fails (nothing else is changed). The test drives the browser over the DevTools protocol,
# so no browser build is downloaded by any Python package.
set -euo pipefail

names=(chromium chromium-browser google-chrome google-chrome-stable)

find_browser() {
    if [ -n "${FLEETBUS_CHROMIUM:-}" ]; then
        echo "$FLEETBUS_CHROMIUM"
        return 0
    fi
    local name found
    for name in "${names[@]}"; do
        if found=$(command -v "$name" 2>/dev/null) && [ -x "$found" ]; then
            echo "$found"
            return 0
        fi
    done
    return 1
}

if [ -n "${FLEETBUS_CHROMIUM:-}" ] && ! { [ -f "$FLEETBUS_CHROMIUM" ] && [ -x "$FLEETBUS_CHROMIUM" ]; }; then
    echo "install-browser: FLEETBUS_CHROMIUM=$FLEETBUS_CHROMIUM is not an executable file" >&2
    exit 1
fi
if browser=$(find_browser); then
    echo "install-browser: using $browser"
    exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    cat >&2 <<MSG
install-browser: no Chromium found (looked for \$FLEETBUS_CHROMIUM, then ${names[*]} on PATH).
  The dashboard's browser test needs one; nothing else does (make install and make run work
  without it). Either install it as root:  apt-get install -y chromium
  or point to one you have:             FLEETBUS_CHROMIUM=/path/to/chromium make test
MSG
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq chromium >/dev/null
browser=$(find_browser) || {
    echo "install-browser: apt-get installed chromium but no browser is on PATH" >&2
    exit 1
}
echo "install-browser: installed $("$browser" --version)"
