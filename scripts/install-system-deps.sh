#!/usr/bin/env bash
# System packages some tests and examples use, from Debian: espeak-ng and flite (keyword audio), sox,
# qemu-user (runs the aarch64 device runner). Installs only what is missing; needs root.
# Tests that need one of these skip with a reason when it is absent.
set -u
missing=()
command -v espeak-ng >/dev/null 2>&1 || missing+=(espeak-ng)
command -v flite >/dev/null 2>&1 || missing+=(flite)
command -v sox >/dev/null 2>&1 || missing+=(sox)
command -v qemu-aarch64 >/dev/null 2>&1 || missing+=(qemu-user)
if ((${#missing[@]} == 0)); then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "install-system-deps: not root; missing ${missing[*]} (tests that need them will skip)" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }; then
    echo "install-system-deps: apt-get could not install ${missing[*]} (tests that need them will skip)" >&2
fi
exit 0
