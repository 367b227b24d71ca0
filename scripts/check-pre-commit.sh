#!/usr/bin/env bash
# Installs pre-commit from PyPI in a virtualenv and runs this repository's
# hook (.pre-commit-hooks.yaml) the way a user would: on a scratch git
# repository with a bad policy, the commit check must fail and print the
# finding; with a good one it must pass. Run by .ci/run after the
# no-default-features build, whose artifacts the hook's build reuses.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
rev=$(git rev-parse HEAD)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet pre-commit
pc="$work/venv/bin/pre-commit"

mkdir "$work/scratch"
cd "$work/scratch"
git init -q
git config user.email ci@example.com
git config user.name ci
cat > .pre-commit-config.yaml <<CFG
repos:
- repo: $repo
  rev: $rev
  hooks:
  - id: sluice-lint
    args: [--no-config]
CFG
cp "$repo/fixtures/lints/SL020/bad.yaml" policy.yaml
git add .
export PRE_COMMIT_HOME="$work/pre-commit-home"
export SLUICE_HOOK_CACHE="$work/hook-cache"
export SLUICE_HOOK_CARGO_FLAGS="--debug"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target}"
if "$pc" run --all-files > "$work/out.txt" 2>&1; then
  cat "$work/out.txt"
  echo "check-pre-commit: the hook passed a policy with a warning" >&2
  exit 1
fi
cat "$work/out.txt"
grep -q "SL020(ingress-from-world-all-ports)" "$work/out.txt" || {
  echo "check-pre-commit: the hook's output lacks the finding" >&2
  exit 1
}
cp "$repo/fixtures/valid/cnp-l7.yaml" policy.yaml
git add .
"$pc" run --all-files
echo "check-pre-commit: the hook installs, fails on a finding and passes a clean policy"
