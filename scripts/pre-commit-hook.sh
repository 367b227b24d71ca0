#!/usr/bin/env bash
# The pre-commit hook's entry (.pre-commit-hooks.yaml, `language: script`):
# builds sluice from the hook's checkout once per revision, with Rust
# alone (no eBPF toolchain), caches it, and lints the files pre-commit
# passes. SLUICE_HOOK_BIN runs a sluice that is already built instead.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=${SLUICE_HOOK_BIN:-}
if [ -z "$bin" ]; then
  rev=$(git -C "$here" rev-parse HEAD 2>/dev/null || echo unversioned)
  cache=${SLUICE_HOOK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sluice-pre-commit}/$rev
  bin=$cache/bin/sluice
  if [ ! -x "$bin" ]; then
    command -v cargo >/dev/null || { echo "sluice-lint: cargo not found: install Rust (rustup)" >&2; exit 2; }
    echo "sluice-lint: building sluice once for this revision (Rust alone)" >&2
    # SLUICE_HOOK_CARGO_FLAGS: e.g. --debug, for a quicker build.
    # shellcheck disable=SC2086
    cargo install --quiet --locked --no-default-features ${SLUICE_HOOK_CARGO_FLAGS:-} \
      --path "$here/cli" --root "$cache" >&2
  fi
fi
exec "$bin" lint --fail-on warning "$@"
