//! The connectivity graph of a compiled state: security identities as
//! nodes, an edge A → B when traffic from A to B is allowed on some port,
//! labelled with those ports. An edge between two endpoints needs both A's
//! egress and B's ingress to allow it; an edge from or to an identity that
//! is not an endpoint (world, a CIDR, the host) needs only the endpoint's
//! side. Verdicts come from `PolicyMap::lookup`, the datapath's own
//! procedure, evaluated at every point where an entry's port range starts
//! or ends, so the port sets are exact.
//!
//! Backs the reachability rules (`exposed-to-world`) and `sluice graph`
//! (DOT and Mermaid).

use compiler::compile::Compiled;
use compiler::identity::{WORLD, WORLD_IPV4, WORLD_IPV6};
use compiler::mapstate::{proto_name, PolicyMap};
use petgraph::graphmap::DiGraphMap;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

/// The 24-bit protocol+port space of map keys.
const SPACE: u32 = 1 << 24;

pub struct Graph {
    /// Node weights are identities; edge weights index `ports`.
    pub graph: DiGraphMap<u32, usize>,
    pub ports: Vec<Vec<String>>,
    names: BTreeMap<u32, String>,
    /// The endpoint standing for each endpoint identity.
    rep: BTreeMap<u32, usize>,
}

/// Allowed intervals of the 24-bit space for one (map, identity, direction),
/// intersected with an optional second one.
fn allowed(a: (&PolicyMap, u32, bool), b: Option<(&PolicyMap, u32, bool)>) -> Vec<(u32, u32)> {
    let mut cuts: BTreeSet<u32> = BTreeSet::from([0]);
    for (m, id, egress) in std::iter::once(a).chain(b) {
        for k in m.entries.keys() {
            if k.egress != egress || (k.identity != id && k.identity != 0) {
                continue;
            }
            let start = (u32::from(k.proto) << 16) | u32::from(k.dport);
            let size = 1u32 << (24 - u32::from(k.plen));
            cuts.insert(start);
            if start + size < SPACE {
                cuts.insert(start + size);
            }
        }
    }
    let cuts: Vec<u32> = cuts.into_iter().collect();
    let ok = |(m, id, egress): (&PolicyMap, u32, bool), bits: u32| {
        m.lookup(id, egress, (bits >> 16) as u8, (bits & 0xffff) as u16)
            .is_some_and(|h| !h.entry.deny)
    };
    let mut out: Vec<(u32, u32)> = Vec::new();
    for (i, &lo) in cuts.iter().enumerate() {
        let hi = cuts.get(i + 1).map_or(SPACE - 1, |n| n - 1);
        if ok(a, lo) && b.is_none_or(|b| ok(b, lo)) {
            match out.last_mut() {
                Some(last) if last.1 + 1 == lo => last.1 = hi,
                _ => out.push((lo, hi)),
            }
        }
    }
    out
}

/// `80/TCP`, `8000-8080/TCP`, `UDP`, `any`.
fn port_texts(intervals: &[(u32, u32)]) -> Vec<String> {
    let mut out = Vec::new();
    for &(lo, hi) in intervals {
        if lo == 0 && hi == SPACE - 1 {
            out.push("any".to_owned());
            continue;
        }
        let (mut p, last) = (lo >> 16, hi >> 16);
        while p <= last {
            let from = if p == lo >> 16 { lo & 0xffff } else { 0 };
            let to = if p == last { hi & 0xffff } else { 0xffff };
            let name = proto_name(p as u8);
            if p == 0 {
                // Protocol 0 is no protocol on the wire: entries for it
                // only exist as parts of wildcards.
            } else if from == 0 && to == 0xffff {
                out.push(name);
            } else if from == to {
                out.push(format!("{from}/{name}"));
            } else {
                out.push(format!("{from}-{to}/{name}"));
            }
            p += 1;
        }
    }
    out
}

