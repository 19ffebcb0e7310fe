#!/usr/bin/env bash
# Run on a development machine before using the GPU machine, which reaches no package registry:
# downloads the .deb files of headers the GPU machine lacks into .deps/debs (git-ignored).
# scripts/gpu-test.sh unpacks them there; carry `.deps` with the working tree.
#   libpcre2-dev: PCRE2 headers for the tokenizer (the runtime libpcre2-8.so.0 is on every
#   Debian/Ubuntu; Debian 12 and Ubuntu 24.04 both ship PCRE2 10.42).
#   libutf8proc-dev: NFC normalization for the tokenizer; linked statically (libutf8proc.a), so
#   the GPU machine needs no runtime package.
#   libgloo-dev: gloo's headers, which LibTorch's ProcessGroupGloo.hpp includes (headers only:
#   the gloo code itself is inside libtorch_cpu).
# Also FlashInfer's headers (scripts/fetch-flashinfer.sh) as one tarball, .deps/flashinfer-*-headers.tar.xz
# (~3 MB; the wheel itself is 62 MB, too big to carry), which scripts/setup.sh unpacks there.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mkdir -p "$root/.deps/debs"
cd "$root/.deps/debs"
for pkg in libpcre2-dev libutf8proc-dev libgloo-dev; do
  ls "${pkg}"_*.deb >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 || true; apt-get download "$pkg"; }
done
ls -la "$root/.deps/debs"
fi_version=$(sed -n 's/^version=//p' "$root/scripts/fetch-flashinfer.sh")
fi_tar="$root/.deps/flashinfer-$fi_version-headers.tar.xz"
if [ ! -f "$fi_tar" ]; then
  fi_tmp=$(mktemp -d)
  bash "$root/scripts/fetch-flashinfer.sh" "$fi_tmp"
  tar -cJf "$fi_tar.partial" -C "$fi_tmp" flashinfer && mv "$fi_tar.partial" "$fi_tar"
  rm -rf "$fi_tmp"
fi
ls -la "$fi_tar"
