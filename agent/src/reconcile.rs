//! The agent's loop: compile the watched inputs, resolve which interface
//! each local endpoint sits behind, and apply the state to the datapath.
//!
//! Inputs that do not compile are reported and the enforced state stays:
//! sluice never replaces enforced policy with nothing.

use crate::datapath::{ifindex, Adopted, ApplyStats, Datapath, DatapathError};
use compiler::compile::Compiled;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::path::Path;
use std::process::Command;

/// The host-side interface through which `ip` is reached: the device of
/// the kernel's route to it (`ip route get`), as a CNI's per-pod route sets.
pub fn interface_for(ip: IpAddr) -> Option<String> {
    let out = Command::new("ip")
        .args(["-o", "route", "get", &ip.to_string()])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut words = text.split_whitespace();
    while let Some(w) = words.next() {
        if w == "dev" {
            return words.next().map(str::to_owned);
        }
    }
    None
}

/// Where a local endpoint is, for the agent.
enum Located {
    /// Behind this interface, a pod's host-side end.
    Pod(String),
    /// Its route leads to an interface that is not a pod's (the message).
    Refused(String),
    /// No route to its address.
    NoRoute,
}

/// The non-host endpoints of `node` (all when `None`) and where each is:
/// the one procedure behind [`preflight`] and [`Reconciler::apply`].
fn locate<'c>(
    c: &'c Compiled,
    node: Option<&str>,
    globs: &[String],
) -> Vec<(&'c compiler::compile::Endpoint, Located)> {
    let uplinks = crate::iface::default_route_devices();
    c.endpoints
        .iter()
        .filter(|e| !e.host && (node.is_none() || e.node.as_deref() == node))
        .map(|e| {
            let at = match e.ips.first().and_then(|ip| interface_for(*ip)) {
                Some(iface) => match crate::iface::check(&iface, globs, &uplinks) {
                    Ok(()) => Located::Pod(iface),
                    Err(why) => Located::Refused(format!(
                        "{}: not local: route via {iface} ({why})",
                        e.name
                    )),
                },
                None => Located::NoRoute,
            };
            (e, at)
        })
        .collect()
}

/// Which local endpoints of `c` (on `node`) the agent would enforce, and
/// why it would not enforce the others: the same checks as
/// [`Reconciler::apply`], without touching the kernel, so that an agent can
/// refuse to start before it loads or pins anything.
pub fn preflight(c: &Compiled, node: Option<&str>, globs: &[String]) -> (Vec<String>, Vec<String>) {
    let (mut ok, mut not) = (Vec::new(), Vec::new());
    for (e, at) in locate(c, node, globs) {
        match at {
            Located::Pod(iface) => ok.push(format!("{}={iface}", e.name)),
            Located::Refused(why) => not.push(why),
            Located::NoRoute => not.push(format!("{}: no route to its address", e.name)),
        }
    }
    (ok, not)
}

/// Applies compiled state for the endpoints of `node` (all endpoints when
/// `None`) and attaches the programs to interfaces not attached before.
pub struct Reconciler {
    datapath: Datapath,
    node: Option<String>,
    attached: BTreeSet<String>,
    /// Names (globs) the user declared as endpoint interfaces.
    endpoint_globs: Vec<String>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    pub stats: ApplyStats,
    /// `namespace/pod=interface` for every endpoint enforced.
    pub endpoints: Vec<String>,
    /// Local endpoints with no interface found (not enforced).
    pub unresolved: Vec<String>,
    /// Local endpoints whose route leads to an interface that is not a
    /// pod's (`name: not local: route via eth0 (why)`), not enforced.
    pub refused: Vec<String>,
    /// Pinned links removed because their interface is no longer an
    /// endpoint's.
    pub pruned: Vec<String>,
    /// Policy entries of enforced endpoints that redirect to the L7 proxy.
    pub l7_redirects: usize,
    /// Ports of enforced endpoints with Kafka rules: the proxy does not
    /// parse Kafka, so their connections are refused.
    pub kafka_ports: usize,
}

