//! Loading the datapath and filling its maps from compiled state.

use crate::events::{EventRings, TickClock};
use crate::maps::*;
use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Array, HashMap as BpfHashMap};
use aya::programs::SchedClassifier;
use aya::{Ebpf, EbpfLoader};
use compiler::compile::Compiled;
use compiler::identity::{HOST, WORLD};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

/// The eBPF object built from `bpf/sluice.bpf.c` by build.rs, with maps
/// that are not pinned (tests, benchmarks).
pub static BPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sluice.bpf.o"));

/// The same program with every map pinned by name (the agent's).
pub static BPF_OBJECT_PINNED: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sluice-pinned.bpf.o"));

/// `SL_LAYOUT_VERSION` of bpf/sluice.h: pins live under `<root>/v<this>`.
pub use abi::LAYOUT_VERSION;

/// `SL_EP_DIRECT`: endpoint keys below it live in the array map.
pub use abi::EP_DIRECT;

/// Entries each ipcache map holds.
pub const IPCACHE_CAPACITY: usize = 512_000;

/// Where the maps and links of layout [`LAYOUT_VERSION`] are pinned.
pub fn pin_dir(root: &Path) -> PathBuf {
    root.join(format!("v{LAYOUT_VERSION}"))
}

/// The program judging an endpoint's egress (attached at its host-side
/// interface's ingress).
pub const FROM_ENDPOINT: &str = "sl_from_endpoint";
/// The program judging an endpoint's ingress (host-side egress).
pub const TO_ENDPOINT: &str = "sl_to_endpoint";

/// A classifier that returns "pass" at once: the benchmark floor.
pub const NOOP: &str = "sl_noop";

/// A classifier returning the kernel's tick count, run (never attached) to
/// relate the ticks events carry to wall-clock time.
const CLOCK: &str = "sl_clock";

/// Entries the policy map holds (`max_entries` of `SL_POLICY`).
pub const POLICY_MAP_CAPACITY: usize = 1 << 20;

#[derive(Debug)]
pub struct DatapathError {
    what: String,
}

impl DatapathError {
    pub(crate) fn new(what: impl Into<String>) -> Self {
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

/// What a pinned datapath found from an earlier agent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Adopted {
    pub endpoints: usize,
    pub policy_entries: usize,
    pub ipcache_entries: usize,
    pub generation: u32,
}

/// The loaded (not yet attached) programs and their maps.
pub struct Datapath {
    bpf: Ebpf,
    /// Verdict events (drops and new connections), taken out of `bpf` so
    /// they can be read while the maps are written.
    events: EventRings,
    /// Ticks to wall-clock time, once measured (see `calibrate_clock`).
    clock: Option<TickClock>,
    /// When `drain_events` last tried to measure it.
    clock_tried: Option<std::time::Instant>,
    /// Counts applied states. Each state's policy entries live under map
    /// ids of their own (`(generation & 0xffff) << 16 | map index`) and its
    /// identities in ipcache slot `generation & 1`, so a new state is
    /// written beside the enforced one and each endpoint switches to it in
    /// one map update.
    generation: u32,
    /// What the enforced state wrote, to delete what the next one drops.
    written: Written,
    /// Counter slot of each endpoint key, stable across updates.
    slots: HashMap<u32, u16>,
    /// The bpffs directory of pinned maps and links (agent mode).
    pin: Option<PathBuf>,
    test_mode: bool,
}

/// One address family's share of the ipcache as written.
struct Family<const N: usize> {
    /// Host addresses (/32, /128) and their identity.
    hosts: HashMap<[u8; N], u32>,
    /// The state's own prefixes (the default, length 0, among them) and
    /// their identities.
    prefixes: HashMap<(u32, [u8; N]), u32>,
}

impl<const N: usize> Default for Family<N> {
    fn default() -> Self {
        Family {
            hosts: HashMap::new(),
            prefixes: HashMap::new(),
        }
    }
}

impl<const N: usize> Family<N> {
    fn len(&self) -> usize {
        self.hosts.len() + self.prefixes.len()
    }

    /// Whether the state has prefixes for the trie: the default (/0) is
    /// not one of them, it lives in SL_CONFIG.
    fn has_lpm(&self) -> bool {
        self.prefixes.keys().any(|(len, _)| *len > 0)
    }

