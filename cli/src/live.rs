//! The commands that touch the kernel: `sluice agent` (enforce),
//! `sluice observe` (events and metrics of a running agent) and
//! `sluice teardown` (remove what an agent pinned).

use crate::commands::{fetch_cluster, load, load_fetched, ClusterTexts};
use crate::Inputs;
use agent::observe::{prometheus, serve, Pinned};
use agent::reconcile::Reconciler;
use compiler::compile::Compiled;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the agent enforces.
pub enum Source {
    /// Policies and inventory, compiled on every change.
    Inputs(Inputs),
    /// A compiled artifact file, decoded on every change.
    Artifact(PathBuf),
}

impl Source {
    fn watched(&self) -> Vec<PathBuf> {
        match self {
            Source::Inputs(i) => i.policies.iter().chain(&i.inventory).cloned().collect(),
            Source::Artifact(a) => vec![a.clone()],
        }
    }

    /// The compiled state, or `None` (reported) when it cannot be had.
    /// `dns`: the answers the L7 proxy has seen, for toFQDNs; `cluster`:
    /// what was last read from the cluster, read again when `refetch`.
    fn state(
        &self,
        color: bool,
        dns: Vec<(String, Vec<std::net::IpAddr>)>,
        cluster: &mut Option<ClusterTexts>,
        refetch: bool,
    ) -> Option<Compiled> {
        match self {
            Source::Inputs(i) => {
                if refetch || cluster.is_none() {
                    *cluster = Some(fetch_cluster(i).ok()?);
                }
                let texts = cluster.as_ref()?;
                load_fetched(i, color, dns, texts).ok().map(|s| s.compiled)
            }
            Source::Artifact(path) => {
                let read = read_artifact(path);
                if let Err(e) = &read {
                    eprintln!("error: {}: {e}", path.display());
                }
                read.ok()
            }
        }
    }
}

/// Reads and decodes an artifact file (size-checked before reading, like
/// policy files).
pub fn read_artifact(path: &Path) -> Result<Compiled, String> {
    const LIMIT: u64 = 512 << 20;
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if meta.len() > LIMIT {
        return Err(format!(
            "{} bytes, more than the {LIMIT}-byte limit",
            meta.len()
        ));
    }
    // Bounded read as well: a FIFO or device reports no size.
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(
        &mut std::io::Read::take(
            std::fs::File::open(path).map_err(|e| e.to_string())?,
            LIMIT + 1,
        ),
        &mut bytes,
    )
    .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > LIMIT {
        return Err(format!("more than the {LIMIT}-byte limit"));
    }
    compiler::artifact::decode(&bytes).map_err(|e| e.to_string())
}

/// How `sluice agent` runs, beyond its inputs.
pub struct AgentOptions {
    pub node: Option<String>,
    pub interval_ms: u64,
    pub duration_s: Option<u64>,
    /// Print verdict events: `Some(true)` as Hubble JSON, `Some(false)` as text.
    pub observe_json: Option<bool>,
    /// bpffs directory for pinned maps and links; `None`: nothing pinned,
    /// enforcement ends with the process.
    pub bpffs: Option<PathBuf>,
    pub metrics: Option<SocketAddr>,
    /// With --from-cluster: how often to read the cluster again.
    pub resync_s: u64,
    /// Interface names (globs) accepted as endpoint interfaces besides
    /// veths whose peer is in another namespace.
    pub endpoint_interfaces: Vec<String>,
    /// Run even when there is nothing to enforce at start.
    pub allow_empty: bool,
}

/// This machine's name, which Cilium uses as its node name by default.
fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
}

/// Whether the first state gives this agent something to enforce: an
/// inventory, endpoints on this node, and pod interfaces for them. Checked
/// before anything is loaded or pinned; the error says what is missing.
fn preflight(
    source: &Source,
    first: &Compiled,
    node: Option<&str>,
    o: &AgentOptions,
) -> Result<(), String> {
    if let Source::Inputs(i) = source {
        if i.inventory.is_empty() && !i.from_cluster {
            return Err(
                "no inventory (-i or --from-cluster): there are no endpoints to enforce".into(),
            );
        }
    }
    let local = first
        .endpoints
        .iter()
        .filter(|e| !e.host && (node.is_none() || e.node.as_deref() == node))
        .count();
    if local == 0 {
        let nodes: std::collections::BTreeSet<&str> = first
            .endpoints
            .iter()
            .filter_map(|e| e.node.as_deref())
            .collect();
        return Err(format!(
            "node `{}` has no endpoints in the inventory (nodes that have: {}); name this node with --node",
            node.unwrap_or("?"),
            if nodes.is_empty() { "none".to_owned() } else { nodes.into_iter().collect::<Vec<_>>().join(", ") }
        ));
    }
    let (ok, refused) = agent::reconcile::preflight(first, node, &o.endpoint_interfaces);
    if ok.is_empty() {
        return Err(format!(
            "none of the {local} endpoints of node `{}` is behind a pod interface here:\n  {}",
            node.unwrap_or("?"),
            refused.join("\n  ")
        ));
    }
    Ok(())
}

