//! The generated cluster the benchmarks share: `N` namespaces of 200
//! pods with 20 apps each (so pods / 10 identities), on 50 nodes, and
//! policies that select an app and allow two others (one cross-namespace)
//! on ports including a named port, egress to a database port, a CIDR set
//! with `except` and an entity; every tenth is a NetworkPolicy with a
//! namespaceSelector and a port range.

use std::fmt::Write;

pub const APPS: usize = 20;

pub fn inventory_yaml(pods: usize) -> String {
    let per_ns = 200.min(pods);
    let namespaces = pods.div_ceil(per_ns);
    let mut s = String::from("apiVersion: v1\nkind: List\nitems:\n");
    for n in 0..namespaces {
        let _ = writeln!(s, "- {{apiVersion: v1, kind: Namespace, metadata: {{name: ns{n}, labels: {{team: t{}}}}}}}", n % 7);
    }
    for i in 0..50 {
        let _ = writeln!(s, "- {{apiVersion: v1, kind: Node, metadata: {{name: node{i}}}, status: {{addresses: [{{type: InternalIP, address: 192.168.{}.{}}}]}}}}", i / 200, i % 200 + 1);
    }
    for p in 0..pods {
        let (n, k) = (p / per_ns, p % per_ns);
        let _ = writeln!(
            s,
            "- {{apiVersion: v1, kind: Pod, metadata: {{name: pod{k}, namespace: ns{n}, labels: {{app: app{}, pod-template-hash: h{k}}}}}, spec: {{nodeName: node{}, containers: [{{name: c, ports: [{{name: http, containerPort: 8080}}]}}]}}, status: {{podIP: 10.{}.{}.{}}}}}",
            k % APPS,
            p % 50,
            n / 250,
            n % 250,
            k + 1
        );
    }
    s
}

pub fn policies_yaml(policies: usize, namespaces: usize) -> String {
    let mut s = String::new();
    for i in 0..policies {
        let n = i % namespaces;
        let a = (i / namespaces) % APPS;
        if i % 10 == 9 {
            let _ = write!(
                s,
                "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: np{i}, namespace: ns{n}}}\nspec:\n  podSelector: {{matchLabels: {{app: app{a}}}}}\n  ingress:\n  - from:\n    - namespaceSelector: {{matchLabels: {{team: t{}}}}}\n    ports: [{{port: 8080}}, {{port: 9000, endPort: 9100}}]\n",
                i % 7
            );
            continue;
        }
        let _ = write!(
            s,
            "---\napiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {{name: p{i}, namespace: ns{n}}}\nspec:\n  endpointSelector: {{matchLabels: {{app: app{a}}}}}\n  ingress:\n  - fromEndpoints: [{{matchLabels: {{app: app{}}}}}]\n    toPorts: [{{ports: [{{port: \"8080\", protocol: TCP}}, {{port: http}}]}}]\n  - fromEndpoints: [{{matchLabels: {{app: app{}, k8s:io.kubernetes.pod.namespace: ns{}}}}}]\n    toPorts: [{{ports: [{{port: \"8443\", protocol: TCP}}]}}]\n  egress:\n  - toEndpoints: [{{matchLabels: {{app: app{}}}}}]\n    toPorts: [{{ports: [{{port: \"5432\", protocol: TCP}}]}}]\n  - toCIDRSet: [{{cidr: 172.{}.0.0/16, except: [172.{}.1.0/24]}}]\n  - toEntities: [kube-apiserver]\n",
            (a + 1) % APPS,
            (a + 2) % APPS,
            (n + 1) % namespaces,
            (a + 3) % APPS,
            16 + i % 16,
            16 + i % 16
        );
    }
    s
}