    /// The identity of addresses no other prefix matches.
    fn world(&self) -> u32 {
        longest_match(&self.prefixes, 0, [0; N])
    }
}

#[derive(Default)]
struct Written {
    policy: HashSet<PolicyKey>,
    v4: Family<4>,
    v6: Family<16>,
    endpoints: HashSet<u32>,
}

/// `addr` with the bits past `len` cleared.
fn masked<const N: usize>(addr: [u8; N], len: u32) -> [u8; N] {
    let mut out = addr;
    for (i, b) in out.iter_mut().enumerate() {
        let keep = len.saturating_sub(8 * i as u32).min(8);
        *b &= if keep == 0 { 0 } else { 0xffu8 << (8 - keep) };
    }
    out
}

/// The longest prefix of `prefixes` that contains (`len`, `addr`), with its
/// identity; world when none does. Prefix lengths are walked from `len`
/// down, so this is at most 33 (IPv4) or 129 (IPv6) hash probes.
fn longest_match<const N: usize>(
    prefixes: &HashMap<(u32, [u8; N]), u32>,
    len: u32,
    addr: [u8; N],
) -> u32 {
    (0..=len.min(8 * N as u32))
        .rev()
        .find_map(|l| prefixes.get(&(l, masked(addr, l))).copied())
        .unwrap_or(WORLD)
}

/// Writes a family's new state beside the enforced one: host entries into
/// the hash, prefixes into the trie, each carrying both states' identity.
fn write_family<const N: usize>(
    bpf: &mut Ebpf,
    (hosts_map, trie_map): (&'static str, &'static str),
    next: &Family<N>,
    old: &Family<N>,
    (new_slot, old_slot): (usize, usize),
) -> Result<(), DatapathError> {
    {
        let (keys, values): (Vec<[u8; N]>, Vec<IpcacheValue>) = next
            .hosts
            .iter()
            .map(|(a, id)| (*a, *id))
            .chain(
                old.hosts
                    .keys()
                    .filter(|a| !next.hosts.contains_key(*a))
                    .map(|a| (*a, 0)),
            )
            .map(|(a, id)| {
                let mut v = IpcacheValue::default();
                v.identity[new_slot] = id;
                v.identity[old_slot] = old.hosts.get(&a).copied().unwrap_or(0);
                (a, v)
            })
            .unzip();
        write_hash(bpf, hosts_map, &keys, &values)?;
    }
    // Every prefix of either state carries both states' answer for it (the
    // longest match among that state's own prefixes), so the trie's single
    // longest match is right for either slot.
    let mut lpm: LpmTrie<_, [u8; N], IpcacheValue> =
        LpmTrie::try_from(map(bpf, trie_map)?).map_err(ctx(trie_map))?;
    let union: HashSet<(u32, [u8; N])> = next
        .prefixes
        .keys()
        .chain(old.prefixes.keys())
        .copied()
        .collect();
    for (len, addr) in union {
        if len == 0 {
            continue; // the default, kept in SL_CONFIG
        }
        let mut v = IpcacheValue::default();
        v.identity[new_slot] = longest_match(&next.prefixes, len, addr);
        v.identity[old_slot] = longest_match(&old.prefixes, len, addr);
        lpm.insert(&Key::new(len, addr), v, 0)
            .map_err(ctx(trie_map))?;
    }
    Ok(())
}

/// Reads what an earlier agent left in a family's maps (slot `slot`).
fn read_family<const N: usize>(
    bpf: &mut Ebpf,
    (hosts_map, trie_map): (&'static str, &'static str),
    slot: usize,
    world: u32,
) -> Result<Family<N>, DatapathError> {
    let mut f = Family::default();
    {
        let hosts: BpfHashMap<_, [u8; N], IpcacheValue> =
            BpfHashMap::try_from(map(bpf, hosts_map)?).map_err(ctx(hosts_map))?;
        for item in hosts.iter() {
            let (a, v) = item.map_err(ctx(hosts_map))?;
            f.hosts.insert(a, v.identity[slot]);
        }
    }
    let lpm: LpmTrie<_, [u8; N], IpcacheValue> =
        LpmTrie::try_from(map(bpf, trie_map)?).map_err(ctx(trie_map))?;
    for item in lpm.iter() {
        let (k, v) = item.map_err(ctx(trie_map))?;
        f.prefixes
            .insert((k.prefix_len(), k.data()), v.identity[slot]);
    }
    f.prefixes.insert((0, [0; N]), world);
    Ok(f)
}

/// Deletes the entries of `old` that `next` does not have.
fn remove_family<const N: usize>(
    bpf: &mut Ebpf,
    (hosts_map, trie_map): (&'static str, &'static str),
    old: &Family<N>,
    next: &Family<N>,
) -> Result<(), DatapathError> {
    {
        let gone: Vec<[u8; N]> = old
            .hosts
            .keys()
            .filter(|a| !next.hosts.contains_key(*a))
            .copied()
            .collect();
        delete_hash::<_, IpcacheValue>(bpf, hosts_map, &gone)?;
    }
    let mut lpm: LpmTrie<_, [u8; N], IpcacheValue> =
        LpmTrie::try_from(map(bpf, trie_map)?).map_err(ctx(trie_map))?;
    for (len, a) in old
        .prefixes
        .keys()
        .filter(|p| p.0 > 0 && !next.prefixes.contains_key(*p))
    {
        let _ = lpm.remove(&Key::new(*len, *a));
    }
    Ok(())
}

const V4_MAPS: (&str, &str) = ("SL_IPCACHE_HOSTS", "SL_IPCACHE");
const V6_MAPS: (&str, &str) = ("SL_IPCACHE6_HOSTS", "SL_IPCACHE6");

fn map<'a>(bpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut aya::maps::Map, DatapathError> {
    bpf.map_mut(name)
        .ok_or_else(|| DatapathError::new(format!("{name} missing from the object")))
}