/// The newest modification time among the inputs (files and directories,
/// recursively), to notice changes without an inotify dependency.
fn newest_mtime(paths: &[PathBuf]) -> Option<std::time::SystemTime> {
    fn walk(p: &Path, best: &mut Option<std::time::SystemTime>, depth: usize) {
        let Ok(meta) = std::fs::metadata(p) else {
            return;
        };
        if let Ok(m) = meta.modified() {
            if best.is_none_or(|b| m > b) {
                *best = Some(m);
            }
        }
        if meta.is_dir() && depth < 16 {
            if let Ok(rd) = std::fs::read_dir(p) {
                for e in rd.flatten() {
                    walk(&e.path(), best, depth + 1);
                }
            }
        }
    }
    let mut best = None;
    for p in paths {
        walk(p, &mut best, 0);
    }
    best
}

/// Events the datapath could not deliver, reported as they happen, as
/// Hubble reports its lost events. Losses from before the reader started
/// (nobody reading, the rings full) are not reported.
#[derive(Default)]
struct LostEvents {
    seen: Option<u64>,
}

impl LostEvents {
    /// A line for the events lost since the last call, if any.
    fn report(&mut self, total: u64, json: bool) -> Option<String> {
        let before = self.seen.replace(total).unwrap_or(total);
        let n = total.checked_sub(before).filter(|n| *n > 0)?;
        Some(if json {
            let time = jiff::Timestamp::now().to_string();
            // Hubble's LostEvent: uint64 fields are strings in its JSON.
            serde_json::json!({"time": time, "lost_events": {
                "source": "PERF_EVENT_RING_BUFFER",
                "num_events_lost": n.to_string(),
            }})
            .to_string()
        } else {
            format!(
                "EVENTS LOST: {n} (the readers fell behind; the packets were judged all the same)"
            )
        })
    }
}

