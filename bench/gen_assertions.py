#!/usr/bin/env python3
"""Writes the assertions of the `verify` benchmark (BENCHMARKS.md) for the
diff benchmark's cluster (`simulator/benches/diff.rs` with
SLUICE_BENCH_DIR): namespaces ns0..ns99, pods labelled app0..app19.

A quarter of each form: from/to/expect denied between two apps of two
namespaces on 8080/TCP; `only` (one app the only client of another on
5432/TCP); `isolated` (a namespace from world); `covered` (ingress of a
namespace).

    python3 bench/gen_assertions.py 200 > /tmp/bench-diff/assertions.yaml
    python3 bench/gen_assertions.py 50 20 > /tmp/exp-1000/assertions.yaml   # 20 namespaces
"""
import sys


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    spaces = int(sys.argv[2]) if len(sys.argv) > 2 else 100
    out = ["assertions:"]
    for i in range(n):
        ns, other = f"ns{i % spaces}", f"ns{(i * 7 + 3) % spaces}"
        app, peer = f"app{i % 20}", f"app{(i + 5) % 20}"
        form = i % 4
        if form == 0:
            out += [
                f"- name: {ns} {app} does not reach {other} {peer} on 8080",
                f"  from: ns={ns},app={app}",
                f"  to: ns={other},app={peer}",
                "  ports: [8080/TCP]",
                "  expect: denied",
            ]
        elif form == 1:
            out += [
                f"- name: only {app} of {ns} reaches {peer} on 5432",
                "  only:",
                f"    from: ns={ns},app={app}",
                f"    to: ns={ns},app={peer}",
                "    ports: [5432/TCP]",
            ]
        elif form == 2:
            out += [
                f"- name: {ns} is isolated from the internet ({i})",
                "  isolated:",
                f"    namespace: {ns}",
                "    from: world",
            ]
        else:
            out += [
                f"- name: every pod of {ns} has ingress policy ({i})",
                "  covered:",
                "    direction: ingress",
                f"    of: ns={ns}",
            ]
    print("\n".join(out))


if __name__ == "__main__":
    main()