/// Writes `keys[i] → values[i]` into the hash map `name`, in batches
/// (one entry per call where the kernel refuses them).
fn write_hash<K: aya::Pod, V: aya::Pod>(
    bpf: &mut Ebpf,
    name: &'static str,
    keys: &[K],
    values: &[V],
) -> Result<(), DatapathError> {
    let fd = hash_fd(bpf, name)?;
    let mut m: BpfHashMap<_, K, V> = BpfHashMap::try_from(map(bpf, name)?).map_err(ctx(name))?;
    crate::batch::update(fd.as_fd(), keys, values, |k, v| {
        m.insert(*k, *v, 0).map_err(std::io::Error::other)
    })
    .map_err(ctx(name))
}

/// Deletes `keys` (those present) from the hash map `name`, in batches.
/// Best effort, as entries of a state no endpoint uses any more are
/// unreachable: a batch that fails is retried key by key, whose failures
/// are ignored.
fn delete_hash<K: aya::Pod, V: aya::Pod>(
    bpf: &mut Ebpf,
    name: &'static str,
    keys: &[K],
) -> Result<(), DatapathError> {
    let fd = hash_fd(bpf, name)?;
    let mut m: BpfHashMap<_, K, V> = BpfHashMap::try_from(map(bpf, name)?).map_err(ctx(name))?;
    let batched = crate::batch::delete(fd.as_fd(), keys, |k| {
        let _ = m.remove(k);
    });
    if batched.is_err() {
        for k in keys {
            let _ = m.remove(k);
        }
    }
    Ok(())
}

/// A descriptor of the hash map `name` of its own, for the batch calls
/// beside aya's handle on the same map.
fn hash_fd(bpf: &mut Ebpf, name: &'static str) -> Result<std::os::fd::OwnedFd, DatapathError> {
    match map(bpf, name)? {
        aya::maps::Map::HashMap(d) => d
            .fd()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| DatapathError::new(format!("{name}: {e}"))),
        _ => Err(DatapathError::new(format!("{name} is not a hash map"))),
    }
}

impl Datapath {
    /// Loads the object and its programs into the kernel (the verifier runs
    /// here), with maps of its own that go away with it: for tests and
    /// benchmarks. Needs CAP_BPF (root).
    pub fn load() -> Result<Datapath, DatapathError> {
        Self::load_object(BPF_OBJECT, None)
    }

    /// Loads the agent's datapath with its maps pinned under `root`/v<layout>
    /// on bpffs: maps already pinned there (an earlier agent's) are reused,
    /// with their entries, so enforcement continues across a restart; the
    /// state found is adopted, and the next [`apply`](Self::apply) replaces
    /// it atomically per endpoint and deletes what it no longer uses.
    pub fn load_pinned(root: &Path) -> Result<(Datapath, Adopted), DatapathError> {
        ensure_bpffs(root)?;
        let dir = pin_dir(root);
        std::fs::create_dir_all(dir.join("links")).map_err(|e| {
            DatapathError::new(format!(
                "creating {}: {e} (is bpffs mounted there?)",
                dir.display()
            ))
        })?;
        let mut dp = Self::load_object(BPF_OBJECT_PINNED, Some(&dir))?;
        let adopted = dp.adopt()?;
        Ok((dp, adopted))
    }

