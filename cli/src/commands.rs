//! compile, simulate and trace: load, compile, report.

use crate::{plural, CompileOutput, Inputs, SimOutput};
use compiler::compile::{compile as compile_state, Compiled, Config};
use compiler::inventory::{self, Inventory};
use policy_lang::diag::Diagnostic;
use policy_lang::source::SourceMap;
use policy_lang::Loaded;
use simulator::eval::{explain_step, identity_name, simulate as judge, Outcome, PolicyDifference};
use simulator::flow::{self, Flow, PeerRef};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

fn print_diags(diags: &[Diagnostic], sources: &SourceMap, color: bool) {
    let mut err = std::io::stderr().lock();
    // `-q`: the errors only.
    for d in diags.iter().filter(|d| d.is_error() || !crate::quiet()) {
        let _ = write!(err, "{}", d.render(sources, color));
    }
}

/// `3 pods`, `1 pod`.
pub(crate) fn plural_count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", plural(n, one, many))
}

/// Policies, inventory and compiled state, or the exit code when the input
/// cannot be compiled (it is never enforced or judged as "allow").
pub(crate) struct Session {
    pub(crate) loaded: Loaded,
    pub(crate) inventory: Inventory,
    pub(crate) compiled: Compiled,
    /// The settings it was compiled with.
    #[cfg_attr(not(feature = "exposure"), allow(dead_code))]
    pub(crate) config: Config,
}

impl Session {
    /// For a one-shot command that is done with the state: it is left to
    /// the process's exit instead of being freed piece by piece (at
    /// 100,000 pods, tens of millions of map nodes: most of a second).
    /// Never for the agent, which reloads.
    pub(crate) fn leave(self) {
        std::mem::forget(self);
    }
}

pub(crate) fn load(inputs: &Inputs, color: bool) -> Result<Session, ExitCode> {
    load_with_dns(inputs, color, Vec::new())
}

/// What `--cluster-policies` and `--from-cluster` read from the API.
#[derive(Clone, Debug, Default)]
pub(crate) struct ClusterTexts {
    policies: Option<String>,
    inventory: Option<String>,
}

/// Reads what the inputs ask of the cluster (nothing without cluster
/// flags); errors are reported.
pub(crate) fn fetch_cluster(inputs: &Inputs) -> Result<ClusterTexts, ExitCode> {
    let mut t = ClusterTexts::default();
    if inputs.cluster_policies {
        match crate::cluster::fetch_policies() {
            Ok(text) => t.policies = Some(text),
            Err(e) => {
                eprintln!("error: --cluster-policies: {e}");
                return Err(ExitCode::from(2));
            }
        }
    }
    if inputs.from_cluster {
        match crate::cluster::fetch_inventory() {
            Ok(text) => t.inventory = Some(text),
            Err(e) => {
                eprintln!("error: --from-cluster: {e}");
                return Err(ExitCode::from(2));
            }
        }
    }
    Ok(t)
}

/// [`load`], with DNS answers for toFQDNs.
pub(crate) fn load_with_dns(
    inputs: &Inputs,
    color: bool,
    dns: Vec<(String, Vec<std::net::IpAddr>)>,
) -> Result<Session, ExitCode> {
    load_fetched(inputs, color, dns, &fetch_cluster(inputs)?)
}

/// [`load_with_dns`] with the cluster's part already read (the agent reads
/// it again only on its resync interval).
/// [`load`] for files read into a scratch directory: their names say
/// where they came from (`main:policies/web.yaml`) before anything is
/// compiled or reported.
pub(crate) fn load_renamed(
    inputs: &Inputs,
    color: bool,
    rename: Option<(&str, &str)>,
) -> Result<Session, ExitCode> {
    let mut parsed = parse_inputs(inputs, &fetch_cluster(inputs)?);
    if let Some((from, to)) = rename {
        parsed.loaded.sources.rename_prefix(from, to);
    }
    compile_parsed(inputs, color, parsed, Vec::new())
}

pub(crate) fn load_fetched(
    inputs: &Inputs,
    color: bool,
    dns: Vec<(String, Vec<std::net::IpAddr>)>,
    cluster: &ClusterTexts,
) -> Result<Session, ExitCode> {
    compile_parsed(inputs, color, parse_inputs(inputs, cluster), dns)
}

/// Policies and inventory read, not yet compiled: what a command needs to
/// know before compiling (whether flows' DNS answers matter).
pub(crate) struct Parsed {
    loaded: Loaded,
    inventory: Inventory,
    diags: Vec<Diagnostic>,
}

