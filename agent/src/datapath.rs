//! Loading the datapath and filling its maps from compiled state.

use crate::maps::*;
use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Array, HashMap as BpfHashMap};
use aya::programs::SchedClassifier;
use aya::Ebpf;
use compiler::compile::Compiled;
use compiler::identity::HOST;
use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;

/// The eBPF object built from `bpf/sluice.bpf.c` by build.rs.
pub static BPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sluice.bpf.o"));

/// The program judging an endpoint's egress (attached at its host-side
/// interface's ingress).
pub const FROM_ENDPOINT: &str = "sl_from_endpoint";
/// The program judging an endpoint's ingress (host-side egress).
pub const TO_ENDPOINT: &str = "sl_to_endpoint";

/// A classifier that returns "pass" at once: the benchmark floor.
pub const NOOP: &str = "sl_noop";

/// Entries the policy map holds (`max_entries` of `SL_POLICY`).
pub const POLICY_MAP_CAPACITY: usize = 1 << 20;

#[derive(Debug)]
pub struct DatapathError {
    what: String,
}

impl DatapathError {
    fn new(what: impl Into<String>) -> Self {
        DatapathError { what: what.into() }
    }
}

impl fmt::Display for DatapathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.what)
    }
}

impl std::error::Error for DatapathError {}

fn ctx<E: fmt::Display>(what: &'static str) -> impl FnOnce(E) -> DatapathError {
    move |e| DatapathError::new(format!("{what}: {e}"))
}

/// What [`Datapath::apply`] wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApplyStats {
    pub ipcache_prefixes: usize,
    pub ipcache_hosts: usize,
    pub policy_entries: usize,
    pub endpoints: usize,
}

/// The loaded (not yet attached) programs and their maps.
pub struct Datapath {
    bpf: Ebpf,
    /// Verdict events (drops and new connections), taken out of `bpf` so
    /// they can be read while the maps are written.
    events: Option<aya::maps::RingBuf<aya::maps::MapData>>,
    /// Counts applied states; each state's policy entries live under map ids
    /// of their own (`generation << 16 | map index`), so a new state is
    /// written beside the old one and each endpoint switches to it in one
    /// map update.
    generation: u32,
    /// What the enforced state wrote, to delete what the next one drops.
    written: Written,
}

#[derive(Default)]
struct Written {
    policy: Vec<PolicyKey>,
    hosts: std::collections::HashSet<[u8; 4]>,
    prefixes: std::collections::HashSet<(u32, [u8; 4])>,
    endpoints: std::collections::HashSet<u32>,
}

impl Datapath {
    /// Loads the object and both programs into the kernel (the verifier runs
    /// here). Needs CAP_BPF (root).
    pub fn load() -> Result<Datapath, DatapathError> {
        let mut bpf = Ebpf::load(BPF_OBJECT).map_err(ctx("loading bpf/sluice.bpf.o"))?;
        for name in [FROM_ENDPOINT, TO_ENDPOINT, NOOP] {
            let prog: &mut SchedClassifier = bpf
                .program_mut(name)
                .ok_or_else(|| {
                    DatapathError::new(format!("program {name} missing from the object"))
                })?
                .try_into()
                .map_err(ctx("not a classifier"))?;
            prog.load()
                .map_err(ctx("the verifier rejected a program"))?;
        }
        let events = bpf
            .take_map("SL_EVENTS")
            .and_then(|m| aya::maps::RingBuf::try_from(m).ok());
        Ok(Datapath {
            bpf,
            events,
            generation: 0,
            written: Written::default(),
        })
    }

