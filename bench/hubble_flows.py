#!/usr/bin/env python3
"""Writes `hubble observe -o json` lines between the pods of an inventory.

Records have the fields real Hubble output carries (time, uuid, endpoints
with identities and labels, workloads, L4 with flags, verdict, direction,
is_reply, Summary), so that a line is the size of a real one (~1 KB): the
streaming benchmark in BENCHMARKS.md reads them.

    bench/hubble_flows.py INVENTORY.yaml COUNT > flows.jsonl
"""
import json
import random
import re
import sys


def pods(path):
    out = []
    text = open(path).read()
    for m in re.finditer(r"kind: Pod, metadata: \{name: ([^,]+), namespace: ([^,]+), labels: \{([^}]*)\}\}.*?podIP: ([0-9.]+)", text):
        labels = dict(kv.split(": ", 1) for kv in m.group(3).split(", ") if ": " in kv)
        out.append((m.group(2), m.group(1), labels, m.group(4)))
    return out


def endpoint(ns, name, labels, ident):
    return {
        "ID": 1000 + ident % 3000,
        "identity": ident,
        "cluster_name": "default",
        "namespace": ns,
        "labels": [f"k8s:{k}={v}" for k, v in sorted(labels.items())]
        + [f"k8s:io.kubernetes.pod.namespace={ns}"],
        "pod_name": name,
        "workloads": [{"name": name.rsplit("-", 1)[0], "kind": "Deployment"}],
    }


def main():
    inv, count = sys.argv[1], int(sys.argv[2])
    ps = pods(inv)
    if not ps:
        sys.exit(f"no pods with IPs in {inv}")
    rnd = random.Random(7)
    ports = [80, 443, 5432, 8080, 9090, 6379, 53, 3306]
    w = sys.stdout.write
    for i in range(count):
        s, d = rnd.choice(ps), rnd.choice(ps)
        port = rnd.choice(ports)
        dropped = rnd.random() < 0.3
        rec = {
            "flow": {
                "time": f"2026-11-30T10:{i // 60000 % 60:02d}:{i // 1000 % 60:02d}.{i % 1000:03d}512Z",
                "uuid": f"{rnd.getrandbits(128):032x}",
                "verdict": "DROPPED" if dropped else "FORWARDED",
                **({"drop_reason": 133, "drop_reason_desc": "POLICY_DENIED"} if dropped else {}),
                "ethernet": {"source": "9e:1a:22:0b:4c:01", "destination": "5a:0f:3e:71:aa:12"},
                "IP": {"source": s[3], "destination": d[3], "ipVersion": "IPv4"},
                "l4": {"TCP": {"source_port": 30000 + rnd.randrange(30000), "destination_port": port, "flags": {"SYN": True}}},
                "source": endpoint(s[0], s[1], s[2], 256 + hash(tuple(sorted(s[2].items()))) % 4000),
                "destination": endpoint(d[0], d[1], d[2], 256 + hash(tuple(sorted(d[2].items()))) % 4000),
                "Type": "L3_L4",
                "node_name": f"node-{rnd.randrange(20)}",
                "event_type": {"type": 1 if dropped else 4, **({} if dropped else {"sub_type": 3})},
                "traffic_direction": "INGRESS",
                "is_reply": False,
                "Summary": f"TCP Flags: SYN",
            },
            "node_name": "node-0",
            "time": "2026-11-30T10:00:00.000000512Z",
        }
        w(json.dumps(rec, separators=(",", ":")))
        w("\n")


main()