pub(crate) fn parse_inputs(inputs: &Inputs, cluster: &ClusterTexts) -> Parsed {
    let started = std::time::Instant::now();
    crate::progress::stage("reading policies and inventory", 0);
    let cluster_texts: Vec<(String, String)> = cluster
        .policies
        .iter()
        .map(|t| ("<cluster policies>".to_owned(), t.clone()))
        .collect();
    let mut loaded = policy_lang::load_paths_and_texts(
        &inputs.policies,
        cluster_texts,
        &policy_lang::LoadOptions {
            max_file_size: inputs.max_bytes(),
            ..inputs.semantics.load_options()
        },
    );
    let mut diags = Vec::new();
    let paths: Vec<&Path> = inputs.inventory.iter().map(PathBuf::as_path).collect();
    let live: Vec<(String, String)> = cluster
        .inventory
        .iter()
        .map(|t| ("<cluster>".to_owned(), t.clone()))
        .collect();
    let inventory = inventory::load_all(
        &paths,
        live,
        inputs.max_bytes(),
        inputs.semantics.inventory_options(),
        &mut loaded.sources,
        &mut diags,
    );
    if let Some(note) = crate::skipped_summary(&loaded.skipped_files) {
        crate::note(format!("policies: {note} (sluice validate -v lists them)"));
    }
    if let Some(note) = inventory.note() {
        crate::note(format!("inventory: {note}"));
    }
    crate::stage(
        format!(
            "read {} from {}, and {}, {}, {}",
            plural_count(loaded.set.policies.len(), "policy", "policies"),
            plural_count(loaded.sources.len(), "file", "files"),
            plural_count(inventory.pods.len(), "pod", "pods"),
            plural_count(inventory.namespaces.len(), "namespace", "namespaces"),
            plural_count(inventory.nodes.len(), "node", "nodes"),
        ),
        started,
    );
    Parsed {
        loaded,
        inventory,
        diags,
    }
}

/// Compiles what [`parse_inputs`] read, reporting every problem; an input
/// with errors is not compiled.
pub(crate) fn compile_parsed(
    inputs: &Inputs,
    color: bool,
    parsed: Parsed,
    dns: Vec<(String, Vec<std::net::IpAddr>)>,
) -> Result<Session, ExitCode> {
    let Parsed {
        loaded,
        inventory,
        mut diags,
    } = parsed;
    let mut cfg = Config {
        map_capacity: inputs.map_capacity,
        dual_stack: inputs.dual_stack,
        dns,
        l7_total_limit: usize::try_from(inputs.l7_budget.saturating_mul(1 << 20))
            .unwrap_or(usize::MAX),
        ..Config::default()
    };
    if let Err(e) = inputs.semantics.apply(&mut cfg) {
        eprintln!("error: {e}");
        return Err(ExitCode::from(2));
    }
    let policy_errors = loaded.error_count();
    let started = std::time::Instant::now();
    let (compiled, compile_diags) = if policy_errors == 0 && !diags.iter().any(Diagnostic::is_error)
    {
        crate::progress::stage(
            &format!(
                "compiling {} for {}",
                plural_count(loaded.set.policies.len(), "policy", "policies"),
                plural_count(inventory.pods.len(), "pod", "pods")
            ),
            0,
        );
        let out = compile_state(&loaded.set, &loaded.sources, &inventory, &cfg);
        crate::stage(
            format!(
                "compiled {} and {} ({} policy {})",
                plural_count(out.0.endpoints.len(), "endpoint", "endpoints"),
                plural_count(out.0.identities.len(), "identity", "identities"),
                out.0.maps.len(),
                if out.0.maps.len() == 1 { "map" } else { "maps" },
            ),
            started,
        );
        out
    } else {
        (Compiled::default(), Vec::new())
    };
    crate::progress::clear();
    diags.extend(compile_diags);
    let mut all: Vec<Diagnostic> = loaded.diagnostics.clone();
    all.extend(diags);
    print_diags(&all, &loaded.sources, color);
    if all.iter().any(Diagnostic::is_error) {
        eprintln!(
            "error: {} {} in the input; nothing was compiled",
            all.iter().filter(|d| d.is_error()).count(),
            plural(
                all.iter().filter(|d| d.is_error()).count(),
                "error",
                "errors"
            )
        );
        return Err(ExitCode::from(2));
    }
    Ok(Session {
        loaded,
        inventory,
        compiled,
        config: cfg,
    })
}

/// What a replay did not judge as new connections, and why.
fn replay_summary(sum: &simulator::stream::Summary) -> Option<String> {
    let mut parts = Vec::new();
    for (n, one, many) in [
        (sum.replies, "reply", "replies"),
        (
            sum.established,
            "packet of an established connection",
            "packets of established connections",
        ),
        (
            sum.non_policy_drops,
            "drop not made by policy",
            "drops not made by policy",
        ),
        (
            sum.pods_gone,
            "record of a pod that is gone (no pod has its identity)",
            "records of pods that are gone (no pod has their identity)",
        ),
    ] {
        if n > 0 {
            parts.push(format!("{n} {}", plural(n, one, many)));
        }
    }
    let mut line = String::new();
    if !parts.is_empty() {
        line = format!("not judged as new connections: {}", parts.join(", "));
    }
    if sum.stood_in > 0 {
        if !line.is_empty() {
            line.push_str("; ");
        }
        line.push_str(&format!(
            "{} {} judged as another pod of the identity Hubble recorded",
            sum.stood_in,
            plural(
                sum.stood_in,
                "record of a pod that is gone",
                "records of pods that are gone"
            )
        ));
    }
    (!line.is_empty()).then_some(line)
}

