#!/usr/bin/env python3
"""A realistic generated cluster for the scale benchmarks (issue #18).

What a real cluster dump looks like, at any size: namespaces of teams (four
namespaces each: a team's selector selects as many namespaces however large
the cluster) and environments; Deployments and StatefulSets with several
replicas each (pods named and labelled as their controllers name them, with
pod-template-hash and owner references); nodes in zones; named container
ports; and a policy mix that real repositories hold: CiliumNetworkPolicies
per app (same-namespace tiers on named ports, cross-namespace peers by
namespace labels, egress to databases, DNS, CIDR sets with except, entities),
NetworkPolicies (matchExpressions, namespaceSelector, port ranges, default
deny), some deny rules, public entry points from world, and a few
clusterwide policies (monitoring; host policies with nodeSelector).
Deterministic for a seed.

Usage:
    python3 bench/gen_cluster.py --pods 100000 --policies 10000 --out /tmp/c100k
writes policies.yaml and inventory.yaml into --out.
"""
import argparse, os, random

TIERS = ["web", "api", "worker", "db", "cache"]
PORTS = {"web": [("http", 8080)], "api": [("http", 8080), ("grpc", 50051)],
         "worker": [("metrics", 9090)], "db": [("postgres", 5432)], "cache": [("redis", 6379)]}
COMMON = [80, 443, 8080, 8443, 5432, 6379, 9090, 3306, 27017, 50051, 9092, 2181]
ALNUM = "bcdfghjklmnpqrstvwxz2456789"


