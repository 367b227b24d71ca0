//! compile, simulate and trace: load, compile, report.

use crate::{plural, CompileOutput, Inputs, SimOutput};
use compiler::compile::{compile as compile_state, Compiled, Config};
use compiler::inventory::{self, Inventory};
use policy_lang::diag::Diagnostic;
use policy_lang::source::SourceMap;
use policy_lang::Loaded;
use simulator::eval::{explain_step, identity_name, simulate as judge, Outcome};
use simulator::flow::{self, Flow, PeerRef, Verdict};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

fn print_diags(diags: &[Diagnostic], sources: &SourceMap, color: bool) {
    let mut err = std::io::stderr().lock();
    for d in diags {
        let _ = write!(err, "{}", d.render(sources, color));
    }
}

/// Policies, inventory and compiled state, or the exit code when the input
/// cannot be compiled (it is never enforced or judged as "allow").
pub(crate) struct Session {
    pub(crate) loaded: Loaded,
    pub(crate) inventory: Inventory,
    pub(crate) compiled: Compiled,
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
pub(crate) fn load_fetched(
    inputs: &Inputs,
    color: bool,
    dns: Vec<(String, Vec<std::net::IpAddr>)>,
    cluster: &ClusterTexts,
) -> Result<Session, ExitCode> {
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
    let mut inventory =
        inventory::load_limited(&paths, inputs.max_bytes(), &mut loaded.sources, &mut diags);
    if let Some(text) = &cluster.inventory {
        let live = inventory::parse_str("<cluster>", text, &mut loaded.sources, &mut diags);
        inventory.namespaces.extend(live.namespaces);
        inventory.pods.extend(live.pods);
        inventory.nodes.extend(live.nodes);
        inventory.services.extend(live.services);
    }
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
    let (compiled, compile_diags) = if policy_errors == 0 && !diags.iter().any(Diagnostic::is_error)
    {
        compile_state(&loaded.set, &loaded.sources, &inventory, &cfg)
    } else {
        (Compiled::default(), Vec::new())
    };
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
    })
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
    if s.loaded.set.policies.is_empty() {
        // A truncated dump or a wrong path must not pass for a policy set
        // that allows everything without anyone noticing.
        eprintln!(
            "warning: no policies in the input: every endpoint is default-allow in both directions"
        );
    }
    let json = || serde_json::to_string_pretty(&compiler::artifact::to_json(c)).unwrap_or_default();
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
        (CompileOutput::Json, None) => {
            println!("{}", json());
            ExitCode::SUCCESS
        }
        (CompileOutput::Json, Some(p)) => write(p, json().as_bytes()),
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
            "compiled {} {} for {} {}: {} identities, {} ipcache entries, {} endpoints ({} distinct policy maps, {entries} entries)",
            s.loaded.set.policies.len(),
            plural(s.loaded.set.policies.len(), "policy", "policies"),
            s.inventory.pods.len(),
            plural(s.inventory.pods.len(), "pod", "pods"),
            st.identities,
            st.ipcache_entries,
            st.endpoints,
            st.distinct_maps,
        );
        if stats {
            let _ = writeln!(
                o,
                "{:<48} {:>10} {:>8} {:>8}",
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
                    "{:<48} {:>10} {:>8} {:>8}",
                    e.name,
                    e.identity,
                    c.maps[e.map].len(),
                    enforced
                );
            }
        }
    }
    code
}

/// Whether a flows file holds Hubble JSON lines rather than compact YAML.
fn is_hubble(path: &Path, hubble: bool) -> bool {
    hubble
        || path
            .extension()
            .is_some_and(|e| e == "json" || e == "jsonl")
}

