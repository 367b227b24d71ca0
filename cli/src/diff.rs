//! `sluice diff`: what a change of the policies (or of the pods) opens
//! and closes, over the same cluster, with the rules that decide each
//! side.

use crate::commands::{load_renamed, Session};
use crate::{plural, Inputs};
use simulator::diff::{Delta, Diff, Kind, State};
use simulator::flow::{Flow, Verdict};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DiffOutput {
    Text,
    Json,
    Yaml,
    Markdown,
    /// GitHub workflow annotations on the rules that decide each change.
    Github,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FailOn {
    Opened,
    Closed,
    Any,
}

#[cfg(feature = "exposure")]
use verifier::Exposure;

/// Without the solver there is never an exposure to print.
#[cfg(not(feature = "exposure"))]
enum Exposure {}

#[cfg(not(feature = "exposure"))]
fn exposure_text(_: &mut dyn Write, e: &Exposure) -> std::io::Result<()> {
    match *e {}
}

#[cfg(not(feature = "exposure"))]
fn exposure_markdown(_: &mut dyn Write, e: &Exposure) -> std::io::Result<()> {
    match *e {}
}

#[cfg(not(feature = "exposure"))]
fn exposure_json(e: &Exposure) -> serde_json::Value {
    match *e {}
}

#[cfg(not(feature = "exposure"))]
fn exposure_internal(e: &Exposure) -> &[String] {
    match *e {}
}

#[cfg(not(feature = "exposure"))]
fn exposure_changes(e: &Exposure) -> (bool, bool) {
    match *e {}
}

#[cfg(feature = "exposure")]
fn exposure_internal(e: &Exposure) -> &[String] {
    &e.internal
}

/// Whether the exposure opens and closes anything.
#[cfg(feature = "exposure")]
fn exposure_changes(e: &Exposure) -> (bool, bool) {
    (
        !e.opened.is_empty() || !e.opened_edges.is_empty(),
        !e.closed.is_empty() || !e.closed_edges.is_empty(),
    )
}

pub struct DiffOptions {
    /// Compare the working tree with this git revision.
    pub rev: Option<String>,
    /// With `rev`: the policy paths (both sides).
    pub paths: Vec<PathBuf>,
    pub base: Vec<PathBuf>,
    pub head: Vec<PathBuf>,
    pub inventory: Vec<PathBuf>,
    pub base_inventory: Vec<PathBuf>,
    pub head_inventory: Vec<PathBuf>,
    pub flows: Option<PathBuf>,
    pub hubble: bool,
    pub output: DiffOutput,
    pub fail_on: Option<FailOn>,
    /// Everything else of an input (limits, semantics); its paths unused.
    pub template: Inputs,
    /// `--exposure`: (pairs listed per direction, solver ms per check).
    pub exposure: Option<(usize, lints::Budget)>,
}

/// How many changed flows are listed (all are counted).
const LISTED_FLOWS: usize = 1000;

fn side_inputs(t: &Inputs, policies: Vec<PathBuf>, inventory: Vec<PathBuf>) -> Inputs {
    Inputs {
        policies,
        cluster_policies: false,
        inventory,
        from_cluster: false,
        map_capacity: t.map_capacity,
        dual_stack: t.dual_stack,
        max_file_size: t.max_file_size,
        l7_budget: t.l7_budget,
        semantics: t.semantics.clone(),
    }
}

/// The two sides are read and compiled at once, one on each core.
fn both<A: Send, B: Send>(a: impl FnOnce() -> A + Send, b: impl FnOnce() -> B + Send) -> (A, B) {
    std::thread::scope(|s| {
        let a = s.spawn(a);
        let b = b();
        let a = a.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
        (a, b)
    })
}

fn bad(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(2)
}

pub fn diff(o: DiffOptions, color: bool) -> ExitCode {
    let inv_base = if o.base_inventory.is_empty() {
        o.inventory.clone()
    } else {
        o.base_inventory.clone()
    };
    let inv_head = if o.head_inventory.is_empty() {
        o.inventory.clone()
    } else {
        o.head_inventory.clone()
    };
    if inv_base.is_empty() && inv_head.is_empty() {
        crate::warn(
            "no inventory (-i): no pod is selected, so no connection between pods can change",
        );
    }
    let (base, head, base_name, head_name) = match &o.rev {
        Some(rev) => {
            if o.paths.is_empty() {
                return bad("with a revision, name the policy paths after `--`: sluice diff main -- policies/");
            }
            if !o.base.is_empty() || !o.head.is_empty() {
                return bad("give a revision or --base/--head, not both");
            }
            let snap = match crate::git::snapshot(rev, &o.paths, o.template.max_bytes()) {
                Ok(s) => s,
                Err(e) => return bad(e),
            };
            let paths: Vec<PathBuf> = o.paths.iter().map(|p| snap.base.join(p)).collect();
            // `base` ends with a separator when the working directory is
            // the repository's root.
            let prefix = format!("{}/", snap.base.display().to_string().trim_end_matches('/'));
            let to = format!("{rev}:");
            let base_in = side_inputs(&o.template, paths, inv_base);
            let head_in = side_inputs(&o.template, o.paths.clone(), inv_head);
            let (base, head) = both(
                || load_renamed(&base_in, color, Some((&prefix, &to))),
                || load_renamed(&head_in, color, None),
            );
            drop(snap);
            let (base, head) = match (base, head) {
                (Ok(b), Ok(h)) => (b, h),
                (Err(code), _) | (_, Err(code)) => return code,
            };
            let names = o
                .paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(" ");
            (base, head, format!("{rev}:{names}"), names)
        }
        None => {
            if !o.paths.is_empty() {
                return bad("paths after `--` go with a revision: sluice diff REV -- PATHS");
            }
            if o.base.is_empty() || o.head.is_empty() {
                return bad("give --base and --head policy paths, or a git revision: sluice diff main -- policies/");
            }
            let base_in = side_inputs(&o.template, o.base.clone(), inv_base);
            let head_in = side_inputs(&o.template, o.head.clone(), inv_head);
            let (base, head) = both(
                || load_renamed(&base_in, color, None),
                || load_renamed(&head_in, color, None),
            );
            let (base, head) = match (base, head) {
                (Ok(b), Ok(h)) => (b, h),
                (Err(code), _) | (_, Err(code)) => return code,
            };
            let name = |v: &[PathBuf]| {
                v.iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            (base, head, name(&o.base), name(&o.head))
        }
    };
    let mut d = simulator::diff::diff(
        State {
            compiled: &base.compiled,
        },
        State {
            compiled: &head.compiled,
        },
    );
    name_by_workload(&mut d, &head.inventory);
    let flows = match &o.flows {
        Some(path) => match changed_flows(path, o.hubble, &base, &head, &o.template) {
            Ok(f) => Some(f),
            Err(code) => return code,
        },
        None => None,
    };
    #[cfg(not(feature = "exposure"))]
    if o.exposure.is_some() {
        return bad("this sluice was built without exposure analysis (z3): build with the `exposure` feature for --exposure");
    }
    #[cfg(not(feature = "exposure"))]
    let exposure: Option<Exposure> = None;
    #[cfg(feature = "exposure")]
    let exposure = o.exposure.map(|(limit, budget)| {
        let model = |s: &crate::commands::Session| {
            compiler::model::normalize(
                &s.loaded.set,
                &s.loaded.sources,
                &s.inventory.services,
                &s.config.model,
            )
        };
        let (mb, mh) = (model(&base), model(&head));
        verifier::exposure(
            &verifier::Side { model: &mb },
            &verifier::Side { model: &mh },
            &head.inventory,
            &head.config,
            limit,
            budget.into(),
        )
    });
    if let Some(e) = &exposure {
        let internal = exposure_internal(e);
        if !internal.is_empty() {
            for x in internal {
                eprintln!("internal error: {x} (please report this to sluice)");
            }
            return ExitCode::from(2);
        }
    }
    let (exp_opened, exp_closed) = exposure.as_ref().map_or((false, false), exposure_changes);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let written = match o.output {
        DiffOutput::Text => {
            text(&mut out, &d, flows.as_ref(), &base_name, &head_name).and_then(|()| {
                exposure
                    .as_ref()
                    .map_or(Ok(()), |e| exposure_text(&mut out, e))
            })
        }
        DiffOutput::Json | DiffOutput::Yaml => json(
            &mut out,
            if o.output == DiffOutput::Yaml {
                crate::output::Doc::Yaml
            } else {
                crate::output::Doc::Json
            },
            &d,
            flows.as_ref(),
            &base_name,
            &head_name,
            exposure.as_ref(),
        ),
        DiffOutput::Markdown => markdown(&mut out, &d, flows.as_ref(), &base_name, &head_name)
            .and_then(|()| {
                exposure
                    .as_ref()
                    .map_or(Ok(()), |e| exposure_markdown(&mut out, e))
            }),
        DiffOutput::Github => github(&mut out, &d),
    };
    if let Err(e) = written.and_then(|()| out.flush()) {
        crate::unless_closed(&e);
    }
    let opened = d.count(Kind::Opened) > 0 || exp_opened;
    let closed = d.count(Kind::Closed) > 0 || d.count(Kind::L7) > 0 || exp_closed;
    let fail = match o.fail_on {
        None => false,
        Some(FailOn::Opened) => opened,
        Some(FailOn::Closed) => closed,
        Some(FailOn::Any) => {
            opened
                || closed
                || !d.is_empty()
                || flows.as_ref().is_some_and(|f| !f.changed.is_empty())
        }
    };
    if fail {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// Groups of pods of one workload are named by it, as a person reads
/// them: `shop/web (Deployment, 3 pods)`, or `3 of 5 pods` when only some
/// of them behave alike.
fn name_by_workload(d: &mut Diff, inv: &compiler::inventory::Inventory) {
    use std::collections::HashMap;
    let mut of: HashMap<String, (String, String)> = HashMap::new();
    let mut size: HashMap<(String, String), usize> = HashMap::new();
    for p in &inv.pods {
        if let Some(w) = &p.workload {
            let key = (format!("{}/{}", p.namespace, w.name), w.kind.clone());
            of.insert(p.qualified_name(), key.clone());
            *size.entry(key).or_default() += 1;
        }
    }
    for g in &mut d.groups {
        let mut keys = g.members.iter().map(|m| of.get(m));
        let Some(Some(first)) = keys.next() else {
            continue;
        };
        if !keys.all(|k| k == Some(first)) {
            continue;
        }
        let total = size.get(first).copied().unwrap_or(0);
        let (name, kind) = first;
        g.name = if g.members.len() == total {
            format!("{name} ({kind}, {total} {})", plural(total, "pod", "pods"))
        } else {
            format!("{name} ({kind}, {} of {total} pods)", g.members.len())
        };
    }
}

/// A recorded flow whose verdict the change changes.
pub struct ChangedFlow {
    pub flow: String,
    pub base: Verdict,
    pub head: Verdict,
    pub line: u32,
}

pub struct Flows {
    pub changed: Vec<ChangedFlow>,
    /// How many changed (more than are listed).
    pub changed_count: usize,
    pub judged: usize,
    pub summary: simulator::stream::Summary,
    /// Flows the base cannot judge (a pod it does not have).
    pub not_in_base: usize,
}

fn changed_flows(
    path: &std::path::Path,
    hubble: bool,
    base: &Session,
    head: &Session,
    t: &Inputs,
) -> Result<Flows, ExitCode> {
    use simulator::stream::{self, Format, Pieces};
    let name = path.display().to_string();
    let format = if crate::commands::is_hubble(path, hubble) {
        Format::Hubble
    } else {
        Format::Yaml
    };
    let reader: Box<dyn std::io::Read> = if path.as_os_str() == "-" {
        Box::new(std::io::stdin())
    } else {
        match std::fs::File::open(path) {
            Ok(f) => Box::new(f),
            Err(e) => return Err(bad(format!("{name}: cannot read: {e}"))),
        }
    };
    let limit = usize::try_from(t.max_bytes()).unwrap_or(usize::MAX);
    let mut pieces = Pieces::new(std::io::BufReader::new(reader), format, limit);
    let mut report = |r: stream::PieceReport<'_>| {
        let mut err = std::io::stderr().lock();
        for d in r.diagnostics {
            let _ = write!(err, "{}", d.render(r.sources, false));
        }
    };
    let mut changed = Vec::new();
    let (mut count, mut judged, mut not_in_base) = (0usize, 0usize, 0usize);
    let mut emit =
        |f: &Flow, o: &simulator::eval::Outcome, _: &[simulator::eval::PolicyDifference]| {
            judged += 1;
            match simulator::eval::simulate(&base.compiled, f) {
                Ok(b) if b.verdict != o.verdict => {
                    count += 1;
                    if changed.len() < LISTED_FLOWS {
                        changed.push(ChangedFlow {
                            flow: format!(
                                "{} → {} {}/{}",
                                f.from,
                                f.to,
                                f.port,
                                compiler::mapstate::proto_name(f.protocol)
                            ),
                            base: b.verdict,
                            head: o.verdict,
                            line: f.loc.0.line,
                        });
                    }
                }
                Ok(_) => {}
                Err(_) => not_in_base += 1,
            }
            Ok(())
        };
    let summary = match stream::judge_stream(
        &mut pieces,
        &name,
        &head.compiled,
        &head.inventory,
        &mut report,
        &mut emit,
    ) {
        Ok(s) => s,
        Err(stream::StreamError::Read(e)) => return Err(bad(format!("{name}: {e}"))),
        Err(stream::StreamError::Write(e)) => return Err(bad(e)),
    };
    if summary.errors > 0 {
        return Err(bad(format!(
            "{} {} in {name}: fix them to compare its flows",
            summary.errors,
            plural(summary.errors, "error", "errors")
        )));
    }
    // New drops first: they are what breaks.
    changed.sort_by_key(|c| (c.head != Verdict::Denied, c.line));
    Ok(Flows {
        changed,
        changed_count: count,
        judged,
        summary,
        not_in_base,
    })
}

fn ranges_text(d: &Delta) -> String {
    simulator::diff::ports_text(&d.ports)
}

fn kind_title(k: Kind) -> &'static str {
    match k {
        Kind::Opened => "opened",
        Kind::Closed => "closed",
        Kind::L7 => "L7 rules changed",
    }
}

fn summary_line(d: &Diff) -> String {
    if d.is_empty() {
        return "no connection changes".to_owned();
    }
    let (o, c, l) = (
        d.count(Kind::Opened),
        d.count(Kind::Closed),
        d.count(Kind::L7),
    );
    let mut parts = Vec::new();
    if o > 0 {
        parts.push(format!("{o} opened"));
    }
    if c > 0 {
        parts.push(format!("{c} closed"));
    }
    if l > 0 {
        parts.push(format!("{l} with other L7 rules"));
    }
    parts.join(", ")
}

fn other(v: Verdict) -> Verdict {
    match v {
        Verdict::Allowed => Verdict::Denied,
        Verdict::Denied => Verdict::Allowed,
    }
}

fn side_text(s: &simulator::diff::Decision) -> String {
    let mut t = format!("{}: {}", s.verdict, s.reason);
    if let Some(l7) = &s.l7 {
        if l7.is_empty() {
            t.push_str("; L7: no request");
        } else {
            t.push_str(&format!("; L7: {}", l7.join("; ")));
        }
    }
    t
}

fn text(
    out: &mut dyn Write,
    d: &Diff,
    flows: Option<&Flows>,
    base: &str,
    head: &str,
) -> std::io::Result<()> {
    writeln!(out, "sluice diff: {base} → {head}")?;
    for kind in [Kind::Opened, Kind::Closed, Kind::L7] {
        let these: Vec<&Delta> = d.deltas.iter().filter(|x| x.kind == kind).collect();
        if these.is_empty() {
            continue;
        }
        writeln!(out, "\n{} ({}):", kind_title(kind), these.len())?;
        for x in these {
            let (f, t) = (&d.groups[x.from], &d.groups[x.to]);
            writeln!(out, "  {} → {}  {}", f.name, t.name, ranges_text(x))?;
            writeln!(out, "      base {}", side_text(&x.base))?;
            writeln!(out, "      head {}", side_text(&x.head))?;
            if let Some(w) = &x.witness {
                writeln!(
                    out,
                    "      e.g. {}: {} in the head, {} in the base",
                    w.request,
                    w.head,
                    other(w.head)
                )?;
            }
        }
    }
    for (what, pods) in [
        ("only in the base", &d.only_base),
        ("only in the head", &d.only_head),
    ] {
        if !pods.is_empty() {
            writeln!(
                out,
                "\n{} {} {what} (their connections are not compared): {}",
                pods.len(),
                plural(pods.len(), "pod", "pods"),
                pods.join(", ")
            )?;
        }
    }
    if let Some(f) = flows {
        writeln!(out)?;
        write_flows_text(out, f)?;
    }
    writeln!(
        out,
        "\n{} ({} {} changed, {} {} judged)",
        summary_line(d),
        d.changed_classes,
        plural(d.changed_classes, "class of peers", "classes of peers"),
        d.pairs_judged,
        plural(d.pairs_judged, "pair", "pairs")
    )
}

fn write_flows_text(out: &mut dyn Write, f: &Flows) -> std::io::Result<()> {
    writeln!(
        out,
        "recorded flows: {} of {} judged change verdict{}",
        f.changed_count,
        f.judged,
        if f.changed_count > f.changed.len() {
            format!(" (the first {} listed)", f.changed.len())
        } else {
            String::new()
        }
    )?;
    for c in &f.changed {
        let mark = if c.head == Verdict::Denied {
            "NEW DROP"
        } else {
            "NEW ALLOW"
        };
        writeln!(
            out,
            "  {mark:<9} {} (line {}): {} → {}",
            c.flow, c.line, c.base, c.head
        )?;
    }
    let s = &f.summary;
    let skipped = s.replies + s.established + s.non_policy_drops + s.pods_gone + f.not_in_base;
    if skipped > 0 {
        writeln!(
            out,
            "  not compared: {} {}, {} of established connections, {} not made by policy, {} of pods that are gone, {} the base has no pod for",
            s.replies,
            plural(s.replies, "reply", "replies"),
            s.established,
            s.non_policy_drops,
            s.pods_gone,
            f.not_in_base
        )?;
    }
    Ok(())
}

fn delta_json(d: &Diff, x: &Delta) -> serde_json::Value {
    serde_json::json!({
        "kind": x.kind,
        "from": d.groups[x.from],
        "to": d.groups[x.to],
        "ports": x.ports.iter().map(|p| serde_json::json!({
            "protocol": p.protocol,
            "ranges": p.ranges.iter().map(|&(a, b)| serde_json::json!({"from": a, "to": b})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "base": x.base,
        "head": x.head,
        "witness": x.witness,
    })
}

fn json(
    out: &mut dyn Write,
    doc: crate::output::Doc,
    d: &Diff,
    flows: Option<&Flows>,
    base: &str,
    head: &str,
    exposure: Option<&Exposure>,
) -> std::io::Result<()> {
    let flows = flows.map(|f| {
        serde_json::json!({
            "judged": f.judged,
            "changedCount": f.changed_count,
            "changed": f.changed.iter().map(|c| serde_json::json!({"flow": c.flow, "line": c.line, "base": c.base, "head": c.head})).collect::<Vec<_>>(),
            "notCompared": {
                "replies": f.summary.replies,
                "established": f.summary.established,
                "nonPolicyDrops": f.summary.non_policy_drops,
                "podsGone": f.summary.pods_gone,
                "notInBase": f.not_in_base,
            },
        })
    });
    let v = serde_json::json!({
        "schemaVersion": 1,
        "base": base,
        "head": head,
        "summary": {
            "opened": d.count(Kind::Opened),
            "closed": d.count(Kind::Closed),
            "l7": d.count(Kind::L7),
            "changedClasses": d.changed_classes,
            "pairsJudged": d.pairs_judged,
        },
        "changes": d.deltas.iter().map(|x| delta_json(d, x)).collect::<Vec<_>>(),
        "onlyBase": d.only_base,
        "onlyHead": d.only_head,
        "flows": flows,
        "exposure": exposure.map(exposure_json),
    });
    out.write_all(crate::output::render(&v, doc).as_bytes())
}

#[cfg(feature = "exposure")]
fn witness_pod_json(p: &verifier::WitnessPod) -> serde_json::Value {
    serde_json::json!({
        "namespace": p.namespace,
        "newNamespaceLabels": p.new_namespace,
        "labels": p.labels,
        "serviceAccount": p.service_account,
        "ports": p.ports.iter().map(|(n, port, proto)| serde_json::json!({"name": n, "port": port, "protocol": compiler::mapstate::proto_name(*proto)})).collect::<Vec<_>>(),
    })
}

#[cfg(feature = "exposure")]
fn exposure_json(e: &Exposure) -> serde_json::Value {
    let list = |ws: &[verifier::Witness]| {
        ws.iter()
            .map(|w| {
                let matters = |i: usize| {
                    w.matters
                        .as_ref()
                        .map(|m| m[i].iter().map(ToString::to_string).collect::<Vec<_>>())
                };
                serde_json::json!({
                    "fromLabelsThatMatter": matters(0),
                    "toLabelsThatMatter": matters(1),
                    "from": witness_pod_json(&w.src),
                    "to": witness_pod_json(&w.dst),
                    "port": w.port,
                    "protocol": compiler::mapstate::proto_name(w.protocol),
                })
            })
            .collect::<Vec<_>>()
    };
    let edges = |ws: &[verifier::EdgeWitness]| {
        ws.iter()
            .map(|w| {
                let pod = (
                    w.matters
                        .as_ref()
                        .map(|m| m.iter().map(ToString::to_string).collect::<Vec<_>>()),
                    witness_pod_json(&w.pod),
                );
                let other = (None, other_json(&w.other));
                let (from, to) = if w.pod_is_src {
                    (pod, other)
                } else {
                    (other, pod)
                };
                serde_json::json!({
                    "fromLabelsThatMatter": from.0,
                    "toLabelsThatMatter": to.0,
                    "from": from.1,
                    "to": to.1,
                    "port": w.port,
                    "protocol": compiler::mapstate::proto_name(w.protocol),
                })
            })
            .collect::<Vec<_>>()
    };
    let both = |a: Vec<serde_json::Value>, b: Vec<serde_json::Value>| {
        a.into_iter().chain(b).collect::<Vec<_>>()
    };
    serde_json::json!({
        "opened": both(list(&e.opened), edges(&e.opened_edges)),
        "closed": both(list(&e.closed), edges(&e.closed_edges)),
        "openedTruncated": e.truncated[0],
        "closedTruncated": e.truncated[1],
        "undecided": e.unknown,
    })
}

#[cfg(feature = "exposure")]
fn other_json(p: &simulator::flow::PeerRef) -> serde_json::Value {
    match p {
        simulator::flow::PeerRef::Ip(ip) => serde_json::json!({ "address": ip.to_string() }),
        simulator::flow::PeerRef::Entity(e) => serde_json::json!({ "entity": e }),
        simulator::flow::PeerRef::Pod(n) => serde_json::json!({ "pod": n }),
    }
}

/// Edge changes, one line per class of pods and direction: the peers
/// that open (or close) for it, with the first as the example.
#[cfg(feature = "exposure")]
fn edge_lines(what: &str, ws: &[verifier::EdgeWitness], lines: &mut Vec<String>) {
    let mut groups: Vec<(bool, String, Vec<String>, &verifier::EdgeWitness)> = Vec::new();
    for w in ws {
        let pods = match &w.matters {
            Some(m) if m.is_empty() => "any pod".to_owned(),
            Some(m) => format!(
                "pods with {}",
                m.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            None => w.pod.summary(),
        };
        let peer = match &w.other {
            simulator::flow::PeerRef::Ip(ip) if ip.is_ipv4() => "outside IPv4 addresses".to_owned(),
            simulator::flow::PeerRef::Ip(_) => "outside IPv6 addresses".to_owned(),
            simulator::flow::PeerRef::Entity(e) | simulator::flow::PeerRef::Pod(e) => e.clone(),
        };
        match groups
            .iter_mut()
            .find(|g| g.0 == w.pod_is_src && g.1 == pods)
        {
            Some(g) => g.2.push(peer),
            None => groups.push((w.pod_is_src, pods, vec![peer], w)),
        }
    }
    for (pod_is_src, pods, peers, w) in groups {
        let peers = peers.join(", ");
        let (a, b) = if pod_is_src {
            (pods, peers)
        } else {
            (peers, pods)
        };
        lines.push(format!("{what}: {a} → {b} (e.g. {})", w.flow_text()));
    }
}

#[cfg(feature = "exposure")]
fn exposure_lines(e: &Exposure) -> Vec<String> {
    let mut lines = Vec::new();
    for (what, ws, edges, more) in [
        ("opened", &e.opened, &e.opened_edges, e.truncated[0]),
        ("closed", &e.closed, &e.closed_edges, e.truncated[1]),
    ] {
        for w in ws {
            let side = |i: usize, p: &verifier::WitnessPod| match &w.matters {
                Some(m) if m[i].is_empty() => "any pod".to_owned(),
                Some(m) => format!(
                    "pods with {}",
                    m[i].iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                None => p.summary(),
            };
            lines.push(format!(
                "{what}: {} → {} (e.g. {}/{}: {} → {})",
                side(0, &w.src),
                side(1, &w.dst),
                w.port,
                compiler::mapstate::proto_name(w.protocol),
                w.src.summary(),
                w.dst.summary(),
            ));
        }
        edge_lines(what, edges, &mut lines);
        if more {
            lines.push(format!(
                "{what}: more pairs of labels than listed (--exposure-limit)"
            ));
        }
    }
    if let Some(why) = &e.unknown {
        lines.push(format!(
            "undecided: the solver gave up ({why}); what is listed may not be all"
        ));
    }
    lines
}

#[cfg(feature = "exposure")]
fn exposure_text(out: &mut dyn Write, e: &Exposure) -> std::io::Result<()> {
    writeln!(
        out,
        "\nFor pods that could exist (--exposure; L7 counts as allowed at L4):"
    )?;
    let lines = exposure_lines(e);
    if lines.is_empty() {
        writeln!(out, "  nothing opens or closes for any possible pod")?;
    }
    for l in lines {
        writeln!(out, "  {l}")?;
    }
    Ok(())
}

#[cfg(feature = "exposure")]
fn exposure_markdown(out: &mut dyn Write, e: &Exposure) -> std::io::Result<()> {
    writeln!(out, "\n#### For pods that could exist\n")?;
    let lines = exposure_lines(e);
    if lines.is_empty() {
        writeln!(out, "Nothing opens or closes for any possible pod.")?;
    }
    for l in lines {
        writeln!(out, "- {}", cell(&l))?;
    }
    Ok(())
}

/// Table cells must not break the table.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn markdown(
    out: &mut dyn Write,
    d: &Diff,
    flows: Option<&Flows>,
    base: &str,
    head: &str,
) -> std::io::Result<()> {
    writeln!(out, "### sluice diff: {}\n", summary_line(d))?;
    writeln!(out, "`{}` → `{}`\n", cell(base), cell(head))?;
    for kind in [Kind::Opened, Kind::Closed, Kind::L7] {
        let these: Vec<&Delta> = d.deltas.iter().filter(|x| x.kind == kind).collect();
        if these.is_empty() {
            continue;
        }
        writeln!(out, "#### {} ({})\n", kind_title(kind), these.len())?;
        writeln!(out, "| from | to | ports | decided in the head by |")?;
        writeln!(out, "|---|---|---|---|")?;
        for x in &these {
            let by = if x.head.sites.is_empty() {
                cell(&x.head.reason)
            } else {
                x.head
                    .sites
                    .iter()
                    .map(|s| format!("{} ({}:{})", cell(&s.policy), cell(&s.file), s.line))
                    .collect::<Vec<_>>()
                    .join("<br>")
            };
            writeln!(
                out,
                "| {} | {} | {} | {by} |",
                cell(&d.groups[x.from].name),
                cell(&d.groups[x.to].name),
                cell(&ranges_text(x))
            )?;
        }
        writeln!(out, "\n<details><summary>Details</summary>\n")?;
        for x in &these {
            writeln!(
                out,
                "- **{} → {} {}**\n  - base: {}\n  - head: {}",
                cell(&d.groups[x.from].name),
                cell(&d.groups[x.to].name),
                cell(&ranges_text(x)),
                cell(&side_text(&x.base)),
                cell(&side_text(&x.head))
            )?;
            if let Some(w) = &x.witness {
                writeln!(
                    out,
                    "  - e.g. `{}`: {} in the head",
                    cell(&w.request),
                    w.head
                )?;
            }
        }
        writeln!(out, "\n</details>\n")?;
    }
    if let Some(f) = flows {
        writeln!(out, "#### Recorded flows\n\n```")?;
        write_flows_text(out, f)?;
        writeln!(out, "```")?;
    }
    Ok(())
}

/// Annotations on the rules that now decide each change (the head's),
/// or on the base's for a change that no head rule makes (a rule removed).
fn github(out: &mut dyn Write, d: &Diff) -> std::io::Result<()> {
    use lints::output::{escape_data as esc, escape_property as prop};
    let mut seen = std::collections::HashSet::new();
    for x in &d.deltas {
        let sites = if x.head.sites.is_empty() {
            &x.base.sites
        } else {
            &x.head.sites
        };
        for s in sites {
            let msg = format!(
                "{} → {} {}: {} (base: {})",
                d.groups[x.from].name,
                d.groups[x.to].name,
                ranges_text(x),
                kind_title(x.kind),
                x.base.verdict
            );
            if !seen.insert((s.file.clone(), s.line, msg.clone())) {
                continue;
            }
            let level = if x.kind == Kind::Opened {
                "warning"
            } else {
                "notice"
            };
            writeln!(
                out,
                "::{level} file={},line={},col={},title={}::{}",
                prop(&policy_lang::excerpt::safe_text(&s.file)),
                s.line,
                s.col,
                prop(&format!("sluice diff: {}", kind_title(x.kind))),
                esc(&policy_lang::excerpt::safe_text(&msg))
            )?;
        }
    }
    if d.is_empty() {
        writeln!(out, "::notice title=sluice diff::no connection changes")?;
    }
    Ok(())
}
