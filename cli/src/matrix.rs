//! `sluice matrix`: the pod-to-pod connectivity matrix, streamed from the
//! simulator's classes (`simulator::matrix`), pod by pod or grouped, and
//! filtered by source, destination and port.

use crate::commands::{load, warn_without_inventory};
use crate::output::{Doc, ListDoc};
use crate::Inputs;
use simulator::flow::{self, PeerRef, PodNames};
use simulator::matrix::{Allowed, Matrix, PORT_PROTOCOLS};
use std::collections::HashMap;
use std::io::Write;
use std::process::ExitCode;

/// How `--by` groups pods.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum GroupBy {
    /// Pods of one security identity (same labels and namespace).
    Identity,
    /// Pods of one Deployment, StatefulSet, DaemonSet, Job or CronJob
    /// (a pod without one is its own group).
    Workload,
    Namespace,
}

impl GroupBy {
    fn name(self) -> &'static str {
        match self {
            GroupBy::Identity => "identity",
            GroupBy::Workload => "workload",
            GroupBy::Namespace => "namespace",
        }
    }
}

/// What a person asked of the matrix besides the inputs.
pub struct Query<'a> {
    pub by: Option<GroupBy>,
    pub from: Option<&'a str>,
    pub to: Option<&'a str>,
    pub port: Option<&'a str>,
    pub doc: Option<Doc>,
}

/// `80`, `53/UDP`, `8000-8100/TCP`: ports of one protocol (TCP without
/// one, as `trace --port`).
fn port_filter(text: &str) -> Result<Allowed, String> {
    let bad = || {
        format!("--port must be N, N-M, N/PROTO or N-M/PROTO (PROTO: TCP, UDP, SCTP), got `{text}`")
    };
    let (ports, proto) = match text.split_once('/') {
        Some((n, p)) => (n, flow::protocol_number(p).ok_or_else(bad)?),
        None => (text, 6),
    };
    let name = PORT_PROTOCOLS
        .iter()
        .find(|(p, _)| *p == proto)
        .map(|(_, n)| *n)
        .ok_or_else(bad)?;
    let (lo, hi) = match ports.split_once('-') {
        Some((a, b)) => (a.trim().parse::<u16>(), b.trim().parse::<u16>()),
        None => (ports.trim().parse::<u16>(), ports.trim().parse::<u16>()),
    };
    match (lo, hi) {
        (Ok(lo), Ok(hi)) if lo <= hi => Ok(Allowed {
            ports: [(name, vec![(lo, hi)])].into_iter().collect(),
            other: false,
        }),
        _ => Err(bad()),
    }
}

/// The pods a `--from`/`--to` names: a pod, a workload, or a label
/// selector (`ns=shop,app=web`).
fn pods_named(text: &str, names: &PodNames) -> Result<Vec<String>, String> {
    match PeerRef::parse(text)? {
        PeerRef::Pod(name) => match names.several(&name) {
            Some(pods) => pods,
            None => names
                .resolve(&name)
                .map(|p| vec![p])
                .map_err(|(msg, help)| format!("{msg} ({help})")),
        },
        _ => Err(format!(
            "`{text}`: the matrix is between pods; name a pod, a workload or a selector (ns=NS,key=value)"
        )),
    }
}

