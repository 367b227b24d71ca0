#!/usr/bin/env bash
# Runs one fuzz target for a number of seconds: scripts/fuzz.sh TARGET SECONDS
# (scripts/fuzz.sh --list names the targets). cargo-fuzz is installed if
# missing; it builds on the stable toolchain with RUSTC_BOOTSTRAP=1. The
# corpus is seeded from fixtures/ (and the inputs that once failed,
# fuzz/regressions/TARGET/), so every run replays them first. A crash, a
# failed assertion or a leak fails the run, and libFuzzer leaves the input
# in fuzz/artifacts/TARGET/: copy it into fuzz/regressions/TARGET/.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGETS=(front_end roundtrip inventory flows hubble artifact compile_simulate proxy_http proxy_dns)
if [ "${1:-}" = "--list" ]; then
  printf '%s\n' "${TARGETS[@]}"
  exit 0
fi
target="${1:?usage: scripts/fuzz.sh TARGET SECONDS (--list for the targets)}"
seconds="${2:?usage: scripts/fuzz.sh TARGET SECONDS}"
printf '%s\n' "${TARGETS[@]}" | grep -qx "$target" || { echo "unknown target $target" >&2; exit 2; }

export RUSTC_BOOTSTRAP=1
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --quiet

corpus="fuzz/corpus/$target"
mkdir -p "$corpus" "fuzz/regressions/$target"
# Seeds: the inputs of the right kind from fixtures/ (copied, by content
# hash, so repeated runs do not pile up duplicates).
seed() {
  for f in "$@"; do
    [ -f "$f" ] || continue
    cp "$f" "$corpus/$(sha1sum "$f" | cut -c1-16)"
  done
}
# The flows target reads its first byte as the piece size of the streamed
# reading it compares with the whole one.
seed_cut() {
  for f in "$@"; do
    [ -f "$f" ] || continue
    { printf '\x10'; cat "$f"; } > "$corpus/cut-$(sha1sum "$f" | cut -c1-16)"
  done
}
case "$target" in
  front_end|roundtrip|compile_simulate)
    seed fixtures/valid/*.yaml fixtures/invalid/*.yaml fixtures/simulate/*/policy.yaml fixtures/example/policies/*.yaml fixtures/fidelity/*/policies.yaml ;;
  inventory) seed fixtures/*/inventory.yaml fixtures/simulate/inventory.yaml fixtures/fidelity/*/inventory.yaml fixtures/example/inventory.yaml ;;
  flows) seed_cut fixtures/simulate/*/flows.yaml fixtures/fidelity/*/flows.yaml fixtures/example/flows.yaml ;;
  hubble) seed fixtures/simulate/*/*.jsonl fixtures/example/*.jsonl ;;
  artifact)
    # Seeds are compiled artifacts of the shipped example.
    cargo run -q -p sluice -- compile -p fixtures/example/policies -i fixtures/example/inventory.yaml \
      -o binary --out "$corpus/example.sluice" >/dev/null ;;
  proxy_http) printf 'GET /v1/x/../y HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n' > "$corpus/seed" ;;
  proxy_dns) printf '\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03api\x07example\x04test\x00\x00\x01\x00\x01' > "$corpus/seed" ;;
esac

cd fuzz
cargo fuzz run "$target" "corpus/$target" "regressions/$target" -- \
  -max_total_time="$seconds" -dict=policy.dict -max_len=65536 -rss_limit_mb=2048 -print_final_stats=1
