#!/usr/bin/env bash
# Idempotent: install Debian's chromium + chromium-driver (for tests/widgets/test_browser.py)
# only when /usr/bin/chromium is missing, and selenium into the venv when it is missing.
# Never fails the caller: the browser test skips with a reason when Chromium is still absent.
set -u
VENV_PY="${VENV_PY:-.venv/bin/python}"
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium chromium-driver >/dev/null 2>&1; } \
      || echo "install_browser: could not install chromium (no apt or no network); the browser test will skip" >&2
  else
    echo "install_browser: chromium missing and apt-get unusable (need root); the browser test will skip" >&2
  fi
fi
if [ -x "$VENV_PY" ] && ! "$VENV_PY" -c "import selenium" >/dev/null 2>&1; then
  "$VENV_PY" -m pip install -q selenium >/dev/null 2>&1 \
    || echo "install_browser: could not pip install selenium; the browser test will skip" >&2
fi
exit 0