pub fn matrix(inputs: &Inputs, q: &Query, color: bool) -> ExitCode {
    let only = match q.port.map(port_filter).transpose() {
        Ok(p) => p.unwrap_or_else(Allowed::all),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let s = match load(inputs, color) {
        Ok(s) => s,
        Err(code) => return code,
    };
    warn_without_inventory(inputs);
    let c = &s.compiled;
    let names = PodNames::new(&s.inventory);
    let mut sides = Vec::new();
    for sel in [q.from, q.to] {
        match sel.map(|t| pods_named(t, &names)).transpose() {
            Ok(v) => sides.push(v.map(|v| v.into_iter().collect::<std::collections::HashSet<_>>())),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        }
    }
    crate::progress::stage("grouping pods into classes", 0);
    let mut m = Matrix::within(c, &only);
    let pods = m.pods().to_vec();
    // Positions (in `pods`) of the sources and destinations asked for.
    let pick = |set: &Option<std::collections::HashSet<String>>| -> Vec<usize> {
        (0..pods.len())
            .filter(|&i| {
                set.as_ref()
                    .is_none_or(|s| s.contains(&c.endpoints[pods[i]].name))
            })
            .collect()
    };
    let (srcs, dsts) = (pick(&sides[0]), pick(&sides[1]));
    crate::progress::stage(
        format!(
            "judging {} of {}",
            crate::commands::plural_count(m.class_count(), "class", "classes"),
            crate::commands::plural_count(pods.len(), "pod", "pods"),
        )
        .as_str(),
        srcs.len() as u64,
    );
    let out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let r = match q.by {
        None => pairs(&mut m, &srcs, &dsts, q.doc, out),
        Some(by) => {
            let group = groups(&s.inventory, c, &pods, by);
            grouped(&mut m, &srcs, &dsts, &group, by, q.doc, out)
        }
    };
    crate::progress::clear();
    if let Err(e) = r {
        crate::stdout_failed(&e);
    }
    drop(m);
    s.leave();
    ExitCode::SUCCESS
}

/// Where rows go: lines of text, or items of a document.
enum Sink<W: Write> {
    Text(W),
    Doc(ListDoc<W>),
}

impl<W: Write> Sink<W> {
    fn open(
        out: W,
        doc: Option<Doc>,
        head: serde_json::Value,
        key: &'static str,
    ) -> std::io::Result<Self> {
        Ok(match doc {
            Some(d) => Sink::Doc(ListDoc::begin(out, d, &head, key)?),
            None => Sink::Text(out),
        })
    }

    fn close(self) -> std::io::Result<()> {
        match self {
            Sink::Text(mut w) => w.flush(),
            Sink::Doc(l) => l.end()?.flush(),
        }
    }
}

/// Texts of interned sets, made once each.
struct Texts(Vec<Option<String>>);

impl Texts {
    fn get<'a>(&'a mut self, m: &Matrix, i: u32) -> &'a str {
        let i = i as usize;
        if self.0.len() <= i {
            self.0.resize(i + 1, None);
        }
        self.0[i].get_or_insert_with(|| m.set(i as u32).text())
    }
}

/// One line (or document item) per connected pair of pods, sources in
/// endpoint order.
fn pairs(
    m: &mut Matrix,
    srcs: &[usize],
    dsts: &[usize],
    doc: Option<Doc>,
    out: impl Write,
) -> std::io::Result<()> {
    let c = m.compiled();
    let pods = m.pods().to_vec();
    let mut sink = Sink::open(out, doc, serde_json::json!({"schemaVersion": 1}), "pairs")?;
    let mut texts = Texts(Vec::new());
    let mut row = Vec::new();
    let mut last_class = usize::MAX;
    for &a in srcs {
        crate::progress::tick(1);
        let ca = m.class_of(a);
        if ca != last_class {
            m.row(ca, &mut row);
            last_class = ca;
        }
        let from = &c.endpoints[pods[a]].name;
        for &b in dsts {
            if a == b {
                continue;
            }
            let set = row[m.class_of(b)];
            if m.set(set).is_none() {
                continue;
            }
            let to = &c.endpoints[pods[b]].name;
            match &mut sink {
                Sink::Doc(l) => {
                    l.item(serde_json::json!({"from": from, "to": to, "allowed": m.set(set)}))?
                }
                Sink::Text(w) => writeln!(w, "{from} => {to} : {}", texts.get(m, set))?,
            }
        }
    }
    sink.close()
}

/// The group of each pod (by position), as a name.
fn groups(
    inv: &compiler::inventory::Inventory,
    c: &compiler::compile::Compiled,
    pods: &[usize],
    by: GroupBy,
) -> Vec<String> {
    let workload: HashMap<String, String> = match by {
        GroupBy::Workload => inv
            .pods
            .iter()
            .filter_map(|p| {
                let w = p.workload.as_ref()?;
                Some((p.qualified_name(), format!("{}/{}", p.namespace, w.name)))
            })
            .collect(),
        _ => HashMap::new(),
    };
    pods.iter()
        .map(|&i| {
            let e = &c.endpoints[i];
            match by {
                GroupBy::Namespace => e.name.split('/').next().unwrap_or_default().to_owned(),
                GroupBy::Workload => workload
                    .get(&e.name)
                    .cloned()
                    .unwrap_or_else(|| e.name.clone()),
                GroupBy::Identity => simulator::eval::identity_name(c, e.identity),
            }
        })
        .collect()
}