    /// Writes compiled state into the maps. `endpoint_keys` maps endpoint
    /// names to their key: the ifindex of the host-side interface, or in
    /// test mode the skb mark a test packet carries. `node` is the node this
    /// datapath runs on: its own addresses are `host` here.
    ///
    /// The whole state is checked against the maps' capacity before anything
    /// is written, so an oversized artifact is refused, never half-loaded.
    pub fn apply(
        &mut self,
        c: &Compiled,
        endpoint_keys: &HashMap<String, u32>,
        node: Option<&str>,
        test_mode: bool,
    ) -> Result<ApplyStats, DatapathError> {
        let total: usize = c.maps.iter().map(|m| m.len()).sum();
        // The new state is written beside the enforced one before the switch.
        if total + self.written.policy.len() > POLICY_MAP_CAPACITY {
            return Err(DatapathError::new(format!(
                "the artifact has {total} policy entries; with the {} enforced now that exceeds the datapath map's {POLICY_MAP_CAPACITY}",
                self.written.policy.len()
            )));
        }
        if c.maps.len() > 1 << 16 {
            return Err(DatapathError::new(format!(
                "{} policy maps, at most 65,536 per state",
                c.maps.len()
            )));
        }
        let generation = self.generation.wrapping_add(1) & 0xffff;
        let map_id = |index: usize| (generation << 16) | index as u32;
        let mut next = Written::default();
        let mut stats = ApplyStats::default();
        {
            let mut cfg: Array<_, Config> = Array::try_from(
                self.bpf
                    .map_mut("SL_CONFIG")
                    .ok_or_else(|| DatapathError::new("SL_CONFIG missing"))?,
            )
            .map_err(ctx("SL_CONFIG"))?;
            cfg.set(
                0,
                Config {
                    test_mode: u32::from(test_mode),
                    allow_localhost: 1,
                },
                0,
            )
            .map_err(ctx("writing SL_CONFIG"))?;
        }
        {
            let mut hosts: BpfHashMap<_, [u8; 4], u32> = BpfHashMap::try_from(
                self.bpf
                    .map_mut("SL_IPCACHE_HOSTS")
                    .ok_or_else(|| DatapathError::new("SL_IPCACHE_HOSTS missing"))?,
            )
            .map_err(ctx("SL_IPCACHE_HOSTS"))?;
            for e in &c.ipcache {
                let IpAddr::V4(a) = e.cidr.addr else { continue };
                if e.cidr.prefix_len != 32 {
                    continue;
                }
                let id = if e.node.is_some() && e.node.as_deref() == node {
                    HOST
                } else {
                    e.identity
                };
                hosts
                    .insert(a.octets(), id, 0)
                    .map_err(ctx("writing SL_IPCACHE_HOSTS"))?;
                stats.ipcache_hosts += 1;
                next.hosts.insert(a.octets());
            }
        }
        {
            let mut lpm: LpmTrie<_, IpcacheKeyData, u32> = LpmTrie::try_from(
                self.bpf
                    .map_mut("SL_IPCACHE")
                    .ok_or_else(|| DatapathError::new("SL_IPCACHE missing"))?,
            )
            .map_err(ctx("SL_IPCACHE"))?;
            for e in &c.ipcache {
                let IpAddr::V4(a) = e.cidr.addr else { continue };
                if e.cidr.prefix_len == 32 {
                    continue;
                }
                let key = Key::new(
                    u32::from(e.cidr.prefix_len),
                    IpcacheKeyData { addr: a.octets() },
                );
                lpm.insert(&key, e.identity, 0)
                    .map_err(ctx("writing SL_IPCACHE"))?;
                stats.ipcache_prefixes += 1;
                next.prefixes
                    .insert((u32::from(e.cidr.prefix_len), a.octets()));
            }
        }
        {
            let mut pol: BpfHashMap<_, PolicyKey, PolicyValue> = BpfHashMap::try_from(
                self.bpf
                    .map_mut("SL_POLICY")
                    .ok_or_else(|| DatapathError::new("SL_POLICY missing"))?,
            )
            .map_err(ctx("SL_POLICY"))?;
            for (index, m) in c.maps.iter().enumerate() {
                for (k, v) in &m.entries {
                    // `Key::new` already cleared the bits past the prefix.
                    let key = PolicyKey {
                        map_id: map_id(index),
                        identity: k.identity,
                        egress: u8::from(k.egress),
                        proto: k.proto,
                        dport: k.dport.to_be_bytes(),
                        plen: k.plen,
                        pad: [0; 3],
                    };
                    let value = PolicyValue {
                        precedence: v.precedence,
                        flags: (if v.deny { FLAG_DENY } else { 0 })
                            | (if v.redirect { FLAG_REDIRECT } else { 0 })
                            | (if v.auth { FLAG_AUTH } else { 0 }),
                        plen: k.plen,
                        pad: 0,
                    };
                    pol.insert(key, value, 0)
                        .map_err(ctx("writing SL_POLICY"))?;
                    stats.policy_entries += 1;
                    next.policy.push(key);
                }
            }
        }
        {
            let mut eps: BpfHashMap<_, u32, EndpointInfo> = BpfHashMap::try_from(
                self.bpf
                    .map_mut("SL_ENDPOINTS")
                    .ok_or_else(|| DatapathError::new("SL_ENDPOINTS missing"))?,
            )
            .map_err(ctx("SL_ENDPOINTS"))?;
            let plens: Vec<u32> = c
                .maps
                .iter()
                .map(|m| m.entries.keys().fold(0u32, |acc, k| acc | (1 << k.plen)))
                .collect();
            for e in &c.endpoints {
                let Some(&key) = endpoint_keys.get(&e.name) else {
                    continue;
                };
                let slot = u16::try_from(stats.endpoints)
                    .map_err(|_| DatapathError::new("more than 65,536 endpoints on one node"))?;
                let info = EndpointInfo {
                    map_id: map_id(e.map),
                    identity: e.identity,
                    enforced_ingress: u8::from(e.enforced[0]),
                    enforced_egress: u8::from(e.enforced[1]),
                    slot,
                    plens: plens[e.map],
                };
                // One map update switches the endpoint to the new state.
                eps.insert(key, info, 0)
                    .map_err(ctx("writing SL_ENDPOINTS"))?;
                next.endpoints.insert(key);
                stats.endpoints += 1;
            }
            for gone in self.written.endpoints.difference(&next.endpoints) {
                let _ = eps.remove(gone);
            }
        }
        self.remove_stale(&next)?;
        self.written = next;
        self.generation = generation;
        Ok(stats)
    }