def generate(pods, policies, seed=1):
    r = random.Random(seed)
    per_ns = 200
    namespaces = max(1, pods // per_ns)
    nodes = max(3, pods // 30)
    inv = ["apiVersion: v1", "kind: List", "items:"]
    for n in range(namespaces):
        env = ["prod", "staging", "dev"][n % 3]
        inv.append(f"- {{apiVersion: v1, kind: Namespace, metadata: {{name: ns{n}, labels: "
                   f"{{kubernetes.io/metadata.name: ns{n}, team: team{n // 4}, env: {env}}}}}}}")
    for i in range(nodes):
        inv.append(f"- {{apiVersion: v1, kind: Node, metadata: {{name: node{i}, labels: "
                   f"{{topology.kubernetes.io/zone: zone{i % 3}, node-role: {'infra' if i % 10 == 0 else 'worker'}}}}}, "
                   f"status: {{addresses: [{{type: InternalIP, address: 192.168.{i // 250}.{i % 250 + 1}}}]}}}}")
    # Apps: each namespace gets apps until its pods are spent; replicas
    # 1-10 (most 2-3), as Deployments or (databases) StatefulSets.
    apps = []  # (ns, app, tier)
    made = 0
    for n in range(namespaces):
        left = per_ns if n < namespaces - 1 else pods - made
        a = 0
        while left > 0:
            tier = TIERS[a % len(TIERS)]
            replicas = min(left, r.choice([1, 2, 2, 3, 3, 3, 4, 5, 8, 10]))
            app = f"{tier}{a}"
            apps.append((n, app, tier))
            hash_ = "".join(r.choice(ALNUM) for _ in range(10))
            ports = ", ".join(f"{{name: {pn}, containerPort: {pp}}}" for pn, pp in PORTS[tier])
            for k in range(replicas):
                if tier == "db":
                    name, owner = f"{app}-{k}", f"{{kind: StatefulSet, name: {app}, apiVersion: apps/v1}}"
                    extra = f", statefulset.kubernetes.io/pod-name: {app}-{k}"
                else:
                    suffix = "".join(r.choice(ALNUM) for _ in range(5))
                    name, owner = f"{app}-{hash_}-{suffix}", f"{{kind: ReplicaSet, name: {app}-{hash_}, apiVersion: apps/v1}}"
                    extra = f", pod-template-hash: {hash_}"
                ip = 16 * 65536 + made  # 10.16.0.0/12 onwards
                inv.append(
                    f"- {{apiVersion: v1, kind: Pod, metadata: {{name: {name}, namespace: ns{n}, "
                    f"labels: {{app: {app}, tier: {tier}, version: v{a % 3}{extra}}}, ownerReferences: [{owner}]}}, "
                    f"spec: {{nodeName: node{made % nodes}, serviceAccountName: {app}, containers: [{{name: main, ports: [{ports}]}}]}}, "
                    f"status: {{phase: Running, podIP: 10.{ip >> 16 & 255}.{ip >> 8 & 255}.{ip & 255}}}}}")
                made += 1
                left -= 1
            a += 1
    by_ns = {}
    for n, app, tier in apps:
        by_ns.setdefault(n, []).append((app, tier))
    pol = []
    for i in range(policies):
        n, app, tier = apps[(i * 7919) % len(apps)]
        other_ns = (n + 1 + i % 5) % namespaces
        peer = r.choice(by_ns[n])[0]
        far = r.choice(by_ns[other_ns])[0]
        port = r.choice(COMMON) if i % 3 else 10000 + i % 2000
        kind = i % 20
        if kind < 11:
            pol.append(f"""apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: {app}-{i}, namespace: ns{n}}}
spec:
  endpointSelector: {{matchLabels: {{app: {app}}}}}
  ingress:
  - fromEndpoints: [{{matchLabels: {{app: {peer}}}}}]
    toPorts: [{{ports: [{{port: "{PORTS[tier][0][0]}"}}]}}]
  - fromEndpoints: [{{matchLabels: {{app: {far}, k8s:io.kubernetes.pod.namespace: ns{other_ns}}}}}]
    toPorts: [{{ports: [{{port: "{port}", protocol: TCP}}]}}]
  egress:
  - toEndpoints: [{{matchLabels: {{tier: db}}}}]
    toPorts: [{{ports: [{{port: "5432", protocol: TCP}}]}}]
  - toEndpoints: [{{matchLabels: {{k8s:io.kubernetes.pod.namespace: kube-system, k8s-app: kube-dns}}}}]
    toPorts: [{{ports: [{{port: "53", protocol: ANY}}]}}]
  - toCIDRSet: [{{cidr: 172.{16 + i % 16}.0.0/16, except: [172.{16 + i % 16}.{i % 4}.0/24]}}]
  - toEntities: [kube-apiserver]
""")
        elif kind < 17:
            lo = r.choice([8000, 9000, 30000])
            pol.append(f"""apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: {app}-np{i}, namespace: ns{n}}}
spec:
  podSelector:
    matchExpressions: [{{key: tier, operator: In, values: [{tier}, {r.choice(TIERS)}]}}, {{key: version, operator: NotIn, values: [v9]}}]
  policyTypes: [Ingress]
  ingress:
  - from:
    - namespaceSelector: {{matchLabels: {{team: team{other_ns // 4}}}}}
      podSelector: {{matchLabels: {{tier: {r.choice(TIERS)}}}}}
    - podSelector: {{matchLabels: {{app: {peer}}}}}
    ports: [{{port: {PORTS[tier][0][0]}}}, {{protocol: TCP, port: {lo}, endPort: {lo + 100 + i % 50}}}]
""")
        elif kind == 17:
            pol.append(f"""apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: default-deny-{i}, namespace: ns{n}}}
spec:
  podSelector: {{}}
  policyTypes: [Ingress]
""")
        elif kind == 18:
            pol.append(f"""apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: deny-{app}-{i}, namespace: ns{n}}}
spec:
  endpointSelector: {{matchLabels: {{tier: {tier}}}}}
  ingressDeny:
  - fromEntities: [world]
  - fromEndpoints: [{{matchLabels: {{k8s:io.kubernetes.pod.namespace: ns{other_ns}}}}}]
    toPorts: [{{ports: [{{port: "{port}", protocol: TCP}}]}}]
""")
        elif i % 400 == 39:
            pol.append(f"""apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {{name: host-{i}}}
spec:
  nodeSelector: {{matchLabels: {{node-role: {r.choice(['infra', 'worker'])}}}}}
  ingress:
  - fromEntities: [cluster]
  - fromCIDR: [10.{i % 250}.0.0/16]
    toPorts: [{{ports: [{{port: "22", protocol: TCP}}, {{port: "10250", protocol: TCP}}]}}]
""")
        elif i % 200 == 19:
            pol.append(f"""apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {{name: monitoring-{i}}}
spec:
  endpointSelector: {{matchLabels: {{tier: {tier}, k8s:io.cilium.k8s.namespace.labels.env: {['prod', 'staging', 'dev'][i % 3]}}}}}
  ingress:
  - fromEndpoints: [{{matchLabels: {{k8s:io.cilium.k8s.namespace.labels.team: team{(i // 20) % max(1, namespaces // 4)}, tier: worker}}}}]
    toPorts: [{{ports: [{{port: "9090", protocol: TCP}}]}}]
""")
        else:
            # Clusterwide policies are few in real clusters: the other
            # slots are public entry points of a namespace.
            pol.append(f"""apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: public-{app}-{i}, namespace: ns{n}}}
spec:
  endpointSelector: {{matchLabels: {{app: {app}}}}}
  ingress:
  - fromEntities: [world]
    toPorts: [{{ports: [{{port: "443", protocol: TCP}}]}}]
""")
    return "\n".join(inv) + "\n", "---\n".join(pol)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pods", type=int, default=100000)
    ap.add_argument("--policies", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    inv, pol = generate(a.pods, a.policies, a.seed)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "inventory.yaml"), "w") as f:
        f.write(inv)
    with open(os.path.join(a.out, "policies.yaml"), "w") as f:
        f.write(pol)


if __name__ == "__main__":
    main()
