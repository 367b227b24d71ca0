#!/usr/bin/env python3
"""Side by side: sluice's connectivity matrix vs network-config-analyzer's.

Generates the Kubernetes e2e model scaled up (N namespaces x P pods, K
NetworkPolicies in the e2e style), runs `sluice matrix` and `nca
--connectivity ... -o txt_no_fw_rules --output_endpoints pods`, times both,
and compares the pod-to-pod matrices pair by pair.

nca is a benchmark baseline only, installed into a virtualenv:
    python3 -m venv /tmp/nca-venv && /tmp/nca-venv/bin/pip install network-config-analyzer==2.1.0
Usage:
    python3 bench/nca_compare.py [--ns 50] [--pods 40] [--nca /tmp/nca-venv/bin/nca]
"""
import argparse, os, re, subprocess, sys, tempfile, time

def generate(d, ns, pods):
    inv = ["apiVersion: v1", "kind: List", "items:"]
    for n in range(ns):
        inv.append(f"- {{apiVersion: v1, kind: Namespace, metadata: {{name: ns{n}, labels: {{team: t{n % 3}, kubernetes.io/metadata.name: ns{n}}}}}}}")
    for n in range(ns):
        for p in range(pods):
            inv.append(f"- {{apiVersion: v1, kind: Pod, metadata: {{name: pod{p}, namespace: ns{n}, labels: {{pod: p{p % 5}}}}}, "
                       f"spec: {{nodeName: node-1, containers: [{{name: c, ports: [{{name: serve-80-tcp, containerPort: 80}}]}}]}}, "
                       f"status: {{podIP: 10.{n // 200}.{n % 200}.{p + 1}}}}}")
    pol = []
    def np(name, n, spec):
        pol.append(f"apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: ns{n}}}\nspec:\n{spec}")
    for n in range(ns):
        k = n % 5
        np(f"web-{n}", n, f"  podSelector: {{matchLabels: {{pod: p0}}}}\n  ingress:\n  - from:\n    - namespaceSelector: {{matchLabels: {{team: t{n % 3}}}}}\n    ports: [{{protocol: TCP, port: 80}}, {{protocol: TCP, port: 8000, endPort: 8100}}]\n")
        np(f"db-{n}", n, f"  podSelector: {{matchLabels: {{pod: p1}}}}\n  policyTypes: [Ingress, Egress]\n  ingress:\n  - from:\n    - podSelector: {{matchLabels: {{pod: p2}}}}\n    ports: [{{protocol: UDP, port: 81}}]\n  egress:\n  - to:\n    - namespaceSelector: {{}}\n    ports: [{{protocol: UDP, port: 53}}]\n")
        if k == 0:
            np(f"deny-all-{n}", n, "  podSelector: {}\n  ingress: []\n")
        elif k == 1:
            np(f"allow-all-{n}", n, "  podSelector: {}\n  ingress:\n  - {}\n")
        elif k == 2:
            np(f"no-egress-{n}", n, "  podSelector: {matchLabels: {pod: p3}}\n  policyTypes: [Egress]\n")
        else:
            np(f"from-ns-{n}", n, f"  podSelector: {{matchExpressions: [{{key: pod, operator: In, values: [p2, p4]}}]}}\n  ingress:\n  - from:\n    - namespaceSelector: {{matchExpressions: [{{key: kubernetes.io/metadata.name, operator: In, values: [ns{(n + 1) % ns}, ns{(n + 2) % ns}]}}]}}\n      podSelector: {{matchLabels: {{pod: p0}}}}\n")
        np(f"named-{n}", n, "  podSelector: {matchLabels: {pod: p4}}\n  ingress:\n  - ports: [{port: serve-80-tcp}]\n")
    with open(os.path.join(d, "inventory.yaml"), "w") as f:
        f.write("\n".join(inv) + "\n")
    with open(os.path.join(d, "policies.yaml"), "w") as f:
        f.write("---\n".join(pol))
    return len(pol)

ALL = {"TCP": [(0, 65535)], "UDP": [(0, 65535)], "SCTP": [(0, 65535)]}

def ranges(text):
    out = []
    for part in text.split(","):
        part = part.strip()
        if "-" in part:
            a, b = part.split("-")
            out.append((int(a), int(b)))
        elif part:
            out.append((int(part), int(part)))
    return merge(out)