impl Reconciler {
    /// With `pin`, maps and links are pinned under that bpffs directory and
    /// whatever an earlier agent left there is adopted (returned); without,
    /// enforcement ends with the reconciler.
    pub fn new(
        node: Option<String>,
        pin: Option<&Path>,
    ) -> Result<(Reconciler, Option<Adopted>), DatapathError> {
        let (datapath, adopted) = match pin {
            Some(dir) => {
                let (d, a) = Datapath::load_pinned(dir)?;
                (d, Some(a))
            }
            None => (Datapath::load()?, None),
        };
        Ok((
            Reconciler {
                datapath,
                node,
                attached: BTreeSet::new(),
                endpoint_globs: Vec::new(),
            },
            adopted,
        ))
    }

    /// Interface names (shell globs) to accept as endpoint interfaces
    /// beyond veths whose peer is in another namespace.
    pub fn set_endpoint_interfaces(&mut self, globs: Vec<String>) {
        self.endpoint_globs = globs;
    }

    /// Points the datapath at the L7 proxy's sockets.
    pub fn set_proxy(&mut self, tcp: u16, udp: u16) -> Result<(), DatapathError> {
        self.datapath.set_proxy_ports(tcp, udp)
    }

    /// Records a refused update in the counters metrics report.
    pub fn count_error(&mut self) {
        let _ = self.datapath.count_error();
    }

    /// Verdict events since the last call.
    pub fn events(&mut self) -> Vec<crate::maps::Event> {
        self.datapath.drain_events()
    }

    /// Measures the kernel's ticks against the wall clock, for the times of
    /// events (see [`Datapath::calibrate_clock`]); takes 100 ms.
    pub fn calibrate_clock(&mut self) -> Result<(), DatapathError> {
        self.datapath.calibrate_clock().map(|_| ())
    }

    /// Re-anchors the ticks to the wall clock (which may have been stepped).
    pub fn reanchor_clock(&mut self) -> Result<(), DatapathError> {
        self.datapath.reanchor_clock().map(|_| ())
    }

    /// Events the programs could not deliver since the rings were made.
    pub fn events_lost(&self) -> u64 {
        self.datapath.events_lost()
    }

    pub fn apply(&mut self, c: &Compiled) -> Result<Applied, DatapathError> {
        let mut keys = HashMap::new();
        let mut out = Applied::default();
        let mut ifaces = Vec::new();
        for (e, at) in locate(c, self.node.as_deref(), &self.endpoint_globs) {
            match at {
                Located::Pod(iface) => {
                    keys.insert(e.name.clone(), ifindex(&iface)?);
                    out.endpoints.push(format!("{}={iface}", e.name));
                    ifaces.push(iface);
                }
                Located::Refused(why) => out.refused.push(why),
                Located::NoRoute => out.unresolved.push(e.name.clone()),
            }
        }
        out.stats = self.datapath.apply(c, &keys, self.node.as_deref(), false)?;
        let mut maps: Vec<usize> = c
            .endpoints
            .iter()
            .filter(|e| keys.contains_key(&e.name))
            .map(|e| e.map)
            .collect();
        maps.sort_unstable();
        maps.dedup();
        for &m in &maps {
            let map = &c.maps[m];
            out.l7_redirects += map
                .entries
                .values()
                .filter(|e| e.redirect && !e.deny)
                .count();
            out.kafka_ports += map
                .l7
                .iter()
                .filter(|p| p.kind == compiler::l7::L7Kind::Kafka)
                .count();
        }
        for iface in &ifaces {
            if !self.attached.contains(iface) {
                crate::proxy::prepare_interface(iface).map_err(DatapathError::new)?;
                self.datapath.attach(iface)?;
                self.attached.insert(iface.clone());
            }
        }
        self.attached.retain(|i| ifaces.contains(i));
        let keep: HashSet<u32> = keys.values().copied().collect();
        out.pruned = self.datapath.prune_links(&keep)?;
        Ok(out)
    }
}