pub fn compile(
    inputs: &Inputs,
    output: CompileOutput,
    out: Option<PathBuf>,
    stats: bool,
    color: bool,
) -> ExitCode {
    let s = match load(inputs, color) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let c = &s.compiled;
    warn_without_inventory(inputs);
    if s.loaded.set.policies.is_empty() {
        // A truncated dump or a wrong path must not pass for a policy set
        // that allows everything without anyone noticing.
        eprintln!(
            "warning: no policies in the input: every endpoint is default-allow in both directions"
        );
    }
    let document = |doc| {
        let v = serde_json::to_value(compiler::artifact::to_json(c)).unwrap_or_default();
        crate::output::render(&v, doc)
    };
    let write = |path: &Path, bytes: &[u8]| -> ExitCode {
        // Written beside the target and renamed into place: a reader (the
        // agent watching the file) sees the old state or the new one,
        // never a partial file.
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        match std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, path)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                eprintln!("error: cannot write {}: {e}", path.display());
                ExitCode::from(2)
            }
        }
    };
    let code = match (output, &out) {
        (CompileOutput::Json | CompileOutput::Yaml, None) => {
            out!("{}", document(doc_of(output)));
            ExitCode::SUCCESS
        }
        (CompileOutput::Json | CompileOutput::Yaml, Some(p)) => {
            write(p, document(doc_of(output)).as_bytes())
        }
        (_, Some(p)) => write(p, &compiler::artifact::encode(c)),
        (CompileOutput::Binary, None) => {
            eprintln!("error: -o binary needs --out FILE");
            return ExitCode::from(2);
        }
        (CompileOutput::Text, None) => ExitCode::SUCCESS,
    };
    if output == CompileOutput::Text || stats {
        let st = c.stats();
        let entries: usize = st.entries.iter().map(|(_, n)| n).sum();
        let mut o = std::io::stdout().lock();
        let _ = writeln!(
            o,
            "compiled {} for {}: {}, {}, {} ({}, {})",
            plural_count(s.loaded.set.policies.len(), "policy", "policies"),
            plural_count(s.inventory.pods.len(), "pod", "pods"),
            plural_count(st.identities, "identity", "identities"),
            plural_count(st.ipcache_entries, "ipcache entry", "ipcache entries"),
            plural_count(st.endpoints, "endpoint", "endpoints"),
            plural_count(
                st.distinct_maps,
                "distinct policy map",
                "distinct policy maps"
            ),
            plural_count(entries, "entry", "entries"),
        );
        if stats {
            // Sized to the longest name: real pod names run past any
            // fixed width.
            let w = c
                .endpoints
                .iter()
                .map(|e| e.name.chars().count())
                .max()
                .unwrap_or(0)
                .max("ENDPOINT".len());
            let _ = writeln!(
                o,
                "{:<w$} {:>10} {:>8} {:>8}",
                "ENDPOINT", "IDENTITY", "ENTRIES", "ENFORCED"
            );
            for e in &c.endpoints {
                let enforced = match e.enforced {
                    [true, true] => "both",
                    [true, false] => "ingress",
                    [false, true] => "egress",
                    [false, false] => "none",
                };
                let _ = writeln!(
                    o,
                    "{:<w$} {:>10} {:>8} {:>8}",
                    e.name,
                    e.identity,
                    c.maps[e.map].len(),
                    enforced
                );
            }
            // Pods read but not endpoints, and why: what a user looking
            // for a pod in the table above needs to know.
            for l in &s.inventory.left_out {
                let _ = writeln!(o, "{} is not an endpoint: {}", l.pod, l.reason);
            }
        }
    }
    s.leave();
    code
}

/// Whether a flows file holds Hubble JSON lines rather than compact YAML.
pub(crate) fn is_hubble(path: &Path, hubble: bool) -> bool {
    hubble
        || path
            .extension()
            .is_some_and(|e| e == "json" || e == "jsonl")
}

/// An AUDIT note in JSON: the direction, the policies that would have
/// dropped the flow, and why.
fn audit_json(c: &Compiled, o: &Outcome) -> serde_json::Value {
    let Some(dir) = o.audit else {
        return serde_json::Value::Null;
    };
    let Some(st) = o.steps.iter().find(|s| s.direction == dir) else {
        return serde_json::Value::Null;
    };
    serde_json::json!({
        "direction": dir,
        "policies": simulator::eval::audit_policies(c, st),
        "reason": simulator::eval::explain_audit(c, st),
    })
}

fn peer_text(p: &PeerRef) -> String {
    p.to_string()
}

fn port_text(f: &Flow) -> String {
    format!("{}/{}", f.port, compiler::mapstate::proto_name(f.protocol))
}

/// A flows input opened once: a regular file can be read again from its
/// start (for the DNS answers first); anything else is read once.
enum FlowsInput {
    File(std::fs::File),
    Stream(Box<dyn std::io::Read>),
}

fn open_flows(path: &Path) -> Result<FlowsInput, String> {
    if path.as_os_str() == "-" {
        return Ok(FlowsInput::Stream(Box::new(std::io::stdin())));
    }
    let f = std::fs::File::open(path).map_err(|e| format!("cannot read: {e}"))?;
    let regular = f.metadata().map(|m| m.is_file()).unwrap_or(false);
    Ok(if regular {
        FlowsInput::File(f)
    } else {
        FlowsInput::Stream(Box::new(f))
    })
}

/// A copy of everything read from a stream, so that it can be read a
/// second time: the DNS answers are needed before anything is judged.
struct Spool<R> {
    input: R,
    copy: std::fs::File,
    written: u64,
}

