#!/usr/bin/env bash
# The main job on the shipped example (fixtures/example): validate the
# policies, compile them for the inventory, and run the policy unit tests;
# then the same on a repository of workload manifests that never ran
# (fixtures/repo).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -q -p sluice
sluice="${CARGO_TARGET_DIR:-target}/release/sluice"
ex=fixtures/example

echo "\$ sluice validate $ex/policies"
$sluice validate "$ex/policies"
echo
echo "\$ sluice compile -p $ex/policies -i $ex/inventory.yaml --stats"
$sluice compile -p "$ex/policies" -i "$ex/inventory.yaml" --stats
echo
echo "\$ sluice simulate -p $ex/policies -i $ex/inventory.yaml -f $ex/flows.yaml"
$sluice simulate -p "$ex/policies" -i "$ex/inventory.yaml" -f "$ex/flows.yaml"
echo
echo "\$ sluice verify -p $ex/policies -i $ex/inventory.yaml -a $ex/assertions.yaml"
$sluice verify -p "$ex/policies" -i "$ex/inventory.yaml" -a "$ex/assertions.yaml"
echo
repo=fixtures/repo
echo "\$ sluice simulate -p $repo -i $repo -f $repo/flows.yaml"
$sluice simulate -p "$repo" -i "$repo" -f "$repo/flows.yaml"
echo
d=fixtures/diff
echo "\$ sluice diff --base $d/base --head $d/edits/widened-selector -i $d/cluster.yaml"
$sluice diff --base "$d/base" --head "$d/edits/widened-selector" -i "$d/cluster.yaml"