def merge(rs):
    rs = sorted(rs)
    out = []
    for a, b in rs:
        if out and a <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out

def norm_sluice(conn):
    """`All connections` or `TCP 80,8000-8100; UDP 53; other protocols`."""
    if conn == "All connections":
        return ("all",)
    d = {}
    other = False
    for part in conn.split("; "):
        if part == "other protocols":
            other = True
            continue
        proto, rs = part.split(" ", 1)
        d[proto] = ranges(rs)
    return canon(d, other)

def canon(d, other):
    if other and all(d.get(p) == r for p, r in ALL.items()):
        return ("all",)
    return (tuple(sorted((p, tuple(r)) for p, r in d.items() if r)), other)

def norm_nca(conn):
    """nca: `All connections`, or `{protocols:TCP,dst_ports:80},{protocols:UDP,...}`."""
    conn = conn.strip()
    if conn == "All connections":
        return ("all",)
    d = {}
    other = False
    for m in re.finditer(r"\{([^}]*)\}", conn):
        fields = dict()
        for kv in re.finditer(r"(\w+):([^:]+?)(?=,\w+:|$)", m.group(1)):
            fields[kv.group(1)] = kv.group(2)
        protos = [p.strip() for p in fields.get("protocols", "").split(",") if p.strip()]
        ports = ranges(fields["dst_ports"]) if "dst_ports" in fields else [(0, 65535)]
        for p in protos:
            if p in ALL:
                d[p] = merge(d.get(p, []) + ports)
            else:
                other = True
    return canon(d, other)

def parse(lines, norm):
    out = {}
    for line in lines:
        m = re.match(r"^(\S+/\S+) => (\S+/\S+) : (.*)$", line.strip())
        if not m or m.group(1) == m.group(2):
            continue
        if "/" not in m.group(1) or "/" not in m.group(2) or m.group(1)[0].isdigit() or m.group(2)[0].isdigit():
            continue
        out[(m.group(1), m.group(2))] = norm(m.group(3))
    return out

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ns", type=int, default=50)
    ap.add_argument("--pods", type=int, default=40)
    ap.add_argument("--nca", default="/tmp/nca-venv/bin/nca")
    ap.add_argument("--sluice", default="target/release/sluice")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        npol = generate(d, a.ns, a.pods)
        inv, pol = os.path.join(d, "inventory.yaml"), os.path.join(d, "policies.yaml")
        t = time.time()
        s = subprocess.run([a.sluice, "matrix", "-p", pol, "-i", inv], capture_output=True, text=True)
        ts = time.time() - t
        if s.returncode != 0:
            sys.exit(f"sluice failed: {s.stderr}")
        t = time.time()
        n = subprocess.run([a.nca, "--connectivity", pol, "--pod_list", inv, "--ns_list", inv,
                            "-o", "txt_no_fw_rules", "--output_endpoints", "pods"], capture_output=True, text=True)
        tn = time.time() - t
        if n.returncode not in (0, 1):
            sys.exit(f"nca failed ({n.returncode}): {n.stderr[-2000:]}")
        sm = parse(s.stdout.splitlines(), norm_sluice)
        nm = parse(n.stdout.splitlines(), norm_nca)
        keys = set(sm) | set(nm)
        diff = [(k, sm.get(k), nm.get(k)) for k in sorted(keys) if sm.get(k) != nm.get(k)]
        pods = a.ns * a.pods
        print(f"input: {a.ns} namespaces x {a.pods} pods = {pods} pods, {npol} NetworkPolicies, {pods * (pods - 1)} ordered pod pairs")
        print(f"{'tool':<34} {'time':>9} {'connected pairs':>16}")
        print(f"{'sluice matrix':<34} {ts:>8.2f}s {len(sm):>16}")
        print(f"{'nca --connectivity (2.1.0)':<34} {tn:>8.2f}s {len(nm):>16}")
        print(f"ratio nca/sluice: {tn / ts:.1f}x")
        print(f"pairs that differ: {len(diff)}")
        for k, x, y in diff[:10]:
            print(f"  {k[0]} => {k[1]}: sluice {x}, nca {y}")

if __name__ == "__main__":
    main()