    fn load_object(object: &[u8], pin: Option<&Path>) -> Result<Datapath, DatapathError> {
        let mut loader = EbpfLoader::new();
        if let Some(dir) = pin {
            loader.map_pin_path(dir);
        }
        let cpus = crate::events::possible_cpus()?;
        loader.set_max_entries("SL_EVENTS", cpus);
        let mut bpf = loader
            .load(object)
            .map_err(ctx("loading bpf/sluice.bpf.o"))?;
        for name in [FROM_ENDPOINT, TO_ENDPOINT, NOOP, CLOCK] {
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
        let events = match bpf.take_map("SL_EVENTS") {
            Some(aya::maps::Map::Array(m)) => EventRings::new(m)?,
            _ => return Err(DatapathError::new("SL_EVENTS missing from the object")),
        };
        Ok(Datapath {
            bpf,
            events,
            clock: None,
            clock_tried: None,
            generation: 0,
            written: Written::default(),
            slots: HashMap::new(),
            pin: pin.map(Path::to_owned),
            test_mode: false,
        })
    }

    /// Reads back the state pinned maps hold: the enforced generation, its
    /// addresses, prefixes, endpoints and every policy entry (entries of an
    /// update that was interrupted included, so the next one removes them).
    fn adopt(&mut self) -> Result<Adopted, DatapathError> {
        let cfg = self.config()?;
        self.generation = cfg.generation;
        self.test_mode = cfg.test_mode != 0;
        let slot = (cfg.generation & 1) as usize;
        let mut w = Written::default();
        {
            let pol: BpfHashMap<_, PolicyKey, PolicyValue> =
                BpfHashMap::try_from(map(&mut self.bpf, "SL_POLICY")?).map_err(ctx("SL_POLICY"))?;
            for k in pol.keys() {
                w.policy.insert(k.map_err(ctx("reading SL_POLICY"))?);
            }
        }
        w.v4 = read_family(&mut self.bpf, V4_MAPS, slot, cfg.world[slot])?;
        w.v6 = read_family(&mut self.bpf, V6_MAPS, slot, cfg.world6[slot])?;
        {
            let eps: Array<_, EndpointInfo> = Array::try_from(map(&mut self.bpf, "SL_ENDPOINTS")?)
                .map_err(ctx("SL_ENDPOINTS"))?;
            for key in 0..EP_DIRECT {
                let info = eps.get(&key, 0).map_err(ctx("reading SL_ENDPOINTS"))?;
                if info.identity != 0 {
                    w.endpoints.insert(key);
                    self.slots.insert(key, info.slot);
                }
            }
        }
        {
            let eps: BpfHashMap<_, u32, EndpointInfo> =
                BpfHashMap::try_from(map(&mut self.bpf, "SL_ENDPOINTS_HIGH")?)
                    .map_err(ctx("SL_ENDPOINTS_HIGH"))?;
            for item in eps.iter() {
                let (key, info) = item.map_err(ctx("reading SL_ENDPOINTS_HIGH"))?;
                w.endpoints.insert(key);
                self.slots.insert(key, info.slot);
            }
        }
        let adopted = Adopted {
            endpoints: w.endpoints.len(),
            policy_entries: w.policy.len(),
            ipcache_entries: w.v4.len() + w.v6.len(),
            generation: cfg.generation,
        };
        self.written = w;
        Ok(adopted)
    }

    fn config(&mut self) -> Result<Config, DatapathError> {
        let cfg: Array<_, Config> =
            Array::try_from(map(&mut self.bpf, "SL_CONFIG")?).map_err(ctx("SL_CONFIG"))?;
        cfg.get(&0, 0).map_err(ctx("reading SL_CONFIG"))
    }

    fn set_config(&mut self, c: Config) -> Result<(), DatapathError> {
        let mut cfg: Array<_, Config> =
            Array::try_from(map(&mut self.bpf, "SL_CONFIG")?).map_err(ctx("SL_CONFIG"))?;
        cfg.set(0, c, 0).map_err(ctx("writing SL_CONFIG"))
    }

    /// Tells the programs where the L7 proxy's sockets are (0: no proxy,
    /// and traffic to be proxied is dropped).
    pub fn set_proxy_ports(&mut self, tcp: u16, udp: u16) -> Result<(), DatapathError> {
        let mut cfg = self.config()?;
        cfg.proxy_port_tcp = tcp;
        cfg.proxy_port_udp = udp;
        self.set_config(cfg)
    }

    /// Counts a refused update (for metrics).
    pub fn count_error(&mut self) -> Result<(), DatapathError> {
        let mut c = self.config()?;
        c.update_errors = c.update_errors.wrapping_add(1);
        self.set_config(c)
    }

    /// Writes compiled state into the maps. `endpoint_keys` maps endpoint
    /// names to their key: the ifindex of the host-side interface, or in
    /// test mode the skb mark a test packet carries. `node` is the node this
    /// datapath runs on: its own addresses are `host` here.
    ///
    /// The whole state is checked against the maps' capacity before anything
    /// is written, so an oversized artifact is refused, never half-loaded.
    /// The new state is written beside the enforced one (policy entries
    /// under new map ids, identities in the other ipcache slot); each
    /// endpoint then switches in one map update, and only after all have
    /// switched is the old state deleted and conntrack told to judge
    /// established connections again.
    pub fn apply(
        &mut self,
        c: &Compiled,
        endpoint_keys: &HashMap<String, u32>,
        node: Option<&str>,
        test_mode: bool,
    ) -> Result<ApplyStats, DatapathError> {
        let total: usize = c.maps.iter().map(|m| m.len()).sum();
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
        let generation = self.generation.wrapping_add(1);
        let map_id = |index: usize| ((generation & 0xffff) << 16) | index as u32;
        let (new_slot, old_slot) = ((generation & 1) as usize, (!generation & 1) as usize);

        let mut next = Written::default();
        for e in &c.ipcache {
            let len = u32::from(e.cidr.prefix_len);
            let host = len == if e.cidr.addr.is_ipv4() { 32 } else { 128 };
            // This node's own addresses are `host` to its datapath.
            let id = if host && e.node.is_some() && e.node.as_deref() == node {
                HOST
            } else {
                e.identity
            };
            match (e.cidr.addr, host) {
                (IpAddr::V4(a), true) => {
                    next.v4.hosts.insert(a.octets(), id);
                }
                (IpAddr::V4(a), false) => {
                    next.v4.prefixes.insert((len, a.octets()), id);
                }
                (IpAddr::V6(a), true) => {
                    next.v6.hosts.insert(a.octets(), id);
                }
                (IpAddr::V6(a), false) => {
                    next.v6.prefixes.insert((len, a.octets()), id);
                }
            }
        }
        let hosts_total = next.v4.hosts.len() + self.written.v4.hosts.len();
        let hosts6_total = next.v6.hosts.len() + self.written.v6.hosts.len();
        if hosts_total.max(hosts6_total) > IPCACHE_CAPACITY
            || next.v4.prefixes.len() + self.written.v4.prefixes.len() > IPCACHE_CAPACITY
            || next.v6.prefixes.len() + self.written.v6.prefixes.len() > IPCACHE_CAPACITY
        {
            return Err(DatapathError::new(format!(
                "the artifact's ipcache ({} addresses, {} prefixes) with the enforced one exceeds the datapath map's {IPCACHE_CAPACITY}",
                next.v4.hosts.len() + next.v6.hosts.len(),
                next.v4.prefixes.len() + next.v6.prefixes.len()
            )));
        }
        let mut cfg = self.config()?;
        // While both states are live the trie is consulted if either has
        // prefixes.
        cfg.test_mode = u32::from(test_mode);
        cfg.allow_localhost = 1;
        cfg.has_lpm = u32::from(self.written.v4.has_lpm() || next.v4.has_lpm());
        cfg.has_lpm6 = u32::from(self.written.v6.has_lpm() || next.v6.has_lpm());
        cfg.world[new_slot] = next.v4.world();
        cfg.world6[new_slot] = next.v6.world();
        self.set_config(cfg)?;

        let mut stats = ApplyStats::default();
        let slots = (new_slot, old_slot);
        write_family(&mut self.bpf, V4_MAPS, &next.v4, &self.written.v4, slots)?;
        write_family(&mut self.bpf, V6_MAPS, &next.v6, &self.written.v6, slots)?;
        stats.ipcache_hosts = next.v4.hosts.len() + next.v6.hosts.len();
        stats.ipcache_prefixes = next.v4.prefixes.len() + next.v6.prefixes.len();
        let mut plens = vec![(0u32, 0u32); c.maps.len()];
        {
            let mut keys = Vec::with_capacity(total);
            let mut values = Vec::with_capacity(total);
            for (index, m) in c.maps.iter().enumerate() {
                for (k, v) in &m.entries {
                    keys.push(k.to_kernel(map_id(index)));
                    values.push(v.to_kernel(k));
                    if k.identity == 0 {
                        plens[index].1 |= 1 << k.plen;
                    } else {
                        plens[index].0 |= 1 << k.plen;
                    }
                }
            }
            write_hash(&mut self.bpf, "SL_POLICY", &keys, &values)?;
            stats.policy_entries += keys.len();
            next.policy.extend(keys);
        }
        // Counter slots: kept for endpoints that stay, the lowest free one
        // (zeroed) for new ones.
        let mut used: HashSet<u16> = HashSet::new();
        let mut fresh = Vec::new();
        let mut slot_of = HashMap::new();
        for e in &c.endpoints {
            if let Some(&key) = endpoint_keys.get(&e.name) {
                match self.slots.get(&key) {
                    Some(&s) if used.insert(s) => {
                        slot_of.insert(key, s);
                    }
                    _ => fresh.push(key),
                }
            }
        }
        let mut free = (0..=u16::MAX).filter(|s| !used.contains(s));
        for key in fresh {
            let s = free
                .next()
                .ok_or_else(|| DatapathError::new("more than 65,536 endpoints on one node"))?;
            slot_of.insert(key, s);
            self.zero_counters(s)?;
        }
        {
            for e in &c.endpoints {
                let Some(&key) = endpoint_keys.get(&e.name) else {
                    continue;
                };
                let info = EndpointInfo {
                    map_id: map_id(e.map),
                    identity: e.identity.max(1),
                    enforced_ingress: u8::from(e.enforced[0]),
                    enforced_egress: u8::from(e.enforced[1]),
                    slot: slot_of[&key],
                    plens: plens[e.map].0,
                    plens_any: plens[e.map].1,
                    entries: u32::try_from(c.maps[e.map].len()).unwrap_or(u32::MAX),
                    // Audit maps come after the maps of the endpoints, so
                    // their index (and id) is never 0, which means none.
                    audit_map_id: e.audit_map.map_or(0, map_id),
                    audit_plens: e.audit_map.map_or(0, |m| plens[m].0),
                    audit_plens_any: e.audit_map.map_or(0, |m| plens[m].1),
                };
                // One map update switches the endpoint to the new state.
                self.write_endpoint(key, Some(info))?;
                next.endpoints.insert(key);
                stats.endpoints += 1;
            }
            let gone: Vec<u32> = self
                .written
                .endpoints
                .difference(&next.endpoints)
                .copied()
                .collect();
            for key in gone {
                self.write_endpoint(key, None)?;
            }
        }
        cfg.generation = generation;
        cfg.has_lpm = u32::from(next.v4.has_lpm());
        cfg.has_lpm6 = u32::from(next.v6.has_lpm());
        cfg.updates = cfg.updates.wrapping_add(1);
        self.set_config(cfg)?;
        self.remove_stale(&next)?;
        self.slots = slot_of;
        self.written = next;
        self.generation = generation;
        self.test_mode = test_mode;
        Ok(stats)
    }

    fn zero_counters(&mut self, slot: u16) -> Result<(), DatapathError> {
        let mut stats: aya::maps::PerCpuArray<_, [u64; crate::maps::STAT_MAX]> =
            aya::maps::PerCpuArray::try_from(map(&mut self.bpf, "SL_STATS")?)
                .map_err(ctx("SL_STATS"))?;
        let cpus = aya::util::nr_cpus()
            .map_err(|(_, e)| DatapathError::new(format!("counting CPUs: {e}")))?;
        let zeros = aya::maps::PerCpuValues::try_from(vec![[0u64; crate::maps::STAT_MAX]; cpus])
            .map_err(ctx("SL_STATS"))?;
        stats
            .set(u32::from(slot), zeros, 0)
            .map_err(ctx("writing SL_STATS"))
    }

    /// Writes (or, with `None`, removes) an endpoint's entry: an array slot
    /// for small keys, the hash for others.
    fn write_endpoint(
        &mut self,
        key: u32,
        info: Option<EndpointInfo>,
    ) -> Result<(), DatapathError> {
        if key < EP_DIRECT {
            let mut eps: Array<_, EndpointInfo> =
                Array::try_from(map(&mut self.bpf, "SL_ENDPOINTS")?)
                    .map_err(ctx("SL_ENDPOINTS"))?;
            eps.set(key, info.unwrap_or_default(), 0)
                .map_err(ctx("writing SL_ENDPOINTS"))
        } else {
            let mut eps: BpfHashMap<_, u32, EndpointInfo> =
                BpfHashMap::try_from(map(&mut self.bpf, "SL_ENDPOINTS_HIGH")?)
                    .map_err(ctx("SL_ENDPOINTS_HIGH"))?;
            match info {
                Some(i) => eps
                    .insert(key, i, 0)
                    .map_err(ctx("writing SL_ENDPOINTS_HIGH")),
                None => {
                    let _ = eps.remove(&key);
                    Ok(())
                }
            }
        }
    }

    /// Deletes what the previous state wrote and the new one does not use:
    /// its policy entries (no endpoint points at them any more) and
    /// addresses that left the ipcache.
    fn remove_stale(&mut self, next: &Written) -> Result<(), DatapathError> {
        let old = std::mem::take(&mut self.written);
        {
            let gone: Vec<PolicyKey> = old.policy.difference(&next.policy).copied().collect();
            delete_hash::<_, PolicyValue>(&mut self.bpf, "SL_POLICY", &gone)?;
        }
        remove_family(&mut self.bpf, V4_MAPS, &old.v4, &next.v4)?;
        remove_family(&mut self.bpf, V6_MAPS, &old.v6, &next.v6)?;
        Ok(())
    }

    /// Takes the verdict events the programs emitted since the last call,
    /// stamped with the time they were judged (to a tick). The first call
    /// measures the tick rate (`calibrate_clock`, 100 ms) when that was
    /// not done yet. Re-anchoring after a step of the wall clock is the
    /// owner's (`reanchor_clock`: the agent does it every 10 s), not a cost
    /// of every read.
    pub fn drain_events(&mut self) -> Vec<Event> {
        let clock = match self.clock {
            Some(c) => Some(c),
            // A failed measure is not retried at every read: it sleeps.
            None if self
                .clock_tried
                .is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(60)) =>
            {
                self.clock_tried = Some(std::time::Instant::now());
                self.calibrate_clock().ok()
            }
            None => None,
        };
        self.events.read(clock.as_ref())
    }

