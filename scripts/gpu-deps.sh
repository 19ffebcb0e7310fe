#!/usr/bin/env bash
# Run on a development machine before using the GPU machine, which reaches no package registry:
# downloads the .deb files of headers the GPU machine lacks into .deps/debs (git-ignored).
# scripts/gpu-test.sh unpacks them there; carry `.deps` with the working tree.
#   libpcre2-dev: PCRE2 headers for the tokenizer (the runtime libpcre2-8.so.0 is on every
#   Debian/Ubuntu; Debian 12 and Ubuntu 24.04 both ship PCRE2 10.42).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mkdir -p "$root/.deps/debs"
cd "$root/.deps/debs"
ls libpcre2-dev_*.deb >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 || true; apt-get download libpcre2-dev; }
ls -la "$root/.deps/debs"