/// The most a spooled (piped) flows stream may hold.
const SPOOL_LIMIT: u64 = 4 << 30;

impl<R: std::io::Read> std::io::Read for Spool<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.input.read(buf)?;
        self.written += n as u64;
        if self.written > SPOOL_LIMIT {
            return Err(std::io::Error::other(
                "a piped flows stream over 4 GiB with toFQDNs policies: write it to a file",
            ));
        }
        std::io::Write::write_all(&mut self.copy, &buf[..n])?;
        Ok(n)
    }
}

/// An unnamed temporary file (removed as soon as it is opened).
fn spool_file() -> std::io::Result<std::fs::File> {
    let dir = std::env::temp_dir();
    for n in 0..100u32 {
        let path = dir.join(format!("sluice-flows-{}-{n}", std::process::id()));
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(f) => {
                let _ = std::fs::remove_file(&path);
                return Ok(f);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other("no free temporary file name"))
}

pub fn simulate(
    inputs: &Inputs,
    flows_path: &Path,
    hubble: bool,
    require_expectations: bool,
    output: SimOutput,
    color: bool,
) -> ExitCode {
    use simulator::stream::{self, Format, PieceReport, Pieces};
    use std::io::{BufReader, Seek};
    let cluster = match fetch_cluster(inputs) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let parsed = parse_inputs(inputs, &cluster);
    let name = flows_path.display().to_string();
    let format = if is_hubble(flows_path, hubble) {
        Format::Hubble
    } else {
        Format::Yaml
    };
    // A line, or a YAML document that cannot be cut, is held whole: that
    // is what the size limit bounds. The stream itself is never held.
    let limit = usize::try_from(inputs.max_bytes()).unwrap_or(usize::MAX);
    let read_failed = |e: &dyn std::fmt::Display| {
        eprintln!("error: {name}: {e}");
        ExitCode::from(2)
    };
    let input = match open_flows(flows_path) {
        Ok(i) => i,
        Err(e) => return read_failed(&e),
    };
    // A stream (a pipe from `hubble observe -f`) is printed as it is
    // judged; a file's differing flows can come first.
    let from_file = matches!(input, FlowsInput::File(_));
    let mut flow_errors = 0usize;
    let mut report = |r: PieceReport<'_>| {
        print_diags(r.diagnostics, r.sources, color);
    };
    // The flows' DNS answers feed toFQDNs, so they are read first when the
    // policies allow by name: from the file again, or from a copy of the
    // stream made while reading it.
    let needs_dns = parsed.loaded.set.uses_fqdns();
    let (dns, reader): (_, Box<dyn std::io::BufRead>) = match (input, needs_dns) {
        (FlowsInput::File(f), false) => (Vec::new(), Box::new(BufReader::new(f))),
        (FlowsInput::Stream(r), false) => (Vec::new(), Box::new(BufReader::new(r))),
        (FlowsInput::File(f), true) => {
            let mut p = Pieces::new(BufReader::new(f), format, limit);
            let (dns, errors) = match stream::scan_dns(&mut p, &name, &mut report) {
                Ok(x) => x,
                Err(e) => return read_failed(&e),
            };
            flow_errors += errors;
            let mut f = p.into_inner();
            if let Err(e) = f.rewind() {
                return read_failed(&e);
            }
            (dns, Box::new(f))
        }
        (FlowsInput::Stream(r), true) => {
            let copy = match spool_file() {
                Ok(f) => f,
                Err(e) => return read_failed(&format!("cannot make a temporary copy: {e}")),
            };
            let spool = Spool {
                input: r,
                copy,
                written: 0,
            };
            let mut p = Pieces::new(BufReader::new(spool), format, limit);
            let (dns, errors) = match stream::scan_dns(&mut p, &name, &mut report) {
                Ok(x) => x,
                Err(e) => return read_failed(&e),
            };
            flow_errors += errors;
            let mut copy = p.into_inner().into_inner().copy;
            if let Err(e) = copy.rewind() {
                return read_failed(&e);
            }
            (dns, Box::new(BufReader::new(copy)))
        }
    };
    if flow_errors > 0 {
        eprintln!("error: the `dns` answers of {name} have errors; nothing was judged");
        return ExitCode::from(2);
    }
    let s = match compile_parsed(inputs, color, parsed, dns) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let c = &s.compiled;
    let mut pieces = Pieces::new(reader, format, limit);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    // A replay of a file lists first the flows that differ from their
    // record: the rest wait in a temporary file (memory stays bounded),
    // and follow.
    let mut rest = match (format, output) {
        (Format::Hubble, SimOutput::Text | SimOutput::Table | SimOutput::Wide) if from_file => {
            spool_file()
                .map_err(|e| crate::warn(format!("flows are printed in input order: {e}")))
                .ok()
                .map(std::io::BufWriter::new)
        }
        _ => None,
    };
    let mut first = true;
    let mut differing = 0usize;
    // The encoding of -o json and -o yaml (the other outputs are not
    // documents).
    let doc = if output == SimOutput::Yaml {
        crate::output::Doc::Yaml
    } else {
        crate::output::Doc::Json
    };
    let begun = match output {
        SimOutput::Json | SimOutput::Yaml => crate::output::list_begin(
            &mut out,
            doc,
            &serde_json::json!({"schemaVersion": 2}),
            "flows",
        ),
        SimOutput::Text | SimOutput::Table | SimOutput::Wide => Ok(()),
    };
    if let Err(e) = begun {
        crate::stdout_failed(&e);
    }
    let mut head = vec![
        "FROM", "TO", "PORT", "VERDICT", "EXPECT", "RECORDED", "DECIDED",
    ];
    if output == SimOutput::Wide {
        head.push("RULE");
    }
    let mut table = crate::output::Table::new(head);
    // Rows the table released: the header first, to `out`; each row where
    // its flow goes (differing ones first, for a replay).
    fn route(
        lines: Vec<(Option<bool>, String)>,
        out: &mut impl Write,
        rest: &mut Option<std::io::BufWriter<std::fs::File>>,
    ) -> std::io::Result<()> {
        for (differs, line) in lines {
            match (differs, rest.as_mut()) {
                (Some(false), Some(r)) => writeln!(r, "{line}")?,
                _ => writeln!(out, "{line}")?,
            }
        }
        Ok(())
    }
    // Flows on a terminal are their own progress; written elsewhere, the
    // judged count is shown.
    if !std::io::stdout().is_terminal() {
        crate::progress::stage("judging flows", 0);
    }
    let mut buf = Vec::new();
    let mut emit = |f: &Flow, o: &Outcome, diff: &[PolicyDifference]| -> std::io::Result<()> {
        crate::progress::tick(1);
        let differs = f.expect.is_some_and(|e| e != o.verdict)
            || f.recorded.is_some_and(|r| r != o.verdict)
            || !diff.is_empty();
        buf.clear();
        match output {
            SimOutput::Json | SimOutput::Yaml => {
                crate::output::list_item(&mut buf, doc, "flows", first, flow_json(c, f, o, diff))?;
                first = false;
            }
            SimOutput::Table | SimOutput::Wide => {
                let expect = f.expect.map_or("-".to_owned(), |e| e.to_string());
                let recorded = match f.recorded {
                    None => "-".to_owned(),
                    Some(r) if r != o.verdict => format!("{r} ⚠"),
                    Some(r) if !diff.is_empty() => format!("{r} ≠"),
                    Some(r) => r.to_string(),
                };
                let decided = o
                    .decided_by
                    .map_or("-".to_owned(), |d| format!("{d:?}").to_lowercase());
                let mut cells = vec![
                    peer_text(&f.from),
                    peer_text(&f.to),
                    port_text(f),
                    o.verdict.to_string(),
                    expect,
                    recorded,
                    decided,
                ];
                if output == SimOutput::Wide {
                    let st = o.steps.iter().find(|st| Some(st.direction) == o.decided_by);
                    let rule = st.and_then(|st| st.entry).map_or_else(
                        || "default deny".to_owned(),
                        |e| {
                            e.origins
                                .iter()
                                .map(|&x| simulator::eval::origin_text(c, x))
                                .collect::<Vec<_>>()
                                .join("; ")
                        },
                    );
                    cells.push(rule);
                }
                if differs {
                    differing += 1;
                }
                return route(table.push(differs, cells), &mut out, &mut rest);
            }
            SimOutput::Text => {
                if differs && rest.is_some() && differing == 0 {
                    writeln!(buf, "Flows that differ from their record (listed first):")?;
                }
                let mark = match (f.expect, f.recorded) {
                    (Some(e), _) if e != o.verdict => " ✗ expected ".to_owned() + &e.to_string(),
                    (Some(_), _) => " ✓".to_owned(),
                    (None, Some(r)) if r != o.verdict => format!(" ⚠ CHANGED: recorded {r}"),
                    (None, Some(_)) if !diff.is_empty() => " ≠ OTHER POLICY".to_owned(),
                    (None, _) => String::new(),
                };
                let via = f
                    .service
                    .as_ref()
                    .map(|s| format!(" (service {}:{})", s.name, s.port))
                    .unwrap_or_default();
                writeln!(
                    buf,
                    "{:<8} {} → {}{via} {}{}{mark}",
                    o.verdict.to_string().to_uppercase(),
                    peer_text(&f.from),
                    peer_text(&f.to),
                    port_text(f),
                    f.l7.as_ref().map(request_text).unwrap_or_default()
                )?;
                if let Some(e) = &f.expanded {
                    writeln!(buf, "         {e}")?;
                }
                for (gone, now) in f.replay.iter().flat_map(|r| &r.stood_in) {
                    writeln!(
                        buf,
                        "         {gone} is gone: judged as {now}, of the identity Hubble recorded"
                    )?;
                }
                if let Some(st) = o.steps.iter().find(|st| Some(st.direction) == o.decided_by) {
                    writeln!(buf, "         {}", explain_step(c, st))?;
                }
                for st in &o.steps {
                    if let Some(a) = simulator::eval::explain_audit(c, st) {
                        writeln!(buf, "         {a}")?;
                    }
                }
                for d in diff {
                    writeln!(buf, "         ≠ {}", simulator::eval::explain_difference(d))?;
                }
            }
        }
        if differs {
            differing += 1;
        }
        match rest.as_mut() {
            Some(r) if !differs => r.write_all(&buf),
            _ => out.write_all(&buf),
        }
    };
    let result = stream::judge_stream(&mut pieces, &name, c, &s.inventory, &mut report, &mut emit);
    let sum = match result {
        Ok(sum) => sum,
        Err(stream::StreamError::Read(e)) => {
            let _ = out.flush();
            return read_failed(&e);
        }
        // The reader went away (`| head`): nothing more to say.
        Err(stream::StreamError::Write(e)) => crate::stdout_failed(&e),
    };
    crate::progress::clear();
    let tabled = matches!(output, SimOutput::Table | SimOutput::Wide);
    if let Err(e) = route(
        if tabled { table.finish() } else { Vec::new() },
        &mut out,
        &mut rest,
    ) {
        crate::stdout_failed(&e);
    }
    if let Some(r) = rest {
        let copied = r
            .into_inner()
            .map_err(|e| e.into_error())
            .and_then(|mut f| {
                if f.stream_position()? == 0 {
                    return Ok(());
                }
                if differing > 0 && output == SimOutput::Text {
                    writeln!(out, "Other flows:")?;
                }
                f.rewind()?;
                std::io::copy(&mut f, &mut out).map(|_| ())
            });
        if copied.is_err() {
            return ExitCode::from(2);
        }
    }
    // The counts after the flows, in the same document.
    let counts = serde_json::json!({
        "mismatches": sum.mismatches,
        "changed": sum.changed,
        "policyDifferences": sum.policy_differences,
        "notJudged": {
            "replies": sum.replies,
            "established": sum.established,
            "nonPolicyDrops": sum.non_policy_drops,
            "podsGone": sum.pods_gone,
        },
        "stoodIn": sum.stood_in,
        "errors": sum.errors,
    });
    let ended = match output {
        SimOutput::Json | SimOutput::Yaml => {
            crate::output::list_end(&mut out, doc, "flows", first, Some(&counts))
        }
        SimOutput::Table | SimOutput::Wide => Ok(()),
        SimOutput::Text => {
            let r = writeln!(
                out,
                "{} {}: {} allowed, {} denied; {} of {} expectations met",
                sum.flows,
                plural(sum.flows, "flow", "flows"),
                sum.allowed,
                sum.denied,
                sum.expected - sum.mismatches,
                sum.expected,
            );
            let r = if sum.recorded > 0 {
                r.and_then(|()| {
                    writeln!(
                        out,
                        "{} recorded {} would change verdict under these policies (marked CHANGED)",
                        sum.changed,
                        plural(sum.changed, "flow", "flows")
                    )
                })
            } else {
                r
            };
            let r = if sum.policy_differences > 0 {
                r.and_then(|()| {
                    writeln!(
                        out,
                        "{} recorded {}: Hubble names other deciding policies than sluice (marked ≠)",
                        sum.policy_differences,
                        plural(sum.policy_differences, "flow", "flows")
                    )
                })
            } else {
                r
            };
            r.and_then(|()| match replay_summary(&sum) {
                Some(line) => writeln!(out, "{line}"),
                None => Ok(()),
            })
        }
    };
    if let Err(e) = ended.and_then(|()| out.flush()) {
        crate::stdout_failed(&e);
    }
    drop(out);
    if sum.errors > 0 {
        eprintln!(
            "error: {} {} in {name}: those flows were not judged",
            sum.errors,
            plural(sum.errors, "error", "errors")
        );
        return ExitCode::from(2);
    }
    if sum.flows == 0 {
        crate::warn(format!("{name} holds no flows: nothing was judged"));
    }
    if require_expectations && sum.expected == 0 {
        eprintln!("error: --require-expectations: no flow of {name} has an `expect`");
        return ExitCode::from(1);
    }
    if sum.mismatches == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// One judged flow in `simulate -o json`.
fn flow_json(c: &Compiled, f: &Flow, o: &Outcome, diff: &[PolicyDifference]) -> serde_json::Value {
    let decided = o.steps.iter().find(|st| Some(st.direction) == o.decided_by);
    serde_json::json!({
        "from": peer_text(&f.from),
        "to": peer_text(&f.to),
        "port": f.port,
        "protocol": compiler::mapstate::proto_name(f.protocol),
        "verdict": o.verdict,
        "expect": f.expect,
        "recorded": f.recorded,
        "changed": f.recorded.map(|r| r != o.verdict),
        "service": f.service,
        "expandedFrom": f.expanded,
        "stoodInFor": f.replay.as_ref().map(|r| r.stood_in.iter().map(|(gone, _)| gone).collect::<Vec<_>>()).filter(|v| !v.is_empty()),
        "policyDifferences": diff,
        "decidedBy": o.decided_by,
        "reason": decided.map(|st| explain_step(c, st)),
        "steps": o.steps.iter().map(|st| step_json(c, st)).collect::<Vec<_>>(),
        "origins": decided.and_then(|st| st.entry.as_ref()).map(|e| e.origins.iter().map(|&x| simulator::eval::origin_text(c, x)).collect::<Vec<_>>()),
        "audit": audit_json(c, o),
    })
}

/// One direction's lookup, with the deciding entry in the artifact's
/// JSON shape (`sluice compile -o json`): the port as text and origins by
/// name, never the map's numbers.
fn step_json(c: &Compiled, st: &simulator::eval::Step) -> serde_json::Value {
    let entry =
        |k: &Option<compiler::mapstate::Key>, e: Option<&compiler::mapstate::Entry>| match (k, e) {
            (Some(k), Some(e)) => {
                serde_json::to_value(compiler::artifact::json_entry(c, k, e)).unwrap_or_default()
            }
            _ => serde_json::Value::Null,
        };
    serde_json::json!({
        "direction": st.direction,
        "endpoint": st.endpoint,
        "remoteIdentity": st.remote_identity,
        "enforced": st.enforced,
        "verdict": st.verdict,
        "entry": entry(&st.key, st.entry),
        "l7": st.l7,
        "audit": st.audit.as_ref().map(|a| serde_json::json!({"entry": entry(&a.key, a.entry)})),
    })
}

pub fn trace(
    inputs: &Inputs,
    from: &str,
    to: &str,
    port: &str,
    dns: &[String],
    doc: Option<crate::output::Doc>,
    color: bool,
) -> ExitCode {
    let mut answers = Vec::new();
    for d in dns {
        let parsed = d.split_once('=').and_then(|(name, ips)| {
            let ips: Option<Vec<std::net::IpAddr>> =
                ips.split(',').map(|i| i.trim().parse().ok()).collect();
            Some((name.trim().to_owned(), ips?))
        });
        match parsed {
            Some(a) => answers.push(a),
            None => {
                eprintln!("error: --dns wants NAME=IP[,IP...], got `{d}`");
                return ExitCode::from(2);
            }
        }
    }
    let s = match load_with_dns(inputs, color, answers) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let (num, proto) = match port.split_once('/') {
        Some((n, p)) => (n, flow::protocol_number(p)),
        None => (port, Some(6)),
    };
    let (Ok(num), Some(proto)) = (num.parse::<u16>(), proto) else {
        eprintln!("error: --port must be N or N/PROTO (TCP, UDP, SCTP, ICMP), got `{port}`");
        return ExitCode::from(2);
    };
    let (src, dst) = match (PeerRef::parse(from), PeerRef::parse(to)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let f = Flow::new(src, dst, num, proto);
    let c = &s.compiled;
    // A name of several pods (a workload, a selector, a CIDR) or a
    // Service is traced once for each peer it stands for.
    let pod_names = flow::PodNames::new(&s.inventory);
    let services = simulator::service::Services::new(&s.inventory);
    let mut flows = Vec::new();
    if let Some(e) = simulator::stream::expand(f, &pod_names, &services, c, &mut flows)
        .into_iter()
        .next()
    {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let mut diags = Vec::new();
    flow::check_peers(&mut flows, &pod_names, &mut diags);
    if !diags.is_empty() {
        for d in &diags {
            eprintln!("error: {}", d.message);
            if let Some(h) = &d.help {
                eprintln!("  help: {h}");
            }
        }
        return ExitCode::from(2);
    }
    let mut o = std::io::stdout().lock();
    if let Some(doc) = doc {
        let mut out = Vec::new();
        for f in &flows {
            match judge(c, f) {
                Ok(outcome) => {
                    let mut v = flow_json(c, f, &outcome, &[]);
                    v["source"] = side_json(c, &f.from);
                    v["destination"] = side_json(c, &f.to);
                    out.push(v);
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            }
        }
        drop(o);
        crate::output::print(&serde_json::json!({"schemaVersion": 2, "flows": out}), doc);
        return ExitCode::SUCCESS;
    }
    if flows.len() > 1 {
        let _ = writeln!(
            o,
            "{from} → {to} {port} stands for {} flows: each is traced\n",
            flows.len()
        );
    }
    let (mut allowed, mut denied) = (0usize, 0usize);
    for (i, f) in flows.iter().enumerate() {
        if i > 0 {
            let _ = writeln!(o);
        }
        match print_trace(&mut o, c, f) {
            Ok(simulator::flow::Verdict::Allowed) => allowed += 1,
            Ok(simulator::flow::Verdict::Denied) => denied += 1,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        }
    }
    if flows.len() > 1 {
        let _ = writeln!(
            o,
            "\n{} flows: {allowed} allowed, {denied} denied",
            flows.len()
        );
    }
    ExitCode::SUCCESS
}

/// A flow's side in `trace -o json`: the endpoint and its identity, or
/// the identity an address or entity has.
fn side_json(c: &Compiled, p: &PeerRef) -> serde_json::Value {
    let side = simulator::eval::resolve(c, p).ok();
    match side.as_ref().and_then(|sd| sd.endpoint) {
        Some(ep) => serde_json::json!({
            "endpoint": ep.name,
            "identity": ep.identity,
            "identityLabels": identity_name(c, ep.identity),
            "node": ep.node,
        }),
        None => {
            let id = match p {
                PeerRef::Ip(ip) => Some(c.identity_of_ip(*ip, None)),
                PeerRef::Entity(e) => compiler::identity::RESERVED
                    .iter()
                    .find(|(_, n)| n == e)
                    .map(|(id, _)| *id),
                PeerRef::Pod(_) => None,
            };
            serde_json::json!({
                "peer": peer_text(p),
                "identity": id,
                "identityLabels": id.map(|i| identity_name(c, i)),
            })
        }
    }
}

/// The lookups of one flow, step by step; its verdict.
pub(crate) fn print_trace(
    o: &mut dyn Write,
    c: &Compiled,
    f: &Flow,
) -> Result<simulator::flow::Verdict, String> {
    let outcome = judge(c, f)?;
    let via = f
        .service
        .as_ref()
        .map(|s| format!(" (service {}:{})", s.name, s.port))
        .unwrap_or_default();
    let _ = writeln!(o, "Tracing {} → {}{via} {}", f.from, f.to, port_text(f));
    for (label, p) in [("source", &f.from), ("destination", &f.to)] {
        let side = simulator::eval::resolve(c, p).ok();
        let desc = match side.as_ref().and_then(|sd| sd.endpoint) {
            Some(ep) => format!(
                "endpoint {} (identity {}, node {})",
                ep.name,
                identity_name(c, ep.identity),
                ep.node.as_deref().unwrap_or("-")
            ),
            None => match p {
                PeerRef::Ip(ip) => format!(
                    "{ip}, not an endpoint: identity {}",
                    identity_name(c, c.identity_of_ip(*ip, None))
                ),
                other => format!("{other} (reserved identity, not an endpoint)"),
            },
        };
        let _ = writeln!(o, "  {label}: {desc}");
    }
    for st in &outcome.steps {
        let dir = format!("{:?}", st.direction).to_lowercase();
        let _ = writeln!(o, "\n{dir} at {}:", st.endpoint);
        let _ = writeln!(
            o,
            "  peer identity seen here: {}",
            identity_name(c, st.remote_identity)
        );
        let ep = c.endpoint(st.endpoint);
        let idx = usize::from(st.direction == policy_lang::ir::Direction::Egress);
        let _ = writeln!(
            o,
            "  {}",
            if st.enforced {
                format!("{dir} is enforced (default deny): a policy selecting this endpoint has {dir} rules")
            } else {
                format!("{dir} is not enforced: no policy selecting this endpoint has {dir} rules (default allow)")
            }
        );
        if let Some(ep) = ep {
            let _ = writeln!(o, "  policies selecting {}:", ep.name);
            if ep.selected_by.is_empty() {
                let _ = writeln!(o, "    (none)");
            }
            for &x in &ep.selected_by {
                let _ = writeln!(o, "    {}", simulator::eval::origin_text(c, x));
            }
            let m = &c.maps[ep.map];
            let egress = idx == 1;
            let considered: Vec<_> = m
                .entries
                .iter()
                .filter(|(k, _)| {
                    k.egress == egress
                        && (k.identity == st.remote_identity || k.identity == 0)
                        && k.matches(f.protocol, f.port)
                })
                .collect();
            let _ = writeln!(
                o,
                "  entries matching identity {} or any, {}:",
                st.remote_identity,
                port_text(f)
            );
            if considered.is_empty() {
                let _ = writeln!(o, "    (none)");
            }
            for (k, e) in considered {
                let what = if e.deny {
                    "deny "
                } else if e.redirect {
                    "allow+L7"
                } else {
                    "allow"
                };
                let origins: Vec<String> = e
                    .origins
                    .iter()
                    .map(|&x| simulator::eval::origin_text(c, x))
                    .collect();
                let _ = writeln!(
                    o,
                    "    {what:<8} identity {:<10} {:<12} prefix {:>2} precedence {:<10} ← {}",
                    k.identity,
                    k.port_text(),
                    40 + k.plen,
                    e.precedence,
                    origins.join("; ")
                );
            }
        }
        let _ = writeln!(o, "  decision: {}", explain_step(c, st));
    }
    let _ = writeln!(
        o,
        "\nFinal verdict: {}",
        outcome.verdict.to_string().to_uppercase()
    );
    Ok(outcome.verdict)
}

/// Without pods nothing is selected: an empty state must not read as a
/// checked one.
pub(crate) fn warn_without_inventory(inputs: &Inputs) {
    if inputs.inventory.is_empty() && !inputs.from_cluster {
        eprintln!(
            "warning: no inventory (-i or --from-cluster): no pod is selected, so there are no endpoints to compile for"
        );
    }
}

fn doc_of(o: CompileOutput) -> crate::output::Doc {
    if o == CompileOutput::Yaml {
        crate::output::Doc::Yaml
    } else {
        crate::output::Doc::Json
    }
}

/// ` HTTP PUT /v1/exhaust-port`, ` Kafka key 0 topic t`, ` DNS example.com`.
fn request_text(r: &compiler::l7::Request) -> String {
    use compiler::l7::Request;
    match r {
        Request::Http {
            method, path, host, ..
        } => format!(
            " HTTP {method} {path}{}",
            if host.is_empty() {
                String::new()
            } else {
                format!(" (host {host})")
            }
        ),
        Request::Kafka {
            api_key,
            api_version,
            client_id,
            topic,
        } => format!(
            " Kafka key {api_key} v{api_version}{}{}",
            if client_id.is_empty() {
                String::new()
            } else {
                format!(" client {client_id}")
            },
            if topic.is_empty() {
                String::new()
            } else {
                format!(" topic {topic}")
            }
        ),
        Request::Dns { query } => format!(" DNS {query}"),
    }
}