    /// The tick count now and the wall-clock time it was read at.
    fn tick_sample(&self) -> Result<(u32, std::time::SystemTime), DatapathError> {
        // Any frame will do: the program looks at nothing.
        let frame = crate::packet::ipv4(
            std::net::Ipv4Addr::LOCALHOST,
            std::net::Ipv4Addr::LOCALHOST,
            17,
            0,
            0,
        );
        crate::events::tick_sample(|| Ok(self.test_run(CLOCK, &frame, 0, 1)?.0))
    }

    /// Measures how the kernel's ticks, which events carry, map to
    /// wall-clock time (ticks counted over 100 ms, rounded to the kernel's
    /// usual rates), and writes it into `SL_CLOCK` for other readers of a
    /// pinned datapath (`sluice observe`).
    pub fn calibrate_clock(&mut self) -> Result<TickClock, DatapathError> {
        let (j0, t0) = self.tick_sample()?;
        std::thread::sleep(std::time::Duration::from_millis(100));
        let (j1, t1) = self.tick_sample()?;
        let hz = TickClock::hz_of(
            j1.wrapping_sub(j0),
            t1.duration_since(t0).unwrap_or_default(),
        );
        if hz == 0 {
            return Err(DatapathError::new(
                "the kernel's tick count did not advance",
            ));
        }
        self.write_clock(TickClock::anchored(j1, t1, hz))
    }

