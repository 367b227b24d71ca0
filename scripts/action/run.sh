#!/usr/bin/env bash
# The steps of the composite action (action.yml), one per call:
#   run.sh install | lint | sarif | diff
# Inputs come as INPUT_* variables (action.yml passes them); the paths
# are relative to the working directory (the checked-out repository).
# cli/tests/action.rs runs each step on this repository's fixtures.
set -euo pipefail

step=${1:?usage: run.sh install|lint|sarif|diff}
sluice=${SLUICE:-sluice}
read -r -a policies <<< "${INPUT_POLICIES:-policies/}"
common=()
if [ -n "${INPUT_INVENTORY:-}" ]; then
  read -r -a inv <<< "$INPUT_INVENTORY"
  for i in "${inv[@]}"; do common+=(-i "$i"); done
fi
checks=()
if [ -n "${INPUT_ASSERTIONS:-}" ]; then checks+=(--assertions "$INPUT_ASSERTIONS"); fi
if [ "${INPUT_ANY_POD:-false}" = true ]; then checks+=(--any-pod); fi

case $step in
  install)
    # A build without the eBPF datapath needs Rust alone. The cache step
    # of action.yml restores SLUICE_ROOT when this version was built before.
    root=${SLUICE_ROOT:?SLUICE_ROOT names where sluice is installed}
    if [ -x "$root/bin/sluice" ]; then
      echo "sluice $("$root/bin/sluice" --version | cut -d' ' -f2) from the cache"
    else
      cargo install --locked --no-default-features --path "${GITHUB_ACTION_PATH:?}/cli" --root "$root"
    fi
    if [ -n "${GITHUB_PATH:-}" ]; then echo "$root/bin" >> "$GITHUB_PATH"; fi
    ;;
  lint)
    # Annotations on the pull request; exit 1 at or above fail-on.
    fail=()
    if [ -n "${INPUT_FAIL_ON:-}" ]; then fail+=(--fail-on "$INPUT_FAIL_ON"); fi
    "$sluice" lint "${policies[@]}" "${common[@]}" "${checks[@]}" --format github "${fail[@]}"
    ;;
  sarif)
    # Every finding and input error, for code scanning; never fails.
    "$sluice" lint "${policies[@]}" "${common[@]}" "${checks[@]}" --format sarif --fail-on never \
      > "${INPUT_SARIF_FILE:-sluice.sarif}"
    ;;
  diff)
    # What the change opens and closes, in the job summary.
    base=${INPUT_DIFF_BASE:-}
    if [ -z "$base" ]; then echo "no diff-base: nothing to compare"; exit 0; fi
    exposure=()
    if [ "${INPUT_ANY_POD:-false}" = true ]; then exposure+=(--exposure); fi
    "$sluice" diff "$base" "${common[@]}" "${exposure[@]}" -o markdown -- "${policies[@]}" \
      >> "${GITHUB_STEP_SUMMARY:-/dev/stdout}"
    ;;
  *)
    echo "unknown step: $step" >&2
    exit 2
    ;;
esac
