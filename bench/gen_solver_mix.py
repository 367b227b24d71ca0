#!/usr/bin/env python3
"""Writes the policies that give `sluice lint --any-pod`'s solver rules
work, beside the diff benchmark's base (simulator/benches/diff.rs with
SLUICE_BENCH_DIR: namespaces ns0..nsN-1, apps app0..app19), in the mix a
real cluster has: one policy in ten has an `ingressDeny` (blocking a
scanner app, or a port for the whole namespace), one in twenty-five lets
a monitoring app of any namespace scrape metrics (`namespaceSelector: {}`),
and one in fifty is clusterwide with a `fromEndpoints: [{}]`-like peer.

    python3 bench/gen_solver_mix.py 1000 20 > /tmp/exp-1000/base/solver-mix.yaml
"""
import sys


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    spaces = int(sys.argv[2]) if len(sys.argv) > 2 else 100
    docs = []
    for i in range(n // 10):
        ns, app = f"ns{i % spaces}", f"app{i % 20}"
        if i % 2 == 0:
            deny = "  - fromEndpoints: [{matchLabels: {app: scanner}}]"
        else:
            deny = ("  - fromEndpoints: [{}]\n"
                    "    toPorts: [{ports: [{port: \"9100\", protocol: TCP}]}]")
        docs.append(
            "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\n"
            f"metadata: {{name: deny-{i}, namespace: {ns}}}\n"
            f"spec:\n  endpointSelector: {{matchLabels: {{app: {app}}}}}\n"
            "  ingress:\n"
            f"  - fromEndpoints: [{{matchLabels: {{app: app{(i + 1) % 20}}}}}]\n"
            "    toPorts: [{ports: [{port: \"9100\", protocol: TCP}]}]\n"
            f"  ingressDeny:\n{deny}\n")
    for i in range(n // 25):
        ns, app = f"ns{i % spaces}", f"app{(i * 3) % 20}"
        docs.append(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
            f"metadata: {{name: scrape-{i}, namespace: {ns}}}\n"
            f"spec:\n  podSelector: {{matchLabels: {{app: {app}}}}}\n"
            "  policyTypes: [Ingress]\n  ingress:\n  - from:\n"
            "    - namespaceSelector: {}\n"
            "      podSelector: {matchLabels: {app: monitoring}}\n"
            "    ports: [{port: 9090, protocol: TCP}]\n")
    for i in range(n // 50):
        app = f"app{(i * 7) % 20}"
        docs.append(
            "apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\n"
            f"metadata: {{name: cluster-{i}}}\n"
            f"spec:\n  endpointSelector: {{matchLabels: {{app: {app}}}}}\n"
            "  ingress:\n  - fromEndpoints:\n"
            "    - matchExpressions: [{key: app, operator: NotIn, values: [untrusted]}]\n"
            "    toPorts: [{ports: [{port: \"8443\", protocol: TCP}]}]\n")
    print("---\n".join(docs), end="")


if __name__ == "__main__":
    main()
