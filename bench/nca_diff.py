#!/usr/bin/env python3
"""Side by side: `sluice diff` vs network-config-analyzer's `--semantic_diff`.

On the Kubernetes e2e model of bench/nca_compare.py (N namespaces x P pods,
NetworkPolicies in the e2e style), the head edits policies the way a pull
request does: the first E `web-*` policies widen their port range
8000-8100 to 8000-8200, the next one narrows it to 8000-8050, and the
first `deny-all-*` policy is deleted. Both
tools compare base and head over the same pods; the pod pairs and ports each
says are opened (nca: "added") and closed ("removed") are compared pair by
pair, and both are timed.

nca is a benchmark baseline only, installed into a virtualenv:
    python3 -m venv /tmp/nca-venv && /tmp/nca-venv/bin/pip install network-config-analyzer==2.1.0
Usage:
    python3 bench/nca_diff.py [--ns 20] [--pods 20] [--edits 5] [--nca /tmp/nca-venv/bin/nca]
"""
import argparse, json, os, re, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nca_compare import generate, merge, norm_nca  # noqa: E402


def edit(text, edits):
    docs = text.split("---\n")
    widened = 0
    narrowed = False
    deleted = False
    out = []
    for d in docs:
        if "name: web-" in d and "endPort: 8100" in d:
            if widened < edits:
                d = d.replace("endPort: 8100", "endPort: 8200")
                widened += 1
            elif not narrowed:
                d = d.replace("endPort: 8100", "endPort: 8050")
                narrowed = True
        if not deleted and "name: deny-all-" in d:
            deleted = True
            continue
        out.append(d)
    return "---\n".join(out)


def sluice_pairs(doc):
    """{kind: {(src, dst): {proto: ranges}}} for pod pairs."""
    out = {"opened": {}, "closed": {}}
    for c in doc["changes"]:
        if c["kind"] not in out:
            continue
        for a in c["from"]["members"]:
            for b in c["to"]["members"]:
                if a == b or "/" not in a or "/" not in b:
                    continue
                d = out[c["kind"]].setdefault((a, b), {})
                for p in c["ports"]:
                    rs = [(r["from"], r["to"]) for r in p["ranges"]]
                    d[p["protocol"]] = merge(d.get(p["protocol"], []) + rs)
    return {k: {pair: canon(d) for pair, d in v.items()} for k, v in out.items()}


def canon(d):
    # ICMP is "other protocols" for nca's output.
    other = "ICMP" in d
    ports = {p: r for p, r in d.items() if p != "ICMP"}
    return (tuple(sorted((p, tuple(r)) for p, r in ports.items() if r)), other)


def nca_pairs(text):
    out = {"opened": {}, "closed": {}}
    section = None
    for line in text.splitlines():
        if line.startswith("Added connections"):
            section = "opened"
            continue
        if line.startswith("Removed connections"):
            section = "closed"
            continue
        m = re.match(r"^(\S+/\S+) => (\S+/\S+) : (.*)$", line.strip())
        if section and m and m.group(1) != m.group(2):
            n = norm_nca(m.group(3))
            if n == ("all",):
                n = ((("SCTP", ((0, 65535),)), ("TCP", ((0, 65535),)), ("UDP", ((0, 65535),))), True)
            out[section][(m.group(1), m.group(2))] = n
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ns", type=int, default=20)
    ap.add_argument("--pods", type=int, default=20)
    ap.add_argument("--edits", type=int, default=5)
    ap.add_argument("--nca", default="/tmp/nca-venv/bin/nca")
    ap.add_argument("--sluice", default="target/release/sluice")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        npol = generate(d, a.ns, a.pods)
        inv, base = os.path.join(d, "inventory.yaml"), os.path.join(d, "policies.yaml")
        head = os.path.join(d, "head.yaml")
        with open(base) as f, open(head, "w") as g:
            g.write(edit(f.read(), a.edits))
        t = time.time()
        s = subprocess.run([a.sluice, "diff", "--base", base, "--head", head, "-i", inv, "-o", "json"],
                           capture_output=True, text=True)
        ts = time.time() - t
        if s.returncode != 0:
            sys.exit(f"sluice failed: {s.stderr}")
        t = time.time()
        n = subprocess.run([a.nca, "--semantic_diff", head, "--base_np_list", base, "--pod_list", inv,
                            "--ns_list", inv, "-o", "txt_no_fw_rules", "--output_endpoints", "pods"],
                           capture_output=True, text=True)
        tn = time.time() - t
        if n.returncode < 0:
            sys.exit(f"nca failed ({n.returncode}): {n.stderr[-2000:]}")
        sp, np_ = sluice_pairs(json.loads(s.stdout)), nca_pairs(n.stdout)
        pods = a.ns * a.pods
        print(f"input: {a.ns} namespaces x {a.pods} pods = {pods} pods, {npol} NetworkPolicies; "
              f"head: {a.edits} port ranges widened, 1 narrowed, 1 policy deleted")
        print(f"{'tool':<34} {'time':>9} {'opened pairs':>13} {'closed pairs':>13}")
        print(f"{'sluice diff':<34} {ts:>8.2f}s {len(sp['opened']):>13} {len(sp['closed']):>13}")
        print(f"{'nca --semantic_diff (2.1.0)':<34} {tn:>8.2f}s {len(np_['opened']):>13} {len(np_['closed']):>13}")
        print(f"ratio nca/sluice: {tn / ts:.1f}x")
        for kind in ("opened", "closed"):
            x, y = sp[kind], np_[kind]
            diff = [(k, x.get(k), y.get(k)) for k in sorted(set(x) | set(y)) if x.get(k) != y.get(k)]
            print(f"{kind} pairs that differ: {len(diff)}")
            for k, u, v in diff[:5]:
                print(f"  {k[0]} => {k[1]}: sluice {u}, nca {v}")


if __name__ == "__main__":
    main()