    /// Deletes what the previous state wrote and the new one does not use:
    /// its policy entries (no endpoint points at them any more) and
    /// addresses that left the ipcache.
    fn remove_stale(&mut self, next: &Written) -> Result<(), DatapathError> {
        let old = std::mem::take(&mut self.written);
        {
            let mut pol: BpfHashMap<_, PolicyKey, PolicyValue> = BpfHashMap::try_from(
                self.bpf
                    .map_mut("SL_POLICY")
                    .ok_or_else(|| DatapathError::new("SL_POLICY missing"))?,
            )
            .map_err(ctx("SL_POLICY"))?;
            for k in &old.policy {
                let _ = pol.remove(k);
            }
        }
        {
            let mut hosts: BpfHashMap<_, [u8; 4], u32> = BpfHashMap::try_from(
                self.bpf
                    .map_mut("SL_IPCACHE_HOSTS")
                    .ok_or_else(|| DatapathError::new("SL_IPCACHE_HOSTS missing"))?,
            )
            .map_err(ctx("SL_IPCACHE_HOSTS"))?;
            for a in old.hosts.difference(&next.hosts) {
                let _ = hosts.remove(a);
            }
        }
        let mut lpm: LpmTrie<_, IpcacheKeyData, u32> = LpmTrie::try_from(
            self.bpf
                .map_mut("SL_IPCACHE")
                .ok_or_else(|| DatapathError::new("SL_IPCACHE missing"))?,
        )
        .map_err(ctx("SL_IPCACHE"))?;
        for (len, a) in old.prefixes.difference(&next.prefixes) {
            let _ = lpm.remove(&Key::new(*len, IpcacheKeyData { addr: *a }));
        }
        Ok(())
    }

    /// Takes the verdict events the programs emitted since the last call.
    pub fn drain_events(&mut self) -> Vec<Event> {
        let mut out = Vec::new();
        let Some(ring) = self.events.as_mut() else {
            return out;
        };
        while let Some(item) = ring.next() {
            if let Some(e) = Event::from_bytes(&item) {
                out.push(e);
            }
        }
        out
    }

    /// Attaches both programs to an endpoint's host-side interface: its
    /// ingress judges the endpoint's egress, its egress the endpoint's
    /// ingress. On kernels ≥ 6.6 aya attaches with TCX links, which detach
    /// when this `Datapath` is dropped.
    pub fn attach(&mut self, iface: &str) -> Result<(), DatapathError> {
        use aya::programs::TcAttachType;
        for (name, at) in [
            (FROM_ENDPOINT, TcAttachType::Ingress),
            (TO_ENDPOINT, TcAttachType::Egress),
        ] {
            let prog: &mut SchedClassifier = self
                .bpf
                .program_mut(name)
                .ok_or_else(|| DatapathError::new(format!("no program {name}")))?
                .try_into()
                .map_err(ctx("not a classifier"))?;
            prog.attach(iface, at)
                .map_err(|e| DatapathError::new(format!("attaching {name} to {iface}: {e}")))?;
        }
        Ok(())
    }

    /// Runs a program once on a packet with BPF_PROG_TEST_RUN; returns the
    /// TC verdict (0 pass, 2 drop) and the run's duration in nanoseconds
    /// (averaged over `repeat` runs).
    pub fn test_run(
        &self,
        program: &str,
        packet: &[u8],
        mark: u32,
        repeat: u32,
    ) -> Result<(u32, u32), DatapathError> {
        use std::os::fd::{AsFd, AsRawFd};
        let prog: &SchedClassifier = self
            .bpf
            .program(program)
            .ok_or_else(|| DatapathError::new(format!("no program {program}")))?
            .try_into()
            .map_err(ctx("not a classifier"))?;
        let fd = prog
            .fd()
            .map_err(ctx("program not loaded"))?
            .as_fd()
            .as_raw_fd();
        crate::testrun::run(fd, packet, mark, repeat).map_err(ctx("BPF_PROG_TEST_RUN"))
    }
}

/// The ifindex of a network interface, as the programs key endpoints by it.
pub fn ifindex(iface: &str) -> Result<u32, DatapathError> {
    let path = format!("/sys/class/net/{iface}/ifindex");
    std::fs::read_to_string(&path)
        .map_err(|e| DatapathError::new(format!("{path}: {e}")))?
        .trim()
        .parse()
        .map_err(|e| DatapathError::new(format!("{path}: {e}")))
}
