//! Per-endpoint policy maps: keys and entries in the datapath's layout, and
//! the datapath's lookup.
//!
//! A key is `(remote identity, direction, protocol, destination port)` with a
//! prefix length over the 24 bits of protocol and port, as Cilium's LPM
//! policy map (`bpf/lib/policy.h`): 0 = any protocol and port, 8 = one
//! protocol and any port, 8 + k = one protocol and a port prefix of k bits,
//! 24 = one exact port. Identity 0 is the wildcard ("any peer").

use serde::Serialize;
use std::collections::BTreeMap;

/// Precedence of deny entries: they beat everything.
pub const DENY_PRECEDENCE: u32 = u32::MAX;
/// Allows that redirect to a proxy rank above plain allows.
pub const REDIRECT_PRECEDENCE: u32 = 2;
pub const ALLOW_PRECEDENCE: u32 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Key {
    pub identity: u32,
    pub egress: bool,
    pub proto: u8,
    pub dport: u16,
    /// Prefix length over protocol (8 bits) and port (16 bits): 0..=24.
    pub plen: u8,
}

impl Key {
    /// The 24 bits of protocol and port.
    pub fn l4_bits(proto: u8, dport: u16) -> u32 {
        (u32::from(proto) << 16) | u32::from(dport)
    }

    pub fn mask(plen: u8) -> u32 {
        if plen == 0 {
            0
        } else {
            (0xFF_FFFF >> (24 - u32::from(plen))) << (24 - u32::from(plen))
        }
    }

    /// A key with the bits past `plen` cleared.
    pub fn new(identity: u32, egress: bool, proto: u8, dport: u16, plen: u8) -> Key {
        let bits = Key::l4_bits(proto, dport) & Key::mask(plen);
        Key {
            identity,
            egress,
            proto: (bits >> 16) as u8,
            dport: (bits & 0xFFFF) as u16,
            plen,
        }
    }

    /// This entry's key in the datapath's policy map `map_id` (`struct
    /// sl_policy_key`): the port in network order; the bits past the
    /// prefix are clear already (`Key::new`), as the kernel's lookup keys
    /// are masked the same way.
    pub fn to_kernel(&self, map_id: u32) -> abi::PolicyKey {
        abi::PolicyKey {
            map_id,
            identity: self.identity,
            egress: u8::from(self.egress),
            proto: self.proto,
            dport: self.dport.to_be_bytes(),
            plen: self.plen,
            pad: [0; 3],
        }
    }

    pub fn matches(&self, proto: u8, dport: u16) -> bool {
        Key::l4_bits(proto, dport) & Key::mask(self.plen) == Key::l4_bits(self.proto, self.dport)
    }

    /// Whether every (proto, port) this key matches, `other` matches too.
    pub fn covered_by(&self, other: &Key) -> bool {
        other.plen <= self.plen && other.matches(self.proto, self.dport)
    }

    /// The ports of its protocol this key covers, as `[start, end)` (`end`
    /// may be 65,536); `None` when it covers whole protocols.
    pub fn port_span(&self) -> Option<(u32, u32)> {
        (self.plen > 8).then(|| {
            let start = u32::from(self.dport);
            (start, start + (1u32 << (24 - u32::from(self.plen))))
        })
    }

    /// `ANY`, `TCP`, `80/TCP`, `80-95/TCP`, as `cilium bpf policy get` shows.
    pub fn port_text(&self) -> String {
        if self.plen == 0 {
            return "ANY".into();
        }
        let proto = proto_name(self.proto);
        match self.port_span() {
            None => proto,
            Some((start, end)) if end - start == 1 => format!("{start}/{proto}"),
            Some((start, end)) => format!("{start}-{}/{proto}", end - 1),
        }
    }
}

