//! The agent's L7 proxy: connections and datagrams whose policy entry
//! redirects to L7 are handed here by the datapath (the programs assign
//! the proxy's socket to them, see `bpf/sluice.bpf.c`), judged request by
//! request with the compiled automata, and forwarded to their original
//! destination or refused: HTTP/1.1 with 403, DNS with REFUSED.
//!
//! Every decision is the simulator's (`simulator::eval::simulate` on the
//! enforced state, with the request): what `sluice simulate` says about a
//! request is what the proxy does with it.
//!
//! Transparency: the proxy's sockets carry `IP_TRANSPARENT`, so a
//! connection accepted for `10.0.0.5:80` answers from that address. Its
//! own connections to the destination carry the client's identity in the
//! packet mark, and the destination's ingress policy judges that identity.

mod dns;
mod http;

/// The proxy's parsers without sockets, for fuzzing.
pub mod parsers {
    pub use super::dns::parse_message as dns_message;
    pub use super::http::parse_requests as http_requests;
}

use crate::maps::{MARK_FROM_PROXY, MARK_ID_MASK, MARK_TO_PROXY};
use compiler::compile::Compiled;
use compiler::l7::{L7Kind, Request};
use policy_lang::ir::Direction;
use simulator::eval::{simulate, Outcome};
use simulator::flow::{Flow, PeerRef, Verdict};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::Duration;

/// The routing table that delivers packets marked for the proxy locally.
pub const ROUTE_TABLE: u32 = 2026;
/// The priority of the rule that selects it (before the main table).
pub const RULE_PRIORITY: u32 = 90;

/// How long a DNS answer waits for the state that uses it to be enforced
/// before it is released anyway.
const LEARN_WAIT: Duration = Duration::from_secs(3);

/// Connections and datagrams handled at once; more wait in the kernel's
/// queues (TCP) or are dropped (UDP; clients retry).
const MAX_IN_FLIGHT: usize = 512;

/// DNS names whose answers are kept at most.
const MAX_NAMES: usize = 10_000;

/// DNS answers: name → addresses.
pub type Answers = Vec<(String, Vec<IpAddr>)>;

/// What the proxy shares with the agent's loop.
#[derive(Default)]
pub struct Shared {
    state: RwLock<Option<Arc<Compiled>>>,
    learned: Mutex<Learned>,
    applied: Condvar,
    log: Mutex<Vec<String>>,
    /// Whether anyone reads `log` (the agent's `--observe text`).
    logging: AtomicBool,
    in_flight: AtomicUsize,
    /// Requests judged: HTTP allowed, HTTP denied, DNS allowed, DNS denied.
    judged: [AtomicU64; 4],
    /// Whether DNS answers are learned (the agent compiles policies; an
    /// artifact cannot be recompiled).
    learning: bool,
}

#[derive(Default)]
struct Learned {
    answers: BTreeMap<String, BTreeSet<IpAddr>>,
    /// Bumped when `answers` gains something; the agent reports which
    /// version it has enforced.
    version: u64,
    enforced: u64,
}

impl Shared {
    /// The state the proxy judges by: the one just enforced.
    pub fn set_state(&self, c: Arc<Compiled>) {
        if let Ok(mut s) = self.state.write() {
            *s = Some(c);
        }
    }

    fn state(&self) -> Option<Arc<Compiled>> {
        self.state.read().ok().and_then(|s| s.clone())
    }

    /// The version of the DNS answers learned so far, when newer than the
    /// enforced one.
    pub fn pending_answers(&self) -> Option<u64> {
        let l = self.learned.lock().ok()?;
        (l.version > l.enforced).then_some(l.version)
    }

