#!/usr/bin/env bash
# Installs the system packages sluice's build and tests need. Idempotent:
# packages already present are not reinstalled, and apt is only touched when
# something is missing.
set -euo pipefail

# Debian packages needed by the build and the tests, beyond Rust and gcc:
# the eBPF datapath (bpf/sluice.bpf.c) is compiled by agent/build.rs with
# clang against libbpf's headers; gcc-multilib supplies <asm/types.h> for
# `-target bpf`. iproute2 (`ip netns`, veth) runs the live enforcement test.
# libz3-dev: the verifier crate (exposure analysis) links Debian's z3.
PACKAGES=(
  clang-19
  llvm-19
  libbpf-dev
  gcc-multilib
  iproute2
  libz3-dev
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi

command -v cargo >/dev/null || { echo "cargo not found: install Rust (rustup) first" >&2; exit 1; }
