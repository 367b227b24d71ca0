#!/usr/bin/env bash
# Side by side: the same allow-list as N iptables rules versus sluice's eBPF
# datapath (`sluice agent`), packets/s of a UDP stream (iperf3, 64-byte
# payload, unlimited rate, 3 s) from the root namespace into a network
# namespace this script creates. Root needed; everything made is removed.
#
#   apt-get install iperf3 iptables      # benchmark only
#   cargo build --release -p sluice && bash bench/iptables_vs_bpf.sh
#
# iptables: N rules `-s <addr> -p udp --dport 5201 -j ACCEPT` in the
# namespace's INPUT chain, the sender's rule last, then DROP; iperf3's TCP
# control connection is accepted first. No conntrack shortcut: like the
# datapath's policy lookup, every data packet walks the list. BPF: a policy whose
# ingress allows N /32 CIDRs (N identities, N policy entries) on UDP and
# TCP 5201, the sender's address among them, enforced by `sluice agent`.
set -euo pipefail
cd "$(dirname "$0")/.."
SLUICE=${SLUICE:-target/release/sluice}
NS=sl-bench-$$
H=slbh$$; P=slbp$$
DIR=$(mktemp -d)
AGENT=
cleanup() {
  [ -n "$AGENT" ] && kill "$AGENT" 2>/dev/null && wait "$AGENT" 2>/dev/null || true
  ip netns exec "$NS" pkill iperf3 2>/dev/null || true
  ip link del "$H" 2>/dev/null || true
  ip netns del "$NS" 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT

ip netns add "$NS"
ip link add "$H" type veth peer name "$P"
ip link set "$P" netns "$NS"
ip addr add 10.198.0.1/24 dev "$H"; ip link set "$H" up
ip netns exec "$NS" ip addr add 10.198.0.2/24 dev "$P"
ip netns exec "$NS" ip link set "$P" up
ip netns exec "$NS" ip link set lo up
ip netns exec "$NS" iperf3 -s -D -B 10.198.0.2 >/dev/null

one() { # one 3-second run; prints received packets per second
  iperf3 -c 10.198.0.2 -u -l 64 -b 0 -t 3 -J 2>/dev/null | python3 -c '
import json, sys
d = json.load(sys.stdin)["end"]["sum"]
print(int((d["packets"] - d["lost_packets"]) / d["seconds"]))'
}
pps() { # the median of three runs
  printf '%s\n' "$(one)" "$(one)" "$(one)" | sort -n | sed -n 2p
}

addr() { printf '11.%d.%d.%d' $(( $1 / 65536 % 256 )) $(( $1 / 256 % 256 )) $(( $1 % 256 )); }

printf '%8s %16s %16s\n' rules "iptables pps" "sluice bpf pps"
base=$(pps)
printf '%8s %16s %16s\n' 0 "$base" "(no filter)"
for N in 10 1000 10000; do
  # iptables
  {
    echo '*filter'
    echo ':INPUT ACCEPT [0:0]'
    echo '-A INPUT -p tcp --dport 5201 -j ACCEPT'
    for i in $(seq 1 $((N - 1))); do echo "-A INPUT -s $(addr "$i")/32 -p udp --dport 5201 -j ACCEPT"; done
    echo '-A INPUT -s 10.198.0.1/32 -p udp --dport 5201 -j ACCEPT'
    echo '-A INPUT -j DROP'
    echo COMMIT
  } > "$DIR/rules"
  ip netns exec "$NS" iptables-restore < "$DIR/rules"
  ipt=$(pps)
  ip netns exec "$NS" iptables -F INPUT
  # sluice
  {
    echo 'apiVersion: cilium.io/v2'
    echo 'kind: CiliumNetworkPolicy'
    echo 'metadata: {name: bench, namespace: bench}'
    echo 'spec:'
    echo '  endpointSelector: {matchLabels: {app: server}}'
    echo '  ingress:'
    echo '  - fromCIDR:'
    for i in $(seq 1 $((N - 1))); do echo "    - $(addr "$i")/32"; done
    echo '    - 10.198.0.1/32'
    echo '    toPorts: [{ports: [{port: "5201", protocol: UDP}, {port: "5201", protocol: TCP}]}]'
  } > "$DIR/policy.yaml"
  printf 'apiVersion: v1\nkind: Pod\nmetadata: {name: server, namespace: bench, labels: {app: server}}\nspec: {containers: [{name: c}]}\nstatus: {podIP: 10.198.0.2}\n' > "$DIR/inventory.yaml"
  "$SLUICE" agent -p "$DIR/policy.yaml" -i "$DIR/inventory.yaml" --map-capacity 65536 --no-pin --duration-s 30 > "$DIR/agent.log" 2>&1 &
  AGENT=$!
  for _ in $(seq 1 100); do grep -q applied "$DIR/agent.log" && break; sleep 0.1; done
  grep -q applied "$DIR/agent.log" || { cat "$DIR/agent.log"; exit 1; }
  bpf=$(pps)
  kill "$AGENT"; wait "$AGENT" 2>/dev/null || true; AGENT=
  printf '%8s %16s %16s\n' "$N" "$ipt" "$bpf"
done