    /// Anchors the measured tick rate at the current tick (the wall clock
    /// may have been stepped since).
    pub fn reanchor_clock(&mut self) -> Result<TickClock, DatapathError> {
        let Some(hz) = self.clock.map(|c| c.hz) else {
            return self.calibrate_clock();
        };
        let (j, t) = self.tick_sample()?;
        self.write_clock(TickClock::anchored(j, t, hz))
    }

    fn write_clock(&mut self, c: TickClock) -> Result<TickClock, DatapathError> {
        let mut m: Array<_, abi::ClockValue> =
            Array::try_from(map(&mut self.bpf, "SL_CLOCK")?).map_err(ctx("SL_CLOCK"))?;
        m.set(0, c.to_value(), 0).map_err(ctx("writing SL_CLOCK"))?;
        self.clock = Some(c);
        Ok(c)
    }

    /// Events the programs could not deliver (the reader fell behind).
    pub fn events_lost(&self) -> u64 {
        self.events.lost()
    }

    /// Attaches both programs to an endpoint's host-side interface: its
    /// ingress judges the endpoint's egress, its egress the endpoint's
    /// ingress. On kernels ≥ 6.6 these are TCX links. Unpinned, they detach
    /// when this `Datapath` is dropped; pinned (agent mode), each link is
    /// pinned as `links/<ifindex>-<ingress|egress>` (bpffs refuses dots in
    /// names, which interface names may have) and outlives the agent, and
    /// a link an earlier agent pinned there is replaced only after the new
    /// one is attached, so the interface is never without a program.
    pub fn attach(&mut self, iface: &str) -> Result<(), DatapathError> {
        use aya::programs::links::FdLink;
        use aya::programs::TcAttachType;
        for (name, at, suffix) in [
            (FROM_ENDPOINT, TcAttachType::Ingress, "ingress"),
            (TO_ENDPOINT, TcAttachType::Egress, "egress"),
        ] {
            let prog: &mut SchedClassifier = self
                .bpf
                .program_mut(name)
                .ok_or_else(|| DatapathError::new(format!("no program {name}")))?
                .try_into()
                .map_err(ctx("not a classifier"))?;
            let id = prog
                .attach(iface, at)
                .map_err(|e| DatapathError::new(format!("attaching {name} to {iface}: {e}")))?;
            let Some(dir) = &self.pin else { continue };
            let link: FdLink = prog
                .take_link(id)
                .map_err(ctx("taking the TC link"))?
                .try_into()
                .map_err(|e| {
                    DatapathError::new(format!(
                        "the link on {iface} is not a TCX link, cannot pin it: {e}"
                    ))
                })?;
            let index = ifindex(iface)?;
            let path = dir.join("links").join(format!("{index}-{suffix}"));
            let fresh = dir.join("links").join(format!("{index}-{suffix}-new"));
            let _ = std::fs::remove_file(&fresh);
            link.pin(&fresh)
                .map_err(|e| DatapathError::new(format!("pinning {}: {e}", fresh.display())))?;
            // Unpinning the old link drops the last reference to it: the
            // kernel detaches it, and the new one is already in place.
            std::fs::rename(&fresh, &path)
                .map_err(|e| DatapathError::new(format!("pinning {}: {e}", path.display())))?;
        }
        Ok(())
    }