/// An event as one line: text, or Hubble's JSON flow shape.
fn event_line(c: Option<&Compiled>, e: &agent::maps::Event, json: bool) -> String {
    let (src, dst) = (e.saddr, e.daddr);
    let (sport, dport) = (e.sport, e.dport);
    let verdict = match e.verdict {
        agent::maps::VERDICT_FORWARDED => "FORWARDED",
        agent::maps::VERDICT_REDIRECTED => "REDIRECTED",
        agent::maps::VERDICT_AUDIT => "AUDIT",
        _ => "DROPPED",
    };
    // An AUDIT verdict names the policies in audit mode that would have
    // dropped the packet.
    let audited: Vec<String> = match (c, e.verdict) {
        (Some(c), agent::maps::VERDICT_AUDIT) => audit_policies(c, e),
        _ => Vec::new(),
    };
    let direction = if e.egress == 1 { "EGRESS" } else { "INGRESS" };
    let proto = compiler::mapstate::proto_name(e.proto);
    let pod = |a: std::net::IpAddr| {
        c.and_then(|c| c.endpoint_by_ip(a))
            .map(|ep| ep.name.clone())
    };
    let time = jiff::Timestamp::try_from(e.time).ok();
    if !json {
        // As `hubble observe` prints flows: the time first (UTC, to the
        // millisecond; events are precise to a kernel tick).
        let time = time.map_or_else(|| "-".to_owned(), |t| format!("{t:.3}"));
        return format!(
            "{time} {verdict:<9} {direction:<7} {}:{sport} → {}:{dport} {proto} (remote identity {}){}",
            pod(src).unwrap_or_else(|| src.to_string()),
            pod(dst).unwrap_or_else(|| dst.to_string()),
            e.remote_identity,
            if audited.is_empty() {
                String::new()
            } else {
                format!(" would be denied by {}", audited.join(", "))
            }
        );
    }
    let ep_json = |a: std::net::IpAddr| match pod(a).as_deref().and_then(|n| n.split_once('/')) {
        Some((ns, name)) => serde_json::json!({"namespace": ns, "pod_name": name}),
        None => serde_json::json!({}),
    };
    let l4 = match e.proto {
        1 => serde_json::json!({"ICMPv4": {"type": dport}}),
        58 => serde_json::json!({"ICMPv6": {"type": dport}}),
        p => {
            serde_json::json!({ compiler::mapstate::proto_name(p): {"source_port": sport, "destination_port": dport}})
        }
    };
    let reason = match (e.verdict, e.reason) {
        (agent::maps::VERDICT_FORWARDED | agent::maps::VERDICT_REDIRECTED, _) => {
            serde_json::Value::Null
        }
        (_, 2) => "POLICY_DENY".into(),
        (_, 5) => "PROXY_UNAVAILABLE".into(),
        _ => "POLICY_DENIED".into(),
    };
    // When the packet was judged, as in Hubble's flows.
    let time = time.map_or(serde_json::Value::Null, |t| t.to_string().into());
    let mut flow = serde_json::json!({
        "time": time.clone(),
        "verdict": verdict,
        "drop_reason_desc": reason,
        "IP": {"source": src.to_string(), "destination": dst.to_string(), "ipVersion": if src.is_ipv6() { "IPv6" } else { "IPv4" }},
        "l4": l4,
        "source": ep_json(src),
        "destination": ep_json(dst),
        "traffic_direction": direction,
        "Type": "L3_L4",
    });
    if !audited.is_empty() {
        // As Hubble names deciding policies: kind, namespace and name.
        let by: Vec<serde_json::Value> = audited
            .iter()
            .map(|p| {
                let (kind, qualified) = p.split_once(' ').unwrap_or(("", p));
                let (ns, name) = qualified.split_once('/').unwrap_or(("", qualified));
                serde_json::json!({"kind": kind, "namespace": ns, "name": name})
            })
            .collect();
        let key = if e.egress == 1 {
            "egress_denied_by"
        } else {
            "ingress_denied_by"
        };
        flow[key] = serde_json::Value::Array(by);
    }
    serde_json::json!({"time": time, "flow": flow}).to_string()
}

/// `sluice_audit_total{policy}`: packets passed in audit mode, by the
/// policy that would have dropped them (from the events read).
fn audit_metrics(audits: &std::collections::BTreeMap<String, u64>) -> String {
    let mut o = String::from(
        "# HELP sluice_audit_total Packets a policy in audit mode would have dropped (passed), by policy.\n# TYPE sluice_audit_total counter\n",
    );
    for (p, n) in audits {
        let p = p.replace('\\', "\\\\").replace('"', "\\\"");
        o.push_str(&format!("sluice_audit_total{{policy=\"{p}\"}} {n}\n"));
    }
    o
}

/// Counts an AUDIT event for each policy it names.
fn count_audit(
    audits: &mut std::collections::BTreeMap<String, u64>,
    c: &Compiled,
    e: &agent::maps::Event,
) {
    if e.verdict == agent::maps::VERDICT_AUDIT {
        for p in audit_policies(c, e) {
            *audits.entry(p).or_default() += 1;
        }
    }
}

/// The policies in audit mode an AUDIT event is due to, from the compiled
/// state: the endpoint whose map judged it (the source at egress, the
/// destination at ingress) and its audit map.
fn audit_policies(c: &Compiled, e: &agent::maps::Event) -> Vec<String> {
    let at = if e.egress == 1 { e.saddr } else { e.daddr };
    match c.endpoint_by_ip(at) {
        Some(ep) => simulator::eval::audit_policies_of(
            c,
            ep,
            e.remote_identity,
            e.egress == 1,
            e.proto,
            e.dport,
        ),
        None => Vec::new(),
    }
}