/// One line per (source group, destination group, what is allowed), with
/// how many of the groups' pod pairs it holds for when not all.
fn grouped(
    m: &mut Matrix,
    srcs: &[usize],
    dsts: &[usize],
    group: &[String],
    by: GroupBy,
    doc: Option<Doc>,
    out: impl Write,
) -> std::io::Result<()> {
    // Groups in order of first appearance; each with its pods' classes
    // and how many pods of each.
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut names: Vec<&str> = Vec::new();
    let mut tally = |ps: &[usize]| -> Vec<Vec<(usize, u64)>> {
        let mut by_group: Vec<HashMap<usize, u64>> = Vec::new();
        for &p in ps {
            let g = *index.entry(group[p].as_str()).or_insert_with(|| {
                names.push(group[p].as_str());
                names.len() - 1
            });
            if by_group.len() <= g {
                by_group.resize_with(g + 1, HashMap::new);
            }
            *by_group[g].entry(m.class_of(p)).or_default() += 1;
        }
        by_group
            .into_iter()
            .map(|h| {
                let mut v: Vec<(usize, u64)> = h.into_iter().collect();
                v.sort_unstable();
                v
            })
            .collect()
    };
    let from_groups = tally(srcs);
    let to_groups = tally(dsts);
    // A pod in both lists is one pod: its pairs with itself do not count.
    let both: std::collections::HashSet<usize> = {
        let d: std::collections::HashSet<usize> = dsts.iter().copied().collect();
        srcs.iter().copied().filter(|p| d.contains(p)).collect()
    };
    let mut own: HashMap<(usize, usize), u64> = HashMap::new();
    for &p in &both {
        let g = index[group[p].as_str()];
        *own.entry((g, m.class_of(p))).or_default() += 1;
    }
    let head = serde_json::json!({"schemaVersion": 1, "by": by.name()});
    let mut sink = Sink::open(out, doc, head, "groups")?;
    let mut texts = Texts(Vec::new());
    let mut row = Vec::new();
    for (g, classes) in from_groups.iter().enumerate() {
        if classes.is_empty() {
            continue;
        }
        crate::progress::tick(classes.iter().map(|&(_, n)| n).sum());
        // Per destination group: pod pairs per allowed set.
        let mut acc: Vec<HashMap<u32, u64>> = vec![HashMap::new(); to_groups.len()];
        for &(a, na) in classes {
            m.row(a, &mut row);
            for (h, dclasses) in to_groups.iter().enumerate() {
                for &(b, nb) in dclasses {
                    let mut n = na * nb;
                    if g == h && a == b {
                        n -= own.get(&(g, a)).copied().unwrap_or(0);
                    }
                    if n > 0 {
                        *acc[h].entry(row[b]).or_default() += n;
                    }
                }
            }
        }
        for (h, sets) in acc.into_iter().enumerate() {
            let total: u64 = sets.values().sum();
            let mut sets: Vec<(u32, u64)> = sets
                .into_iter()
                .filter(|&(s, _)| !m.set(s).is_none())
                .collect();
            // Most pairs first; ties in a stable order.
            sets.sort_unstable_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(&y.0)));
            for (s, n) in sets {
                match &mut sink {
                    Sink::Doc(l) => l.item(serde_json::json!({
                        "from": names[g], "to": names[h],
                        "allowed": m.set(s), "pairs": n, "total": total,
                    }))?,
                    Sink::Text(w) if n == total => {
                        writeln!(w, "{} => {} : {}", names[g], names[h], texts.get(m, s))?
                    }
                    Sink::Text(w) => writeln!(
                        w,
                        "{} => {} : {} ({n} of {total} pod pairs)",
                        names[g],
                        names[h],
                        texts.get(m, s)
                    )?,
                }
            }
        }
    }
    sink.close()
}