    /// Removes the pinned links of interfaces (by ifindex) that are not in
    /// `keep`: endpoints that left this node, interfaces that are gone.
    pub fn prune_links(&self, keep: &HashSet<u32>) -> Result<Vec<String>, DatapathError> {
        let Some(dir) = &self.pin else {
            return Ok(Vec::new());
        };
        let mut removed = Vec::new();
        let links = dir.join("links");
        let entries = std::fs::read_dir(&links)
            .map_err(|e| DatapathError::new(format!("{}: {e}", links.display())))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let index = name.split('-').next().and_then(|i| i.parse::<u32>().ok());
            if !index.is_some_and(|i| keep.contains(&i)) {
                std::fs::remove_file(entry.path())
                    .map_err(|e| DatapathError::new(format!("{}: {e}", entry.path().display())))?;
                removed.push(name);
            }
        }
        removed.sort();
        Ok(removed)
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

/// Makes sure `root` is on a bpf filesystem: pins elsewhere fail. The
/// conventional /sys/fs/bpf is mounted when it is not yet (as Cilium's agent
/// does); any other place must already be bpffs.
pub fn ensure_bpffs(root: &Path) -> Result<(), DatapathError> {
    let mounts = std::fs::read_to_string("/proc/mounts")
        .map_err(|e| DatapathError::new(format!("/proc/mounts: {e}")))?;
    let on_bpffs = mounts.lines().any(|l| {
        let mut f = l.split_whitespace();
        let (_, point, fstype) = (f.next(), f.next(), f.next());
        fstype == Some("bpf") && point.is_some_and(|p| root.starts_with(p))
    });
    if on_bpffs {
        return Ok(());
    }
    let sys = Path::new("/sys/fs/bpf");
    if !root.starts_with(sys) {
        return Err(DatapathError::new(format!(
            "{} is not on a bpf filesystem; use a directory under /sys/fs/bpf or mount one (`mount -t bpf bpf DIR`)",
            root.display()
        )));
    }
    let status = std::process::Command::new("mount")
        .args(["-t", "bpf", "bpf", "/sys/fs/bpf"])
        .status()
        .map_err(|e| DatapathError::new(format!("running mount: {e}")))?;
    if !status.success() {
        return Err(DatapathError::new(
            "/sys/fs/bpf is not mounted and `mount -t bpf bpf /sys/fs/bpf` failed",
        ));
    }
    Ok(())
}

/// Detaches and deletes everything an agent pinned under `root` (links
/// first, so no program is left attached to maps being removed). Returns
/// the paths removed; a missing directory is not an error.
pub fn teardown(root: &Path) -> Result<Vec<PathBuf>, DatapathError> {
    let dir = pin_dir(root);
    let mut removed = Vec::new();
    for sub in [dir.join("links"), dir.clone()] {
        let Ok(entries) = std::fs::read_dir(&sub) else {
            continue;
        };
        for entry in entries.flatten() {
            let p = entry.path();
            if p.is_dir() {
                continue;
            }
            std::fs::remove_file(&p)
                .map_err(|e| DatapathError::new(format!("{}: {e}", p.display())))?;
            removed.push(p);
        }
    }
    for d in [dir.join("links"), dir.clone()] {
        if d.exists() {
            std::fs::remove_dir(&d)
                .map_err(|e| DatapathError::new(format!("{}: {e}", d.display())))?;
        }
    }
    // The root too, when nothing else (another layout's pins) is in it.
    let _ = std::fs::remove_dir(root);
    Ok(removed)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_match_is_the_states_own_answer_for_a_prefix() {
        let p = |a: [u8; 4]| a;
        let state = HashMap::from([
            ((0, [0, 0, 0, 0]), WORLD),
            ((8, p([10, 0, 0, 0])), 100),
            ((16, p([10, 1, 0, 0])), 200),
        ]);
        // A prefix the state has: its own identity.
        assert_eq!(longest_match(&state, 16, [10, 1, 0, 0]), 200);
        // A more specific prefix of another state: the state's answer for
        // the addresses inside it.
        assert_eq!(longest_match(&state, 24, [10, 1, 7, 0]), 200);
        assert_eq!(longest_match(&state, 24, [10, 2, 7, 0]), 100);
        // Nothing covers it: the /0 default, or world without one.
        assert_eq!(longest_match(&state, 24, [11, 0, 0, 0]), WORLD);
        assert_eq!(longest_match(&HashMap::new(), 8, [10, 0, 0, 0]), WORLD);
        let dual = HashMap::from([((0, [0, 0, 0, 0]), 9)]);
        assert_eq!(longest_match(&dual, 32, [1, 2, 3, 4]), 9);
    }

    /// The datapath, or `None` (test skipped) where BPF is unavailable and
    /// SLUICE_REQUIRE_BPF is not 1.
    fn loaded() -> Option<Datapath> {
        match Datapath::load() {
            Ok(d) => Some(d),
            Err(e) if std::env::var("SLUICE_REQUIRE_BPF").as_deref() == Ok("1") => {
                panic!("BPF is required (SLUICE_REQUIRE_BPF=1) but the datapath did not load: {e}")
            }
            Err(e) => {
                eprintln!("SKIPPED: the eBPF datapath cannot be loaded here ({e})");
                None
            }
        }
    }

    #[test]
    fn batched_writes_reach_the_map_and_refused_batches_fall_back() {
        let Some(mut dp) = loaded() else {
            return;
        };
        let n = 20_000u32; // more than one batch
        let keys: Vec<[u8; 4]> = (0..n).map(|i| (0x0a00_0000 + i).to_be_bytes()).collect();
        let values: Vec<IpcacheValue> = (0..n)
            .map(|i| IpcacheValue {
                identity: [i + 1, 0],
            })
            .collect();
        let fd = hash_fd(&mut dp.bpf, "SL_IPCACHE_HOSTS").expect("fd");
        let mut one_by_one = 0;
        crate::batch::update(fd.as_fd(), &keys, &values, |_, _| {
            one_by_one += 1;
            Ok(())
        })
        .expect("batch update");
        assert_eq!(one_by_one, 0, "a hash map takes batches");
        let hosts: BpfHashMap<_, [u8; 4], IpcacheValue> =
            BpfHashMap::try_from(map(&mut dp.bpf, "SL_IPCACHE_HOSTS").expect("map")).expect("hash");
        assert_eq!(hosts.keys().count(), n as usize);
        assert_eq!(
            hosts.get(&keys[17_321], 0).expect("written").identity,
            [17_322, 0]
        );
        // Deleting the first half, with a key that is not there among them.
        let mut gone = keys[..10_000].to_vec();
        gone.insert(5_000, [192, 0, 2, 1]);
        crate::batch::delete(fd.as_fd(), &gone, |_| one_by_one += 1).expect("batch delete");
        assert_eq!(one_by_one, 0);
        assert!(hosts.get(&keys[0], 0).is_err() && hosts.get(&keys[9_999], 0).is_err());
        assert_eq!(hosts.keys().count(), 10_000, "the second half stays");

        // Where batches are refused (EINVAL, as from kernels before 5.6;
        // here a descriptor that is no map), every entry goes one by one.
        let not_a_map = std::fs::File::open("/dev/null").expect("/dev/null");
        crate::batch::update(not_a_map.as_fd(), &keys[..3], &values[..3], |_, _| {
            one_by_one += 1;
            Ok(())
        })
        .expect("fallback");
        assert_eq!(one_by_one, 3);
    }
}