    /// All DNS answers learned so far.
    pub fn answers(&self) -> Answers {
        self.learned
            .lock()
            .map(|l| {
                l.answers
                    .iter()
                    .map(|(n, ips)| (n.clone(), ips.iter().copied().collect()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Records that the answers of `version` are enforced (or will not be:
    /// the agent failed to compile them), releasing the answers waiting.
    pub fn answers_enforced(&self, version: u64) {
        if let Ok(mut l) = self.learned.lock() {
            l.enforced = l.enforced.max(version);
        }
        self.applied.notify_all();
    }

    /// Counts a judged request (malformed ones are denied).
    fn judged(&self, kind: L7Kind, allowed: bool) {
        let base = match kind {
            L7Kind::Http => 0,
            L7Kind::Dns => 2,
            L7Kind::Kafka => return,
        };
        self.judged[base + usize::from(!allowed)].fetch_add(1, Ordering::Relaxed);
    }

    /// The proxy's counters as Prometheus text (appended to the datapath's).
    pub fn prometheus(&self) -> String {
        let n = |i: usize| self.judged[i].load(Ordering::Relaxed);
        let names = self.learned.lock().map(|l| l.answers.len()).unwrap_or(0);
        let mut o = String::from(
            "# HELP sluice_l7_requests_total Requests the L7 proxy judged, by protocol and verdict.\n\
             # TYPE sluice_l7_requests_total counter\n",
        );
        for (i, (protocol, verdict)) in [
            ("http", "allowed"),
            ("http", "denied"),
            ("dns", "allowed"),
            ("dns", "denied"),
        ]
        .iter()
        .enumerate()
        {
            o += &format!(
                "sluice_l7_requests_total{{protocol=\"{protocol}\",verdict=\"{verdict}\"}} {}\n",
                n(i)
            );
        }
        o += "# HELP sluice_l7_learned_names DNS names whose answers the proxy has learned for toFQDNs.\n\
              # TYPE sluice_l7_learned_names gauge\n";
        o += &format!("sluice_l7_learned_names {names}\n");
        o
    }

    /// Lines describing the proxy's decisions since the last call.
    pub fn drain_log(&self) -> Vec<String> {
        self.log
            .lock()
            .map(|mut l| std::mem::take(&mut *l))
            .unwrap_or_default()
    }

    /// Keeps decision lines for [`Shared::drain_log`] from now on.
    pub fn keep_log(&self) {
        self.logging.store(true, Ordering::Relaxed);
    }

    fn log(&self, line: String) {
        if !self.logging.load(Ordering::Relaxed) {
            return;
        }
        if let Ok(mut l) = self.log.lock() {
            // A reader that never drains must not grow this without bound.
            if l.len() < 10_000 {
                l.push(line);
            }
        }
    }

    /// Adds answers for `name`; when that is news, waits (bounded) until
    /// the agent has enforced a state that includes them, so that the
    /// client's connection right after the answer finds its toFQDNs
    /// identity in place, as Cilium's DNS proxy does.
    fn learn(&self, name: &str, ips: &[IpAddr]) {
        if !self.learning || ips.is_empty() {
            return;
        }
        let Ok(mut l) = self.learned.lock() else {
            return;
        };
        // Answers are kept for the agent's lifetime (no TTLs yet): bounded,
        // so that a client asking for endless names cannot grow the state
        // without end. Past the bound new names are not learned, and
        // toFQDNs rules do not open for them.
        if l.answers.len() >= MAX_NAMES && !l.answers.contains_key(name) {
            drop(l);
            self.log(format!(
                "error    DNS answers for {name} not learned: {MAX_NAMES} names known"
            ));
            return;
        }
        let set = l.answers.entry(name.to_owned()).or_default();
        let before = set.len();
        set.extend(ips.iter().copied());
        if set.len() == before {
            return;
        }
        l.version += 1;
        let want = l.version;
        let _ = self
            .applied
            .wait_timeout_while(l, LEARN_WAIT, |l| l.enforced < want);
    }

    /// Takes a slot for one more connection or datagram, if any is free.
    fn enter(self: &Arc<Self>) -> Option<Slot> {
        let n = self.in_flight.fetch_add(1, Ordering::AcqRel);
        if n >= MAX_IN_FLIGHT {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Slot(self.clone()))
    }
}

struct Slot(Arc<Shared>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The running proxy: its two sockets' ports, for the datapath's config.
pub struct Proxy {
    pub tcp_port: u16,
    pub udp_port: u16,
    pub shared: Arc<Shared>,
}

impl Proxy {
    /// Binds the proxy's sockets on 127.0.0.1 (ephemeral ports) and serves
    /// them on threads of their own. `learning`: learn DNS answers.
    pub fn start(learning: bool) -> std::io::Result<Proxy> {
        let shared = Arc::new(Shared {
            learning,
            ..Shared::default()
        });
        let (tcp, tcp6) = http::listen()?;
        let (udp, udp6) = dns::listen()?;
        let tcp_port = tcp.local_addr()?.port();
        let udp_port = udp.local_addr()?.port();
        for l in std::iter::once(tcp).chain(tcp6) {
            let s = shared.clone();
            std::thread::Builder::new()
                .name("proxy-tcp".into())
                .spawn(move || http::serve(l, s))?;
        }
        for u in std::iter::once(udp).chain(udp6) {
            let s = shared.clone();
            std::thread::Builder::new()
                .name("proxy-dns".into())
                .spawn(move || dns::serve(u, s))?;
        }
        Ok(Proxy {
            tcp_port,
            udp_port,
            shared,
        })
    }
}

/// Binds `bind(127.0.0.1:port)` and `bind([::1]:port)` on one port (the
/// first free for both, ephemeral). Without IPv6 on the host, only the
/// IPv4 socket.
fn same_port<T: HasPort>(
    bind: impl Fn(SocketAddr) -> std::io::Result<T>,
) -> std::io::Result<(T, Option<T>)> {
    for _ in 0..64 {
        let v4 = bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
        let port = v4.port()?;
        match bind(SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port))) {
            Ok(v6) => return Ok((v4, Some(v6))),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
            // No IPv6 here: IPv6 traffic to be proxied is dropped.
            Err(_) => return Ok((v4, None)),
        }
    }
    Err(std::io::ErrorKind::AddrInUse.into())
}

trait HasPort {
    fn port(&self) -> std::io::Result<u16>;
}

impl HasPort for std::net::TcpListener {
    fn port(&self) -> std::io::Result<u16> {
        Ok(self.local_addr()?.port())
    }
}

impl HasPort for std::net::UdpSocket {
    fn port(&self) -> std::io::Result<u16> {
        Ok(self.local_addr()?.port())
    }
}

/// Makes a socket transparent (it may use addresses not of this host);
/// IPv6 sockets answer only IPv6.
fn transparent(s: &socket2::Socket, at: SocketAddr) -> std::io::Result<()> {
    if at.is_ipv6() {
        s.set_only_v6(true)?;
        s.set_ip_transparent_v6(true)
    } else {
        s.set_ip_transparent_v4(true)
    }
}

/// The proxy's answer for one request.
#[derive(Clone, Debug)]
pub struct Decision {
    pub allowed: bool,
    /// The mark for the proxy's connection to the destination: the
    /// client's identity as the destination's ingress policy sees it.
    pub mark: u32,
    /// Why, in the simulator's words.
    pub reason: String,
    /// The L7 protocols whose rules the redirect carries.
    pub kinds: BTreeSet<L7Kind>,
}

/// Judges a request from `src` to `dst` against the enforced state, as
/// `sluice simulate` would judge the same flow.
pub fn decide(
    c: &Compiled,
    src: SocketAddr,
    dst: SocketAddr,
    protocol: u8,
    req: Option<Request>,
) -> Decision {
    let flow = Flow {
        l7: req,
        ..Flow::new(
            PeerRef::Ip(src.ip()),
            PeerRef::Ip(dst.ip()),
            dst.port(),
            protocol,
        )
    };
    match simulate(c, &flow) {
        Ok(o) => Decision {
            allowed: o.verdict == Verdict::Allowed,
            mark: mark_for(&o),
            reason: reason(c, &o),
            kinds: redirect_kinds(c, &o),
        },
        Err(e) => Decision {
            allowed: false,
            mark: MARK_FROM_PROXY,
            reason: e,
            kinds: BTreeSet::new(),
        },
    }
}

fn mark_for(o: &Outcome) -> u32 {
    let id = o
        .steps
        .iter()
        .find(|s| s.direction == Direction::Ingress)
        .map(|s| s.remote_identity & MARK_ID_MASK)
        .unwrap_or(0);
    MARK_FROM_PROXY | id
}

fn reason(c: &Compiled, o: &Outcome) -> String {
    let s = o
        .steps
        .iter()
        .rev()
        .find(|s| s.l7.is_some())
        .or(o.steps.last());
    match s {
        Some(s) => simulator::eval::explain_step(c, s),
        None => "no policy applies".to_owned(),
    }
}

/// The L7 protocols the redirecting entries of a flow's steps carry rules
/// for (empty: the redirect judges no requests, e.g. a listener).
fn redirect_kinds(c: &Compiled, o: &Outcome) -> BTreeSet<L7Kind> {
    let mut kinds = BTreeSet::new();
    for s in &o.steps {
        let (Some(key), Some(entry)) = (s.key, s.entry) else {
            continue;
        };
        if !entry.redirect {
            continue;
        }
        let Some(ep) = c.endpoint(s.endpoint) else {
            continue;
        };
        for p in &c.maps[ep.map].l7 {
            if p.egress == key.egress
                && p.proto == key.proto
                && p.dport == key.dport
                && p.plen == key.plen
            {
                kinds.insert(p.kind);
            }
        }
    }
    kinds
}

/// The policy-routing rule and table that deliver packets marked for the
/// proxy to the local stack, whatever their destination address, for IPv4
/// and (where the host has it) IPv6. Idempotent.
pub fn install_routing() -> Result<(), String> {
    let mark = format!("{MARK_TO_PROXY:#x}/{:#x}", crate::maps::MARK_MASK);
    let table = ROUTE_TABLE.to_string();
    let pref = RULE_PRIORITY.to_string();
    let mut families = vec![("-4", "0.0.0.0/0")];
    if std::path::Path::new("/proc/net/if_inet6").exists() {
        families.push(("-6", "::/0"));
    }
    for (family, all) in families {
        let rules = ip(&[family, "rule", "list", "pref", &pref])?;
        if !rules.contains(&format!("lookup {table}")) {
            // Another agent (a restart overlapping its predecessor) may add
            // the same rule between the look and the add: that is success.
            match ip(&[
                family, "rule", "add", "pref", &pref, "fwmark", &mark, "lookup", &table,
            ]) {
                Err(e) if !e.contains("File exists") => return Err(e),
                _ => {}
            }
        }
        ip(&[
            family, "route", "replace", "local", all, "dev", "lo", "table", &table,
        ])?;
    }
    Ok(())
}

/// Removes what [`install_routing`] added (nothing missing is an error).
pub fn remove_routing() {
    let table = ROUTE_TABLE.to_string();
    let pref = RULE_PRIORITY.to_string();
    for family in ["-4", "-6"] {
        let _ = ip(&[family, "rule", "del", "pref", &pref, "lookup", &table]);
        let _ = ip(&[family, "route", "flush", "table", &table]);
    }
}

fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("running `ip {}`: {e}", args.join(" ")))?;
    if !out.status.success() {
        return Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Lets a turned-around packet (from the host to an endpoint whose ingress
/// redirects to the proxy) be received on the endpoint's interface: its
/// source is one of this host's addresses, which the kernel otherwise
/// takes for a spoofed one.
pub fn prepare_interface(iface: &str) -> Result<(), String> {
    for (knob, value) in [("accept_local", "1"), ("rp_filter", "0")] {
        let path = format!("/proc/sys/net/ipv4/conf/{iface}/{knob}");
        std::fs::write(&path, value).map_err(|e| format!("{path}: {e}"))?;
    }
    Ok(())
}