pub fn agent(source: &Source, o: &AgentOptions, color: bool) -> ExitCode {
    // Cilium's node name is the host's name unless told otherwise.
    let node = o.node.clone().or_else(hostname);
    let mut cluster: Option<ClusterTexts> = None;
    // Refuse to enforce nothing, before anything is loaded or pinned: an
    // agent that finds no pods of its node (a laptop, a wrong --node, a
    // missing inventory) would otherwise sit on the node doing nothing, or
    // worse, attach where the routes lead.
    if !o.allow_empty {
        let Some(first) = source.state(color, Vec::new(), &mut cluster, true) else {
            eprintln!("error: the inputs do not compile; nothing was loaded");
            return ExitCode::from(2);
        };
        if let Err(e) = preflight(source, &first, node.as_deref(), o) {
            eprintln!("error: {e}\n(nothing was loaded; --allow-empty runs the agent anyway)");
            return ExitCode::from(2);
        }
    }
    agent::signals::install();
    let (mut rec, adopted) = match Reconciler::new(node.clone(), o.bpffs.as_deref()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot load the eBPF datapath (root and BPF are needed): {e}");
            return ExitCode::from(2);
        }
    };
    // Events carry the kernel's tick count; how ticks map to wall-clock
    // time is measured once and kept current (the wall clock can be
    // stepped) for this process and for `sluice observe`.
    if let Err(e) = rec.calibrate_clock() {
        crate::warn(format!(
            "verdict events will carry the time they are read, not the time they were judged: {e}"
        ));
    }
    let mut anchored = Instant::now();
    if let Some(a) = adopted.filter(|a| a.endpoints > 0 || a.policy_entries > 0) {
        logln!(
            "adopted: {}, {}, {} (generation {}) left enforced by an earlier agent",
            crate::commands::plural_count(a.endpoints, "endpoint", "endpoints"),
            crate::commands::plural_count(a.policy_entries, "policy entry", "policy entries"),
            crate::commands::plural_count(a.ipcache_entries, "ipcache entry", "ipcache entries"),
            a.generation
        );
    }
    // The L7 proxy; DNS answers are learned when there are policies to
    // compile them into (an artifact is enforced as it is).
    let proxy = match agent::proxy::Proxy::start(matches!(source, Source::Inputs(_))) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: cannot start the L7 proxy: {e}");
            return ExitCode::from(2);
        }
    };
    if o.observe_json == Some(false) {
        proxy.shared.keep_log();
    }
    if let Err(e) = agent::proxy::install_routing()
        .map_err(|e| e.to_string())
        .and_then(|()| {
            rec.set_proxy(proxy.tcp_port, proxy.udp_port)
                .map_err(|e| e.to_string())
        })
    {
        eprintln!("error: cannot set up the L7 proxy: {e}");
        return ExitCode::from(2);
    }
    let metrics_text = Arc::new(Mutex::new(String::new()));
    let mut pinned = None;
    if let Some(addr) = o.metrics {
        let Some(dir) = o.bpffs.as_deref() else {
            eprintln!("error: --metrics reads the pinned maps; it cannot be used with --no-pin");
            return ExitCode::from(2);
        };
        match Pinned::open(dir, false).and_then(|p| Ok((p, serve(addr, metrics_text.clone())?))) {
            Ok((p, bound)) => {
                logln!("metrics: http://{bound}/metrics");
                pinned = Some(p);
            }
            Err(e) => {
                eprintln!("error: --metrics: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let watched = source.watched();
    let from_cluster = matches!(source, Source::Inputs(i) if i.from_cluster || i.cluster_policies);
    let start = Instant::now();
    let mut last: Option<std::time::SystemTime> = None;
    let mut last_resync = Instant::now();
    let mut enforcing = false;
    rec.set_endpoint_interfaces(o.endpoint_interfaces.clone());
    let mut current: Option<(Arc<Compiled>, Vec<u8>)> = None;
    let mut lost = LostEvents::default();
    // AUDIT verdicts by the policy in audit mode that would have dropped
    // them, for metrics.
    let mut audits: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    loop {
        if anchored.elapsed() >= Duration::from_secs(10) {
            let _ = rec.reanchor_clock();
            anchored = Instant::now();
        }
        // The event rings have one reader: this agent with --observe, else
        // `sluice observe`. Whoever reads them counts AUDIT verdicts by the
        // policy that would have dropped them.
        if let (Some(json), Some((c, _))) = (o.observe_json, current.as_ref()) {
            for e in rec.events() {
                count_audit(&mut audits, c, &e);
                logln!("{}", event_line(Some(c), &e, json));
            }
            if let Some(line) = lost.report(rec.events_lost(), json) {
                logln!("{line}");
            }
            if !json {
                for line in proxy.shared.drain_log() {
                    logln!("l7 {line}");
                }
            }
            let _ = std::io::stdout().flush();
        }
        let now = newest_mtime(&watched);
        let resync = from_cluster && last_resync.elapsed() >= Duration::from_secs(o.resync_s);
        // New DNS answers seen by the proxy: compiled in, so that toFQDNs
        // selects their addresses.
        let learned = proxy.shared.pending_answers();
        if now != last || resync || learned.is_some() {
            // Answers alone do not send the agent back to the API server.
            let refetch = now != last || resync;
            last = now;
            if refetch {
                last_resync = Instant::now();
            }
            match source.state(color, proxy.shared.answers(), &mut cluster, refetch) {
                // The same state again (a cluster resync with no change):
                // nothing to write.
                Some(s)
                    if current
                        .as_ref()
                        .is_some_and(|(_, bytes)| *bytes == compiler::artifact::encode(&s)) => {}
                Some(s) => match rec.apply(&s) {
                    Ok(a) => {
                        enforcing = true;
                        let bytes = compiler::artifact::encode(&s);
                        let s = Arc::new(s);
                        proxy.shared.set_state(s.clone());
                        current = Some((s, bytes));
                        logln!(
                            "applied: {}, {}, {} [{}]{}",
                            crate::commands::plural_count(
                                a.endpoints.len(),
                                "endpoint",
                                "endpoints"
                            ),
                            crate::commands::plural_count(
                                a.stats.policy_entries,
                                "policy entry",
                                "policy entries"
                            ),
                            crate::commands::plural_count(
                                a.stats.ipcache_hosts + a.stats.ipcache_prefixes,
                                "ipcache entry",
                                "ipcache entries"
                            ),
                            a.endpoints.join(", "),
                            if a.unresolved.is_empty() {
                                String::new()
                            } else {
                                format!("; no interface for {}", a.unresolved.join(", "))
                            }
                        );
                        if !a.pruned.is_empty() {
                            logln!("detached: {}", a.pruned.join(", "));
                        }
                        for r in &a.refused {
                            crate::warn(format!("{r}; not enforced"));
                        }
                        if a.endpoints.is_empty() {
                            eprintln!(
                                "warning: no endpoint of node `{}` is enforced; the agent keeps watching",
                                node.as_deref().unwrap_or("?")
                            );
                        }
                        if a.kafka_ports > 0 {
                            eprintln!(
                                "warning: {} {} Kafka rules; this agent's proxy does not parse Kafka and refuses \
                                 connections to them (`sluice simulate` judges Kafka requests)",
                                a.kafka_ports,
                                crate::plural(a.kafka_ports, "port has", "ports have")
                            );
                        }
                        if a.l7_redirects > 0 {
                            logln!(
                                "l7: {} policy {} redirect to the proxy",
                                a.l7_redirects,
                                crate::plural(a.l7_redirects, "entry", "entries")
                            );
                        }
                    }
                    Err(e) => {
                        rec.count_error();
                        eprintln!(
                            "error: the new state was refused, the previous one stays enforced: {e}"
                        )
                    }
                },
                None => {
                    rec.count_error();
                    eprintln!(
                        "error: the inputs do not compile; {}",
                        if enforcing || adopted.is_some_and(|a| a.endpoints > 0) {
                            "the previous state stays enforced"
                        } else {
                            "nothing is enforced yet"
                        }
                    )
                }
            }
            if let Some(version) = learned {
                proxy.shared.answers_enforced(version);
            }
            let _ = std::io::stdout().flush();
        }
        if let Some(p) = &pinned {
            match p.snapshot() {
                Ok(s) => {
                    if let Ok(mut t) = metrics_text.lock() {
                        *t = prometheus(&s) + &proxy.shared.prometheus() + &audit_metrics(&audits);
                    }
                }
                Err(e) => eprintln!("error: reading counters for metrics: {e}"),
            }
        }
        if o.duration_s.is_some_and(|d| start.elapsed().as_secs() >= d)
            || agent::signals::stop_requested()
        {
            break;
        }
        // Sleep in short steps so that a stop request is seen at once.
        let until = Instant::now() + Duration::from_millis(o.interval_ms.max(50));
        while Instant::now() < until && !agent::signals::stop_requested() {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    // Unpinned, enforcement ends with the process: its links go with the
    // datapath, its sockets with the proxy, and the routing it installed
    // is removed here. Pinned, everything stays for the next agent
    // (`sluice teardown` removes it).
    drop(rec);
    drop(proxy);
    if o.bpffs.is_none() {
        agent::proxy::remove_routing();
        logln!("stopped: links detached, proxy closed, routing removed");
    } else {
        logln!("stopped: enforcement stays pinned (sluice teardown removes it)");
    }
    ExitCode::SUCCESS
}

/// `sluice observe`: verdict events of a running agent, read from its
/// pinned event rings, and optionally its metrics.
pub fn observe(
    bpffs: &Path,
    inputs: Option<&Inputs>,
    json: bool,
    metrics: Option<SocketAddr>,
    duration_s: Option<u64>,
    color: bool,
) -> ExitCode {
    let mut pinned = match Pinned::open(bpffs, true) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    // Names for addresses, when the inputs are given; addresses otherwise
    // (`sluice simulate --hubble` resolves them the same way).
    let compiled = match inputs.map(|i| load(i, color)) {
        Some(Ok(s)) => Some(s.compiled),
        Some(Err(code)) => return code,
        None => None,
    };
    let text = Arc::new(Mutex::new(String::new()));
    if let Some(addr) = metrics {
        match serve(addr, text.clone()) {
            Ok(bound) => eprintln!("metrics: http://{bound}/metrics"),
            Err(e) => {
                eprintln!("error: --metrics: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let start = Instant::now();
    let mut lost = LostEvents::default();
    let mut audits: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    loop {
        let events = pinned.events();
        let mut out = std::io::stdout().lock();
        for e in &events {
            if let Some(c) = &compiled {
                count_audit(&mut audits, c, e);
            }
            if writeln!(out, "{}", event_line(compiled.as_ref(), e, json)).is_err() {
                return ExitCode::SUCCESS; // the reader went away (a closed pipe)
            }
        }
        if let Some(line) = lost.report(pinned.events_lost(), json) {
            if writeln!(out, "{line}").is_err() {
                return ExitCode::SUCCESS;
            }
        }
        let _ = out.flush();
        drop(out);
        if metrics.is_some() {
            match pinned.snapshot() {
                Ok(s) => {
                    if let Ok(mut t) = text.lock() {
                        *t = prometheus(&s) + &audit_metrics(&audits);
                    }
                }
                Err(e) => eprintln!("error: reading counters: {e}"),
            }
        }
        if duration_s.is_some_and(|d| start.elapsed().as_secs() >= d) {
            return ExitCode::SUCCESS;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `sluice teardown`: detach and unpin everything an agent left.
pub fn teardown(bpffs: &Path) -> ExitCode {
    agent::proxy::remove_routing();
    match agent::datapath::teardown(bpffs) {
        Ok(removed) => {
            logln!(
                "removed {} pinned objects under {}",
                removed.len(),
                bpffs.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{event_line, LostEvents};

    #[test]
    fn event_lines_start_with_the_time_the_packet_was_judged() {
        let e = agent::maps::Event {
            time: std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_764_115_200_250),
            saddr: [10, 0, 0, 1].into(),
            daddr: [10, 0, 0, 2].into(),
            sport: 40000,
            dport: 8001,
            proto: 6,
            egress: 1,
            verdict: 1,
            reason: 1,
            endpoint: 7,
            remote_identity: 2,
        };
        assert_eq!(
            event_line(None, &e, false),
            "2025-11-26T00:00:00.250Z DROPPED   EGRESS  10.0.0.1:40000 → 10.0.0.2:8001 TCP (remote identity 2)"
        );
        let json: serde_json::Value =
            serde_json::from_str(&event_line(None, &e, true)).unwrap_or_default();
        assert_eq!(json["time"], "2025-11-26T00:00:00.25Z");
        assert_eq!(json["flow"]["time"], json["time"]);
        assert_eq!(json["flow"]["verdict"], "DROPPED");
        assert_eq!(json["flow"]["l4"]["TCP"]["destination_port"], 8001);
    }

    #[test]
    fn lost_events_are_reported_once_and_only_after_the_reader_started() {
        let mut l = LostEvents::default();
        assert_eq!(l.report(40, false), None, "losses before the start");
        assert_eq!(l.report(40, true), None);
        let text = l.report(45, false).unwrap_or_default();
        assert!(text.starts_with("EVENTS LOST: 5 "), "{text}");
        assert_eq!(l.report(45, false), None, "reported once");
        let json: serde_json::Value =
            serde_json::from_str(&l.report(52, true).unwrap_or_default()).unwrap_or_default();
        assert_eq!(json["lost_events"]["num_events_lost"], "7");
        assert_eq!(json["lost_events"]["source"], "PERF_EVENT_RING_BUFFER");
    }
}