pub fn proto_name(p: u8) -> String {
    match p {
        0 => "ANY".into(),
        1 => "ICMP".into(),
        2 => "IGMP".into(),
        6 => "TCP".into(),
        17 => "UDP".into(),
        58 => "ICMPv6".into(),
        112 => "VRRP".into(),
        132 => "SCTP".into(),
        n => n.to_string(),
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub deny: bool,
    /// Allowed traffic goes through the L7 proxy.
    pub redirect: bool,
    /// Mutual authentication is required.
    pub auth: bool,
    pub precedence: u32,
    /// Indexes into the artifact's origins: the rules that produced it.
    pub origins: Origins,
}

/// The origins of an entry, sorted: almost always one, kept inline (an
/// entry is one of tens of millions at 100,000 pods, and a heap list each
/// cost more than the entry itself).
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Origins {
    One(u32),
    Many(Box<Vec<u32>>),
}

impl Origins {
    pub fn one(origin: u32) -> Origins {
        Origins::One(origin)
    }

    /// Adds an origin, keeping them sorted and distinct.
    pub fn insert(&mut self, o: u32) {
        match self {
            Origins::One(x) if *x == o => {}
            Origins::One(x) => {
                let mut v = vec![*x, o];
                v.sort_unstable();
                *self = Origins::Many(Box::new(v));
            }
            Origins::Many(v) => {
                if let Err(i) = v.binary_search(&o) {
                    v.insert(i, o);
                }
            }
        }
    }
}

impl std::ops::Deref for Origins {
    type Target = [u32];
    fn deref(&self) -> &[u32] {
        match self {
            Origins::One(x) => std::slice::from_ref(x),
            Origins::Many(v) => v,
        }
    }
}

impl std::fmt::Debug for Origins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl Serialize for Origins {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'a> IntoIterator for &'a Origins {
    type Item = &'a u32;
    type IntoIter = std::slice::Iter<'a, u32>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// As read back from an artifact: in the order written.
impl From<Vec<u32>> for Origins {
    fn from(v: Vec<u32>) -> Origins {
        match v.as_slice() {
            [one] => Origins::One(*one),
            _ => Origins::Many(Box::new(v)),
        }
    }
}

impl Entry {
    pub fn allow(redirect: bool, auth: bool, origin: u32) -> Entry {
        Entry {
            deny: false,
            redirect,
            auth,
            precedence: if redirect {
                REDIRECT_PRECEDENCE
            } else {
                ALLOW_PRECEDENCE
            },
            origins: Origins::one(origin),
        }
    }

    /// This entry's value in the datapath's policy map under `key`
    /// (`struct sl_policy_value`): the datapath compares an
    /// identity-specific entry with a wildcard one by precedence, then by
    /// the prefix length it was written with.
    pub fn to_kernel(&self, key: &Key) -> abi::PolicyValue {
        abi::PolicyValue {
            precedence: self.precedence,
            flags: (if self.deny { abi::FLAG_DENY } else { 0 })
                | (if self.redirect { abi::FLAG_REDIRECT } else { 0 })
                | (if self.auth { abi::FLAG_AUTH } else { 0 }),
            plen: key.plen,
            pad: 0,
        }
    }

    pub fn deny(origin: u32) -> Entry {
        Entry {
            deny: true,
            redirect: false,
            auth: false,
            precedence: DENY_PRECEDENCE,
            origins: Origins::one(origin),
        }
    }

    /// Folds another entry for the same key into this one: deny wins; allows
    /// merge (redirect and auth stick); provenance is the union of the
    /// entries of the winning kind.
    pub fn merge(&mut self, other: Entry) {
        match (self.deny, other.deny) {
            (true, false) => {}
            (false, true) => *self = other,
            _ => {
                self.redirect |= other.redirect;
                self.auth |= other.auth;
                self.precedence = self.precedence.max(other.precedence);
                for &o in other.origins.iter() {
                    self.origins.insert(o);
                }
            }
        }
    }
}

/// One endpoint's policy map.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PolicyMap {
    pub entries: BTreeMap<Key, Entry>,
    /// The prefix lengths present, longest first: a lookup probes only
    /// these (as an LPM trie walk visits only existing nodes).
    #[serde(skip)]
    plens: Vec<u8>,
    /// (allow origin, deny origin) for each allow entry a deny replaced
    /// while the map was built: what the lints need to say that an allow
    /// is dead. Not part of the datapath state (not in artifacts, not
    /// compared).
    #[serde(skip)]
    pub overridden: Vec<(u32, u32)>,
    /// The L7 rules of allows, by (egress, proto, dport, plen) key: what
    /// [`crate::l7::build_ports`] turns into `l7`.
    #[serde(skip)]
    pub l7_grants: BTreeMap<(bool, u8, u16, u8), Vec<crate::l7::L7Grant>>,
    /// The L7 policy of each redirected key: one automaton per protocol.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub l7: Vec<crate::l7::L7Port>,
}

fn first_origin(e: &Entry) -> u32 {
    e.origins.first().copied().unwrap_or(u32::MAX)
}

impl PartialEq for PolicyMap {
    fn eq(&self, other: &PolicyMap) -> bool {
        self.entries == other.entries
    }
}

impl Eq for PolicyMap {}

/// What a lookup found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hit<'a> {
    pub key: &'a Key,
    pub entry: &'a Entry,
}

impl PolicyMap {
    pub fn insert(&mut self, key: Key, entry: Entry) {
        if let Err(at) = self.plens.binary_search_by(|p| key.plen.cmp(p)) {
            self.plens.insert(at, key.plen);
        }
        match self.entries.get_mut(&key) {
            Some(e) => {
                match (e.deny, entry.deny) {
                    (false, true) => {
                        for &o in &e.origins {
                            self.overridden.push((o, first_origin(&entry)));
                        }
                    }
                    (true, false) => {
                        for &o in &entry.origins {
                            self.overridden.push((o, first_origin(e)));
                        }
                    }
                    _ => {}
                }
                e.merge(entry)
            }
            None => {
                self.entries.insert(key, entry);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The L7 policies of a hit's key, one per protocol with rules there.
    pub fn l7_ports(&self, key: Key) -> impl Iterator<Item = &crate::l7::L7Port> {
        self.l7.iter().filter(move |p| {
            p.egress == key.egress
                && p.proto == key.proto
                && p.dport == key.dport
                && p.plen == key.plen
        })
    }

    /// The L7 policy that applies to a hit (its key's, for its protocol).
    pub fn l7_port(&self, key: &Key, kind: crate::l7::L7Kind) -> Option<&crate::l7::L7Port> {
        self.l7_ports(*key).find(|p| p.kind == kind)
    }

    /// The prefix lengths the map's entries use, longest first.
    pub fn prefix_lens(&self) -> &[u8] {
        &self.plens
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Longest-prefix match for one identity.
    pub fn lpm(&self, identity: u32, egress: bool, proto: u8, dport: u16) -> Option<Hit<'_>> {
        self.plens.iter().find_map(|&plen| {
            let k = Key::new(identity, egress, proto, dport, plen);
            self.entries
                .get_key_value(&k)
                .map(|(key, entry)| Hit { key, entry })
        })
    }

    /// The datapath's decision procedure (`__policy_can_access`): the
    /// L3 entry for the peer's identity, unless a wildcard-identity entry
    /// has higher precedence, or equal precedence and a longer prefix.
    pub fn lookup(&self, identity: u32, egress: bool, proto: u8, dport: u16) -> Option<Hit<'_>> {
        let l3 = self.lpm(identity, egress, proto, dport);
        if let Some(h) = l3 {
            if h.entry.precedence == DENY_PRECEDENCE {
                return l3;
            }
        }
        let l4 = if identity == 0 {
            None
        } else {
            self.lpm(0, egress, proto, dport)
        };
        match (l3, l4) {
            (None, x) | (x, None) => x,
            (Some(a), Some(b)) => {
                if b.entry.precedence > a.entry.precedence
                    || (b.entry.precedence == a.entry.precedence && b.key.plen > a.key.plen)
                {
                    Some(b)
                } else {
                    Some(a)
                }
            }
        }
    }

    /// Makes the longest-prefix lookup honour deny precedence within one
    /// identity: an allow whose traffic a broader deny of the same identity
    /// covers would hide the deny from the LPM walk, so it becomes a copy of
    /// that deny (Cilium's "deny-preferred insert").
    pub fn apply_deny_precedence(&mut self) {
        let denies: Vec<(Key, Entry)> = self
            .entries
            .iter()
            .filter(|(_, e)| e.deny)
            .map(|(k, e)| (*k, e.clone()))
            .collect();
        if denies.is_empty() {
            return;
        }
        for (k, e) in self.entries.iter_mut() {
            if e.deny {
                continue;
            }
            let cover = denies
                .iter()
                .filter(|(dk, _)| {
                    dk.identity == k.identity && dk.egress == k.egress && k.covered_by(dk)
                })
                .max_by_key(|(dk, _)| dk.plen);
            if let Some((_, d)) = cover {
                for &o in &e.origins {
                    self.overridden.push((o, first_origin(d)));
                }
                *e = d.clone();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_encoding_is_the_datapath_key_and_value() {
        // Ports 8192-8207 of UDP: a 20-bit prefix over protocol and port.
        let k = Key::new(300, true, 17, 8200, 20);
        let kk = k.to_kernel(0x0003_0002);
        assert_eq!(
            (kk.map_id, kk.identity, kk.egress, kk.proto, kk.plen),
            (0x0003_0002, 300, 1, 17, 20)
        );
        // Masked to the prefix, in network byte order.
        assert_eq!(kk.dport, 8192u16.to_be_bytes());
        assert_eq!(kk.pad, [0; 3]);
        let allow = Entry::allow(true, true, 0).to_kernel(&k);
        assert_eq!(
            (allow.precedence, allow.flags, allow.plen),
            (REDIRECT_PRECEDENCE, abi::FLAG_REDIRECT | abi::FLAG_AUTH, 20)
        );
        let deny = Entry::deny(0).to_kernel(&Key::new(0, false, 0, 0, 0));
        assert_eq!((deny.flags, deny.plen), (abi::FLAG_DENY, 0));
        assert!(deny.precedence > allow.precedence);
    }

    #[test]
    fn lpm_prefers_longest_and_deny() {
        let mut m = PolicyMap::default();
        m.insert(Key::new(0, false, 0, 0, 0), Entry::allow(false, false, 0));
        m.insert(
            Key::new(300, false, 6, 80, 24),
            Entry::allow(false, false, 1),
        );
        m.insert(Key::new(0, false, 6, 80, 24), Entry::deny(2));
        // L3 allow vs L4-only deny: the deny's precedence wins.
        assert!(m.lookup(300, false, 6, 80).expect("hit").entry.deny);
        // Other ports fall to the wildcard allow.
        assert!(!m.lookup(300, false, 6, 81).expect("hit").entry.deny);
    }

    #[test]
    fn broader_deny_of_same_identity_wins_after_precedence_pass() {
        let mut m = PolicyMap::default();
        m.insert(
            Key::new(300, false, 6, 80, 24),
            Entry::allow(false, false, 1),
        );
        m.insert(Key::new(300, false, 0, 0, 0), Entry::deny(2));
        assert!(
            !m.lookup(300, false, 6, 80).expect("hit").entry.deny,
            "LPM alone finds the allow"
        );
        m.apply_deny_precedence();
        assert!(m.lookup(300, false, 6, 80).expect("hit").entry.deny);
    }

    #[test]
    fn port_text_matches_cilium() {
        assert_eq!(Key::new(1, false, 6, 80, 24).port_text(), "80/TCP");
        assert_eq!(Key::new(1, false, 6, 80, 20).port_text(), "80-95/TCP");
        assert_eq!(Key::new(1, false, 17, 0, 8).port_text(), "UDP");
        assert_eq!(Key::new(1, false, 0, 0, 0).port_text(), "ANY");
    }
}