/// Ports on which traffic from outside the cluster (the world identities)
/// passes an endpoint's ingress, by its policy map.
pub fn world_ports(m: &PolicyMap) -> Vec<String> {
    [WORLD, WORLD_IPV4, WORLD_IPV6]
        .iter()
        .flat_map(|&w| port_texts(&allowed((m, w, false), None)))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

impl Graph {
    pub fn build(c: &Compiled) -> Graph {
        let mut g = Graph {
            graph: DiGraphMap::new(),
            ports: Vec::new(),
            names: BTreeMap::new(),
            rep: BTreeMap::new(),
        };
        for (i, e) in c.endpoints.iter().enumerate() {
            g.rep.entry(e.identity).or_insert(i);
        }
        // Identities that entries name, plus the endpoints'.
        let mut others: BTreeSet<u32> = BTreeSet::new();
        for m in &c.maps {
            for k in m.entries.keys().filter(|k| k.identity != 0) {
                if !g.rep.contains_key(&k.identity) {
                    others.insert(k.identity);
                }
            }
        }
        others.insert(WORLD);
        for &id in g.rep.keys().chain(others.iter()) {
            g.graph.add_node(id);
            let name = match g.rep.get(&id) {
                Some(&i) => {
                    let n = &c.endpoints[i].name;
                    let same = c.endpoints.iter().filter(|e| e.identity == id).count();
                    if same > 1 {
                        format!("{n} (+{} more)", same - 1)
                    } else {
                        n.clone()
                    }
                }
                None => match (
                    compiler::identity::reserved_name(id),
                    c.identity(id).map(|i| &i.kind),
                ) {
                    (Some(n), _) => n.to_owned(),
                    (None, Some(compiler::identity::IdKind::Cidr { prefix })) => prefix.clone(),
                    (None, Some(compiler::identity::IdKind::Node { node })) => {
                        format!("node {node}")
                    }
                    _ => format!("identity {id}"),
                },
            };
            g.names.insert(id, name);
        }
        let endpoint_ids: Vec<u32> = g.rep.keys().copied().collect();
        let all_ids: Vec<u32> = g.graph.nodes().collect();
        for &dst in &endpoint_ids {
            let de = &c.endpoints[g.rep[&dst]];
            let dmap = &c.maps[de.map];
            for &src in &all_ids {
                if src == dst {
                    continue;
                }
                let ingress = (dmap, src, false);
                let egress = g
                    .rep
                    .get(&src)
                    .map(|&i| (&c.maps[c.endpoints[i].map], dst, true));
                let iv = allowed(ingress, egress);
                g.edge(src, dst, &iv);
            }
            // Endpoint to non-endpoint identities: the egress side only.
            for &other in others.iter() {
                let iv = allowed((dmap, other, true), None);
                g.edge(dst, other, &iv);
            }
        }
        g
    }

    fn edge(&mut self, a: u32, b: u32, iv: &[(u32, u32)]) {
        let texts = port_texts(iv);
        if texts.is_empty() {
            return;
        }
        self.ports.push(texts);
        self.graph.add_edge(a, b, self.ports.len() - 1);
    }

    fn name(&self, id: u32) -> &str {
        self.names.get(&id).map_or("?", String::as_str)
    }

    /// The graph as a document (`sluice graph -o json|yaml`): nodes with
    /// their names, whether they are endpoints, and edges with their ports.
    pub fn to_json(&self) -> serde_json::Value {
        let nodes: Vec<serde_json::Value> = self
            .graph
            .nodes()
            .map(|id| {
                serde_json::json!({
                    "identity": id,
                    "name": self.name(id),
                    "endpoint": self.rep.contains_key(&id),
                })
            })
            .collect();
        let edges: Vec<serde_json::Value> = self
            .graph
            .all_edges()
            .map(|(a, b, &e)| serde_json::json!({"from": a, "to": b, "ports": self.ports[e]}))
            .collect();
        serde_json::json!({"schemaVersion": 1, "nodes": nodes, "edges": edges})
    }

    /// Graphviz DOT.
    pub fn dot(&self) -> String {
        let mut o = String::from(
            "digraph sluice {\n  rankdir=LR;\n  node [shape=box, fontname=\"monospace\"];\n",
        );
        for id in self.graph.nodes() {
            let shape = if self.rep.contains_key(&id) {
                "box"
            } else {
                "ellipse"
            };
            let _ = writeln!(
                o,
                "  n{id} [label=\"{}\\n({id})\", shape={shape}];",
                self.name(id).replace('"', "\\\"")
            );
        }
        for (a, b, &e) in self.graph.all_edges() {
            let _ = writeln!(
                o,
                "  n{a} -> n{b} [label=\"{}\"];",
                self.ports[e].join(", ")
            );
        }
        o.push_str("}\n");
        o
    }

    /// A Mermaid flowchart.
    pub fn mermaid(&self) -> String {
        let mut o = String::from("flowchart LR\n");
        for id in self.graph.nodes() {
            let label = self.name(id).replace('"', "#quot;");
            if self.rep.contains_key(&id) {
                let _ = writeln!(o, "  n{id}[\"{label} ({id})\"]");
            } else {
                let _ = writeln!(o, "  n{id}([\"{label} ({id})\"])");
            }
        }
        for (a, b, &e) in self.graph.all_edges() {
            let _ = writeln!(o, "  n{a} -->|\"{}\"| n{b}", self.ports[e].join(", "));
        }
        o
    }
}
