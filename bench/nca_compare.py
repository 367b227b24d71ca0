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
                                 [--shared-labels] [--keep DIR] [--no-nca]
"""
import argparse, os, re, subprocess, sys, tempfile, time

def generate(d, ns, pods, shared=False):
    """The e2e model scaled up. By default each pod has labels of its own
    (`pod: pN`, as upstream's model labels pods a, b, c) and each policy
    its own ports, so identities and port boundaries grow with the input
    as in a real cluster; `shared` is the earlier, friendlier variant
    (five pod labels, a handful of ports)."""
    inv = ["apiVersion: v1", "kind: List", "items:"]
    for n in range(ns):
        inv.append(f"- {{apiVersion: v1, kind: Namespace, metadata: {{name: ns{n}, labels: {{team: t{n % 3}, kubernetes.io/metadata.name: ns{n}}}}}}}")
    for n in range(ns):
        for p in range(pods):
            labels = f"pod: p{p % 5}" if shared else f"pod: p{p}, app: a{p % 8}"
            inv.append(f"- {{apiVersion: v1, kind: Pod, metadata: {{name: pod{p}, namespace: ns{n}, labels: {{{labels}}}}}, "
                       f"spec: {{nodeName: node-1, containers: [{{name: c, ports: [{{name: serve-80-tcp, containerPort: 80}}]}}]}}, "
                       f"status: {{podIP: 10.{n // 200}.{n % 200}.{p + 1}}}}}")
    pol = []
    def np(name, n, spec):
        pol.append(f"apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: ns{n}}}\nspec:\n{spec}")
    if shared:
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
    else:
        for n in range(ns):
            k = n % 5
            np(f"web-{n}", n, f"  podSelector: {{matchLabels: {{pod: p{n % pods}}}}}\n  ingress:\n  - from:\n    - namespaceSelector: {{matchLabels: {{team: t{n % 3}}}}}\n    ports: [{{protocol: TCP, port: {80 + n}}}, {{protocol: TCP, port: {8000 + 10 * n}, endPort: {8005 + 10 * n}}}]\n")
            np(f"db-{n}", n, f"  podSelector: {{matchLabels: {{app: a{n % 8}}}}}\n  policyTypes: [Ingress, Egress]\n  ingress:\n  - from:\n    - podSelector: {{matchLabels: {{app: a{(n + 1) % 8}}}}}\n    ports: [{{protocol: UDP, port: {1000 + n}}}]\n  egress:\n  - to:\n    - namespaceSelector: {{}}\n    ports: [{{protocol: UDP, port: 53}}, {{protocol: TCP, port: {5000 + n}}}]\n")
            if k == 0:
                np(f"deny-all-{n}", n, "  podSelector: {}\n  ingress: []\n")
            elif k == 1:
                np(f"allow-all-{n}", n, "  podSelector: {}\n  ingress:\n  - {}\n")
            elif k == 2:
                np(f"no-egress-{n}", n, f"  podSelector: {{matchLabels: {{pod: p{(n + 3) % pods}}}}}\n  policyTypes: [Egress]\n")
            else:
                np(f"from-ns-{n}", n, f"  podSelector: {{matchExpressions: [{{key: app, operator: In, values: [a{n % 8}, a{(n + 2) % 8}]}}]}}\n  ingress:\n  - from:\n    - namespaceSelector: {{matchExpressions: [{{key: kubernetes.io/metadata.name, operator: In, values: [ns{(n + 1) % ns}, ns{(n + 2) % ns}]}}]}}\n      podSelector: {{matchLabels: {{pod: p{n % pods}}}}}\n    ports: [{{protocol: TCP, port: {3000 + n}}}]\n")
            np(f"named-{n}", n, f"  podSelector: {{matchLabels: {{app: a{(n + 3) % 8}}}}}\n  ingress:\n  - ports: [{{port: serve-80-tcp}}, {{protocol: SCTP, port: {7000 + n}}}]\n")
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
        # nca writes one line per protocol group of a pair: join them.
        key = (m.group(1), m.group(2))
        out[key] = out[key] + "," + m.group(3) if key in out else m.group(3)
    return {k: norm(v) for k, v in out.items()}

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ns", type=int, default=50)
    ap.add_argument("--pods", type=int, default=40)
    ap.add_argument("--nca", default="/tmp/nca-venv/bin/nca")
    ap.add_argument("--sluice", default="target/release/sluice")
    ap.add_argument("--shared-labels", action="store_true", help="the earlier, friendlier generator")
    ap.add_argument("--keep", help="write the inputs to this directory and keep them")
    ap.add_argument("--no-nca", action="store_true", help="run sluice only")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        d = a.keep or tmp
        os.makedirs(d, exist_ok=True)
        npol = generate(d, a.ns, a.pods, a.shared_labels)
        inv, pol = os.path.join(d, "inventory.yaml"), os.path.join(d, "policies.yaml")
        s_out, s_rc, ts, s_kb = run([a.sluice, "matrix", "-p", pol, "-i", inv])
        if s_rc != 0:
            sys.exit("sluice failed")
        sm = parse(s_out.splitlines(), norm_sluice)
        pods = a.ns * a.pods
        print(f"input: {a.ns} namespaces x {a.pods} pods = {pods} pods, {npol} NetworkPolicies, {pods * (pods - 1)} ordered pod pairs")
        print(f"{'tool':<34} {'time':>9} {'peak RSS':>10} {'connected pairs':>16}")
        print(f"{'sluice matrix':<34} {ts:>8.2f}s {s_kb / 1024:>8.0f}MB {len(sm):>16}")
        if a.no_nca:
            return
        n_out, n_rc, tn, n_kb = run([a.nca, "--connectivity", pol, "--pod_list", inv, "--ns_list", inv,
                                     "-o", "txt_no_fw_rules", "--output_endpoints", "pods"])
        if n_rc not in (0, 1):
            sys.exit(f"nca failed ({n_rc})")
        nm = parse(n_out.splitlines(), norm_nca)
        keys = set(sm) | set(nm)
        diff = [(k, sm.get(k), nm.get(k)) for k in sorted(keys) if sm.get(k) != nm.get(k)]
        print(f"{'nca --connectivity (2.1.0)':<34} {tn:>8.2f}s {n_kb / 1024:>8.0f}MB {len(nm):>16}")
        print(f"ratio nca/sluice: {tn / ts:.1f}x")
        print(f"pairs that differ: {len(diff)}")
        for k, x, y in diff[:10]:
            print(f"  {k[0]} => {k[1]}: sluice {x}, nca {y}")

def run(cmd):
    """Output, exit code, wall seconds and peak RSS (KB) of one command."""
    t = time.time()
    with tempfile.TemporaryFile() as out:
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(p.pid, 0)
        secs = time.time() - t
        out.seek(0)
        text = out.read().decode()
    return text, os.waitstatus_to_exitcode(status), secs, usage.ru_maxrss

if __name__ == "__main__":
    main()