/// Parses a flows text (read once by the caller) added to `sources`.
fn parse_flows(
    path: &Path,
    text: String,
    hubble: bool,
    sources: &mut SourceMap,
    diags: &mut Vec<Diagnostic>,
) -> Vec<Flow> {
    let id = sources.add(path.display().to_string(), text);
    let text = sources.get(id).text.clone();
    if is_hubble(path, hubble) {
        flow::parse_hubble(&text, id, sources, diags)
    } else {
        flow::parse_yaml(&text, id, diags)
    }
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

pub fn simulate(
    inputs: &Inputs,
    flows_path: &Path,
    hubble: bool,
    require_expectations: bool,
    output: SimOutput,
    color: bool,
) -> ExitCode {
    // The flows file is read exactly once (it may be a pipe): its DNS
    // answers feed toFQDNs, so they are taken before compiling, from the
    // `dns:` section or from recorded Hubble DNS responses.
    let text = match policy_lang::read_text(flows_path, inputs.max_bytes()) {
        Ok(t) => t,
        Err(d) => {
            print_diags(&[*d], &SourceMap::new(), color);
            return ExitCode::from(2);
        }
    };
    let mut dns_diags = Vec::new();
    let dns = if is_hubble(flows_path, hubble) {
        flow::hubble_dns_answers(&text)
    } else {
        let mut scratch = SourceMap::new();
        let id = scratch.add(flows_path.display().to_string(), text.clone());
        flow::parse_dns(&text, id, &mut dns_diags)
    };
    let mut s = match load_with_dns(inputs, color, dns) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let mut diags = Vec::new();
    let flows = parse_flows(flows_path, text, hubble, &mut s.loaded.sources, &mut diags);
    if !dns_diags.is_empty() {
        // Parsed again against the file as loaded (from the text already
        // read), so that the problems of the `dns` section point into it.
        if let Some((id, file)) = s.loaded.sources.iter().last() {
            let text = file.text.to_string();
            let _ = flow::parse_dns(&text, id, &mut diags);
        }
    }
    flow::check_peers(&flows, &s.inventory, &mut diags);
    print_diags(&diags, &s.loaded.sources, color);
    if diags.iter().any(Diagnostic::is_error) {
        return ExitCode::from(2);
    }
    if flows.is_empty() {
        eprintln!(
            "warning: {} holds no flows: nothing was judged",
            flows_path.display()
        );
    }
    let expected = flows.iter().filter(|f| f.expect.is_some()).count();
    if require_expectations && expected == 0 {
        eprintln!(
            "error: --require-expectations: no flow of {} has an `expect`",
            flows_path.display()
        );
        return ExitCode::from(1);
    }
    let c = &s.compiled;
    let mut results: Vec<(&Flow, Outcome)> = Vec::with_capacity(flows.len());
    for f in &flows {
        match judge(c, f) {
            Ok(o) => results.push((f, o)),
            Err(e) => {
                eprintln!("error: {}: {e}", f.loc);
                return ExitCode::from(2);
            }
        }
    }
    let mismatches: Vec<&(&Flow, Outcome)> = results
        .iter()
        .filter(|(f, o)| f.expect.is_some_and(|e| e != o.verdict))
        .collect();
    let changed = results
        .iter()
        .filter(|(f, o)| f.recorded.is_some_and(|r| r != o.verdict))
        .count();
    let mut out = std::io::stdout().lock();
    match output {
        SimOutput::Json => {
            let flows_json: Vec<serde_json::Value> = results
                .iter()
                .map(|(f, o)| {
                    let decided = o.steps.iter().find(|st| Some(st.direction) == o.decided_by);
                    serde_json::json!({
                        "from": peer_text(&f.from),
                        "to": peer_text(&f.to),
                        "port": f.port,
                        "protocol": compiler::mapstate::proto_name(f.protocol),
                        "verdict": o.verdict,
                        "expect": f.expect,
                        "recorded": f.recorded,
                        "decidedBy": o.decided_by,
                        "reason": decided.map(|st| explain_step(c, st)),
                        "steps": o.steps,
                        "origins": decided.and_then(|st| st.entry.as_ref()).map(|e| e.origins.iter().map(|&x| simulator::eval::origin_text(c, x)).collect::<Vec<_>>()),
                        "audit": audit_json(c, o),
                    })
                })
                .collect();
            let doc = serde_json::json!({
                "schemaVersion": 1,
                "flows": flows_json,
                "mismatches": mismatches.len(),
                "changed": changed,
            });
            let _ = writeln!(out, "{doc:#}");
        }
        SimOutput::Table => {
            let _ = writeln!(
                out,
                "{:<28} {:<28} {:<10} {:<8} {:<8} DECIDED",
                "FROM", "TO", "PORT", "VERDICT", "EXPECT"
            );
            for (f, o) in &results {
                let expect = f.expect.map_or("-".to_owned(), |e| e.to_string());
                let decided = o
                    .decided_by
                    .map_or("-".to_owned(), |d| format!("{d:?}").to_lowercase());
                let _ = writeln!(
                    out,
                    "{:<28} {:<28} {:<10} {:<8} {:<8} {decided}",
                    peer_text(&f.from),
                    peer_text(&f.to),
                    port_text(f),
                    o.verdict.to_string(),
                    expect
                );
            }
        }
        SimOutput::Text => {
            for (f, o) in &results {
                let mark = match f.expect {
                    Some(e) if e != o.verdict => " ✗ expected ".to_owned() + &e.to_string(),
                    Some(_) => " ✓".to_owned(),
                    None => String::new(),
                };
                let _ = writeln!(
                    out,
                    "{:<8} {} → {} {}{}{mark}",
                    o.verdict.to_string().to_uppercase(),
                    peer_text(&f.from),
                    peer_text(&f.to),
                    port_text(f),
                    f.l7.as_ref().map(request_text).unwrap_or_default()
                );
                if let Some(st) = o.steps.iter().find(|st| Some(st.direction) == o.decided_by) {
                    let _ = writeln!(out, "         {}", explain_step(c, st));
                }
                for st in &o.steps {
                    if let Some(a) = simulator::eval::explain_audit(c, st) {
                        let _ = writeln!(out, "         {a}");
                    }
                }
            }
            let _ = writeln!(
                out,
                "{} {}: {} allowed, {} denied; {} of {} expectations met",
                results.len(),
                plural(results.len(), "flow", "flows"),
                results
                    .iter()
                    .filter(|(_, o)| o.verdict == Verdict::Allowed)
                    .count(),
                results
                    .iter()
                    .filter(|(_, o)| o.verdict == Verdict::Denied)
                    .count(),
                expected - mismatches.len(),
                expected
            );
            if results.iter().any(|(f, _)| f.recorded.is_some()) {
                let _ = writeln!(
                    out,
                    "{changed} recorded flows would change verdict under these policies"
                );
            }
        }
    }
    if mismatches.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

pub fn trace(
    inputs: &Inputs,
    from: &str,
    to: &str,
    port: &str,
    dns: &[String],
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
    let f = Flow {
        from: src,
        to: dst,
        port: num,
        protocol: proto,
        expect: None,
        loc: Default::default(),
        recorded: None,
        l7: None,
    };
    let mut diags = Vec::new();
    flow::check_peers(std::slice::from_ref(&f), &s.inventory, &mut diags);
    if !diags.is_empty() {
        for d in &diags {
            eprintln!("error: {}", d.message);
        }
        return ExitCode::from(2);
    }
    let c = &s.compiled;
    let outcome = match judge(c, &f) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "Tracing {} → {} {}", from, to, port_text(&f));
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
                port_text(&f)
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
    ExitCode::SUCCESS
}

pub fn matrix(inputs: &Inputs, json: bool, color: bool) -> ExitCode {
    let s = match load(inputs, color) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let c = &s.compiled;
    let m = simulator::matrix::matrix(c);
    let mut o = std::io::BufWriter::new(std::io::stdout().lock());
    if json {
        let rows: Vec<serde_json::Value> = m
            .iter()
            .filter(|(_, _, a)| !a.is_none())
            .map(|(a, b, x)| serde_json::json!({"from": c.endpoints[*a].name, "to": c.endpoints[*b].name, "allowed": x}))
            .collect();
        let _ = writeln!(
            o,
            "{:#}",
            serde_json::json!({"schemaVersion": 1, "pairs": rows})
        );
    } else {
        for (a, b, x) in &m {
            if !x.is_none() {
                let _ = writeln!(
                    o,
                    "{} => {} : {}",
                    c.endpoints[*a].name,
                    c.endpoints[*b].name,
                    x.text()
                );
            }
        }
    }
    ExitCode::SUCCESS
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
