//! The compiled state as one versioned artifact.
//!
//! Two encodings of the same [`Compiled`] value:
//!
//! - **binary** (`.sluice`): what the agent loads. Little-endian, a magic
//!   and a format version, then sections of fixed-layout records: identities,
//!   ipcache, policy maps (entries in the datapath's key layout), endpoints,
//!   origins. [`decode`] checks every length and index and never panics on
//!   bad bytes.
//! - **JSON** (`compile -o json`): for people and snapshots. It carries a
//!   `schemaVersion` of its own ([`JSON_VERSION`]) and, per endpoint, its
//!   entries in `cilium bpf policy get` style.
//!
//! Layout of the binary form (all integers little-endian):
//!
//! ```text
//! header    : b"SLUICE\0\0", u32 version (= 3)
//! string    : u32 byte length, UTF-8 bytes
//! identities: u32 n, n × { u32 id, u8 kind (0 reserved, 1 endpoint, 2 cidr, 3 node),
//!                          string detail (prefix or node), u32 m, m × string label }
//! ipcache   : u32 n, n × { u8 family (4|6), u8 prefix length, [16] address,
//!                          u32 identity, string node ("" = none) }
//! maps      : u32 n, n × { u32 m, m × { u32 identity, u8 egress, u8 proto, u16 dport,
//!                          u8 prefix length (0..=24), u8 flags (1 deny, 2 redirect, 4 auth),
//!                          u32 precedence, u16 k, k × u32 origin } }
//! endpoints : u32 n, n × { string name, u32 identity, string node, u8 k, k × ip
//!                          (u8 family, [16] address), u32 map, u8 enforced (1 ingress,
//!                          2 egress), u8 host, u16 k, k × u32 selecting origin,
//!                          u32 audit map (0xffffffff: none), u16 k, k × u32 origin of
//!                          a selecting policy in audit mode }
//! origins   : u32 n, n × { string policy, string path, string file, u32 line, u32 col }
//! l7        : u32 n, n × { u32 map, u8 egress, u8 proto, u16 dport, u8 prefix length,
//!                          u8 kind (0 HTTP, 1 Kafka, 2 DNS), u32 k, k × rule { u32 origin,
//!                          u32 j, j × u32 identity, string text, u32 h, h × header
//!                          { string name, u8 has value, string value } }, u32 o, o × u32
//!                          open identity, u32 states, u32 bytes, string dfa (the
//!                          serialized regex-automata DFA, little-endian) }
//! ```
//!
//! Version 2 added the `l7` section: the agent and the simulator load the
//! automata without compiling a regex. Version 3 added each endpoint's
//! audit map.

use crate::compile::{Compiled, Endpoint, IpcacheEntry};
use crate::identity::{IdKind, IdentityInfo};
use crate::labels::{Label, LabelSet};
use crate::mapstate::{Entry, Key, PolicyMap};
use crate::model::Origin;
use policy_lang::ir::Cidr;
use serde::Serialize;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const MAGIC: &[u8; 8] = b"SLUICE\0\0";
pub const VERSION: u32 = 3;

/// The JSON view's `schemaVersion` (docs/schemas/compile.schema.json). It
/// shared the binary's number up to 3; 4 has camelCase keys and names the
/// entries' origins, so it moves on its own from here.
pub const JSON_VERSION: u32 = 4;

#[derive(Default)]
struct W(Vec<u8>);

impl W {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn len(&mut self, n: usize) {
        self.u32(u32::try_from(n).expect("fewer than 2^32 items"));
    }
    fn str(&mut self, s: &str) {
        self.len(s.len());
        self.0.extend_from_slice(s.as_bytes());
    }
    fn ip(&mut self, ip: &IpAddr) {
        match ip {
            IpAddr::V4(a) => {
                self.u8(4);
                let mut b = [0u8; 16];
                b[..4].copy_from_slice(&a.octets());
                self.0.extend_from_slice(&b);
            }
            IpAddr::V6(a) => {
                self.u8(6);
                self.0.extend_from_slice(&a.octets());
            }
        }
    }
}

/// Encodes the compiled state in the binary form.
pub fn encode(c: &Compiled) -> Vec<u8> {
    let mut w = W::default();
    w.0.extend_from_slice(MAGIC);
    w.u32(VERSION);
    w.len(c.identities.len());
    for i in &c.identities {
        w.u32(i.id);
        let (kind, detail) = match &i.kind {
            IdKind::Reserved => (0, ""),
            IdKind::Endpoint => (1, ""),
            IdKind::Cidr { prefix } => (2, prefix.as_str()),
            IdKind::Node { node } => (3, node.as_str()),
        };
        w.u8(kind);
        w.str(detail);
        let labels: Vec<&Label> = i.labels.iter().collect();
        w.len(labels.len());
        for l in labels {
            w.str(&l.to_string());
        }
    }
    w.len(c.ipcache.len());
    for e in &c.ipcache {
        w.ip(&e.cidr.addr);
        // The family byte was written by ip(); the prefix length follows.
        w.u8(e.cidr.prefix_len);
        w.u32(e.identity);
        w.str(e.node.as_deref().unwrap_or(""));
    }
    w.len(c.maps.len());
    for m in &c.maps {
        w.len(m.entries.len());
        for (k, e) in &m.entries {
            w.u32(k.identity);
            w.u8(u8::from(k.egress));
            w.u8(k.proto);
            w.u16(k.dport);
            w.u8(k.plen);
            w.u8(u8::from(e.deny) | (u8::from(e.redirect) << 1) | (u8::from(e.auth) << 2));
            w.u32(e.precedence);
            w.u16(u16::try_from(e.origins.len()).unwrap_or(u16::MAX));
            for o in e.origins.iter().take(u16::MAX as usize) {
                w.u32(*o);
            }
        }
    }
    w.len(c.endpoints.len());
    for e in &c.endpoints {
        w.str(&e.name);
        w.u32(e.identity);
        w.str(e.node.as_deref().unwrap_or(""));
        w.u8(u8::try_from(e.ips.len()).unwrap_or(u8::MAX));
        for ip in e.ips.iter().take(255) {
            w.ip(ip);
        }
        w.len(e.map);
        w.u8(u8::from(e.enforced[0]) | (u8::from(e.enforced[1]) << 1));
        w.u8(u8::from(e.host));
        w.u16(u16::try_from(e.selected_by.len()).unwrap_or(u16::MAX));
        for o in e.selected_by.iter().take(u16::MAX as usize) {
            w.u32(*o);
        }
        w.u32(e.audit_map.map_or(u32::MAX, |m| m as u32));
        w.u16(u16::try_from(e.audit_by.len()).unwrap_or(u16::MAX));
        for o in e.audit_by.iter().take(u16::MAX as usize) {
            w.u32(*o);
        }
    }
    w.len(c.origins.len());
    for o in &c.origins {
        w.str(&o.policy);
        w.str(&o.path);
        w.str(&o.file);
        w.u32(o.line);
        w.u32(o.col);
    }
    let ports: Vec<(usize, &crate::l7::L7Port)> = c
        .maps
        .iter()
        .enumerate()
        .flat_map(|(i, m)| m.l7.iter().map(move |p| (i, p)))
        .collect();
    w.len(ports.len());
    for (map, p) in ports {
        w.len(map);
        w.u8(u8::from(p.egress));
        w.u8(p.proto);
        w.u16(p.dport);
        w.u8(p.plen);
        w.u8(match p.kind {
            crate::l7::L7Kind::Http => 0,
            crate::l7::L7Kind::Kafka => 1,
            crate::l7::L7Kind::Dns => 2,
        });
        w.len(p.rules.len());
        for r in &p.rules {
            w.u32(r.origin);
            w.len(r.identities.len());
            for id in &r.identities {
                w.u32(*id);
            }
            w.str(&r.text);
            w.len(r.headers.len());
            for h in &r.headers {
                w.str(&h.name);
                w.u8(u8::from(h.value.is_some()));
                w.str(h.value.as_deref().unwrap_or(""));
            }
        }
        w.len(p.open.len());
        for id in &p.open {
            w.u32(*id);
        }
        w.len(p.states);
        w.len(p.bytes);
        let dfa = p.matcher.to_bytes();
        w.len(dfa.len());
        w.0.extend_from_slice(&dfa);
    }
    w.0
}

/// Why bytes are not a valid artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    pub offset: usize,
    pub what: String,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid artifact at byte {}: {}", self.offset, self.what)
    }
}

impl std::error::Error for DecodeError {}

struct R<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> R<'a> {
    fn fail<T>(&self, what: impl Into<String>) -> Result<T, DecodeError> {
        Err(DecodeError {
            offset: self.at,
            what: what.into(),
        })
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        match self.b.get(self.at..self.at.saturating_add(n)) {
            Some(s) if self.at.checked_add(n).is_some() => {
                self.at += n;
                Ok(s)
            }
            _ => self.fail(format!("truncated: wanted {n} more bytes")),
        }
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        let s = self.take(2)?;
        Ok(u16::from_le_bytes([s[0], s[1]]))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        let s = self.take(4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    /// A count, bounded by the bytes left (each item takes at least `min` bytes).
    fn count(&mut self, min: usize) -> Result<usize, DecodeError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min) > self.b.len() - self.at {
            return self.fail(format!("count {n} exceeds the remaining data"));
        }
        Ok(n)
    }
    fn str(&mut self) -> Result<String, DecodeError> {
        let n = self.count(1)?;
        let s = self.take(n)?;
        String::from_utf8(s.to_vec()).or_else(|_| self.fail("string is not UTF-8"))
    }
    fn ip(&mut self) -> Result<IpAddr, DecodeError> {
        let fam = self.u8()?;
        let raw = self.take(16)?;
        match fam {
            4 => Ok(IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]))),
            6 => {
                let mut a = [0u8; 16];
                a.copy_from_slice(raw);
                Ok(IpAddr::V6(Ipv6Addr::from(a)))
            }
            f => self.fail(format!("unknown address family {f}")),
        }
    }
}

fn parse_label(s: &str) -> Label {
    let (source, rest) = s.split_once(':').unwrap_or(("", s));
    let (key, value) = rest.split_once('=').unwrap_or((rest, ""));
    Label::new(source, key, value)
}

/// Decodes and checks an artifact: lengths, the version, and that every map
/// and origin index points at something.
pub fn decode(bytes: &[u8]) -> Result<Compiled, DecodeError> {
    let mut r = R { b: bytes, at: 0 };
    if r.take(8)? != MAGIC {
        return r.fail("not a sluice artifact (bad magic)");
    }
    let v = r.u32()?;
    if v != VERSION {
        return r.fail(format!("format version {v}, this build reads {VERSION}"));
    }
    let mut c = Compiled::default();
    for _ in 0..r.count(9)? {
        let id = r.u32()?;
        let kind = r.u8()?;
        let detail = r.str()?;
        let n = r.count(4)?;
        let labels = (0..n)
            .map(|_| r.str().map(|s| parse_label(&s)))
            .collect::<Result<Vec<_>, _>>()?;
        let kind = match kind {
            0 => IdKind::Reserved,
            1 => IdKind::Endpoint,
            2 => IdKind::Cidr { prefix: detail },
            3 => IdKind::Node { node: detail },
            k => return r.fail(format!("unknown identity kind {k}")),
        };
        c.identities.push(IdentityInfo {
            id,
            labels: LabelSet::from_labels(labels),
            kind,
        });
    }
    for _ in 0..r.count(26)? {
        let addr = r.ip()?;
        let prefix_len = r.u8()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix_len > max {
            return r.fail(format!("prefix length {prefix_len} over {max}"));
        }
        let identity = r.u32()?;
        let node = r.str()?;
        let cidr = Cidr {
            addr,
            prefix_len,
            bare: false,
        };
        c.ipcache.push(IpcacheEntry {
            prefix: cidr.to_string(),
            cidr,
            identity,
            node: (!node.is_empty()).then_some(node),
        });
    }
    let nmaps = r.count(4)?;
    for _ in 0..nmaps {
        let mut m = PolicyMap::default();
        for _ in 0..r.count(16)? {
            let identity = r.u32()?;
            let egress = r.u8()? != 0;
            let proto = r.u8()?;
            let dport = r.u16()?;
            let plen = r.u8()?;
            if plen > 24 {
                return r.fail(format!("prefix length {plen} over 24"));
            }
            let flags = r.u8()?;
            let precedence = r.u32()?;
            let k = r.u16()? as usize;
            let origins = (0..k).map(|_| r.u32()).collect::<Result<Vec<_>, _>>()?;
            m.insert(
                Key::new(identity, egress, proto, dport, plen),
                Entry {
                    deny: flags & 1 != 0,
                    redirect: flags & 2 != 0,
                    auth: flags & 4 != 0,
                    precedence,
                    origins: origins.into(),
                },
            );
        }
        c.maps.push(m);
    }
    for _ in 0..r.count(23)? {
        let name = r.str()?;
        let identity = r.u32()?;
        let node = r.str()?;
        let k = r.u8()?;
        let ips = (0..k).map(|_| r.ip()).collect::<Result<Vec<_>, _>>()?;
        let map = r.u32()? as usize;
        if map >= nmaps {
            return r.fail(format!("endpoint `{name}` refers to map {map} of {nmaps}"));
        }
        let enforced = r.u8()?;
        let host = r.u8()? != 0;
        let k = r.u16()? as usize;
        let selected_by = (0..k).map(|_| r.u32()).collect::<Result<Vec<_>, _>>()?;
        let audit_map = match r.u32()? {
            u32::MAX => None,
            m if (m as usize) < nmaps => Some(m as usize),
            m => {
                return r.fail(format!(
                    "endpoint `{name}` refers to audit map {m} of {nmaps}"
                ))
            }
        };
        let k = r.u16()? as usize;
        let audit_by = (0..k).map(|_| r.u32()).collect::<Result<Vec<_>, _>>()?;
        c.endpoints.push(Endpoint {
            name,
            identity,
            node: (!node.is_empty()).then_some(node),
            ips,
            map,
            enforced: [enforced & 1 != 0, enforced & 2 != 0],
            host,
            selected_by,
            audit_map,
            audit_by,
        });
    }
    for _ in 0..r.count(20)? {
        c.origins.push(Origin {
            policy: r.str()?,
            path: r.str()?,
            file: r.str()?,
            line: r.u32()?,
            col: r.u32()?,
        });
    }
    for _ in 0..r.count(23)? {
        let map = r.u32()? as usize;
        if map >= nmaps {
            return r.fail(format!("an L7 port refers to map {map} of {nmaps}"));
        }
        let egress = r.u8()? != 0;
        let proto = r.u8()?;
        let dport = r.u16()?;
        let plen = r.u8()?;
        let kind = match r.u8()? {
            0 => crate::l7::L7Kind::Http,
            1 => crate::l7::L7Kind::Kafka,
            2 => crate::l7::L7Kind::Dns,
            k => return r.fail(format!("unknown L7 protocol {k}")),
        };
        let mut rules = Vec::new();
        for _ in 0..r.count(16)? {
            let origin = r.u32()?;
            let n = r.count(4)?;
            let identities = (0..n).map(|_| r.u32()).collect::<Result<Vec<_>, _>>()?;
            let text = r.str()?;
            let mut headers = Vec::new();
            for _ in 0..r.count(9)? {
                let name = r.str()?;
                let has = r.u8()? != 0;
                let value = r.str()?;
                headers.push(crate::l7::HeaderCheck {
                    name,
                    value: has.then_some(value),
                });
            }
            rules.push(crate::l7::L7Rule {
                origin,
                identities,
                text,
                headers,
            });
        }
        let n = r.count(4)?;
        let open = (0..n).map(|_| r.u32()).collect::<Result<Vec<_>, _>>()?;
        let states = r.u32()? as usize;
        let size = r.u32()? as usize;
        let n = r.count(1)?;
        let at = r.at;
        let matcher = crate::l7::Matcher::from_bytes(r.take(n)?).map_err(|e| DecodeError {
            offset: at,
            what: e,
        })?;
        // Every pattern must name a rule and the fields fit the protocol:
        // a mismatched automaton is refused, not trusted.
        if matcher.patterns() != rules.len() || matcher.fields() != kind.fields() {
            return r.fail(format!(
                "an L7 automaton has {} patterns of {} fields for {} rules of {} fields",
                matcher.patterns(),
                matcher.fields(),
                rules.len(),
                kind.fields()
            ));
        }
        c.maps[map].l7.push(crate::l7::L7Port {
            egress,
            proto,
            dport,
            plen,
            kind,
            rules,
            open,
            matcher: std::sync::Arc::new(matcher),
            states,
            bytes: size,
        });
    }
    if r.at != bytes.len() {
        return r.fail("trailing bytes after the last section");
    }
    c.identities.sort_by_key(|i| i.id);
    c.index();
    Ok(c)
}

/// The JSON view: `schemaVersion`, identities, ipcache, and each
/// endpoint's entries as rows.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JsonArtifact<'a> {
    pub schema_version: u32,
    pub identities: &'a [IdentityInfo],
    pub ipcache: &'a [IpcacheEntry],
    pub endpoints: Vec<JsonEndpoint<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JsonEndpoint<'a> {
    pub name: &'a str,
    pub identity: u32,
    pub selected_by: Vec<String>,
    pub ingress_enforced: bool,
    pub egress_enforced: bool,
    pub entries: Vec<JsonEntry>,
    /// With policies in audit mode: the entries the endpoint would have
    /// with them enforced; what these deny and `entries` allow is AUDIT.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit_entries: Option<Vec<JsonEntry>>,
    /// The L7 policy of each redirected port: its rules and automaton.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub l7: Vec<JsonL7>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JsonL7 {
    pub direction: &'static str,
    pub port: String,
    pub protocol: crate::l7::L7Kind,
    pub rules: Vec<JsonL7Rule>,
    /// Identities an L4-only allow admits on this port (every request).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub open_to: Vec<u32>,
    pub dfa_states: usize,
    pub dfa_bytes: usize,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JsonL7Rule {
    pub rule: String,
    pub identities: Vec<u32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<String>,
    pub derived_from: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JsonEntry {
    pub policy: &'static str,
    pub direction: &'static str,
    pub identity: u32,
    pub port: String,
    pub prefix: u8,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub redirect: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub auth: bool,
    /// How allows rank among themselves; absent for a deny, which beats
    /// every allow (the map holds it as `u32::MAX`, not a number to show).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub precedence: Option<u32>,
    pub derived_from: Vec<String>,
}

fn json_entries(c: &Compiled, map: usize) -> Vec<JsonEntry> {
    c.maps[map]
        .entries
        .iter()
        .map(|(k, v)| json_entry(c, k, v))
        .collect()
}

/// One policy-map entry as the JSON documents show it: the port as text,
/// the full prefix length, and each origin by name (never a sentinel).
pub fn json_entry(c: &Compiled, k: &Key, v: &Entry) -> JsonEntry {
    JsonEntry {
        policy: if v.deny { "deny" } else { "allow" },
        direction: if k.egress { "egress" } else { "ingress" },
        identity: k.identity,
        port: k.port_text(),
        prefix: 40 + k.plen,
        redirect: v.redirect,
        auth: v.auth,
        precedence: (!v.deny).then_some(v.precedence),
        derived_from: v
            .origins
            .iter()
            .map(|&o| match o {
                u32::MAX => "default-allow".to_owned(),
                o if o == u32::MAX - 1 => "allow-localhost".to_owned(),
                o => c
                    .origins
                    .get(o as usize)
                    .map_or_else(|| format!("rule #{o}"), |x| x.to_string()),
            })
            .collect(),
    }
}

pub fn to_json(c: &Compiled) -> JsonArtifact<'_> {
    JsonArtifact {
        schema_version: JSON_VERSION,
        identities: &c.identities,
        ipcache: &c.ipcache,
        endpoints: c
            .endpoints
            .iter()
            .map(|e| JsonEndpoint {
                name: &e.name,
                identity: e.identity,
                selected_by: e
                    .selected_by
                    .iter()
                    .filter_map(|&o| c.origins.get(o as usize).map(|x| x.to_string()))
                    .collect(),
                ingress_enforced: e.enforced[0],
                egress_enforced: e.enforced[1],
                entries: json_entries(c, e.map),
                audit_entries: e.audit_map.map(|m| json_entries(c, m)),
                l7: c.maps[e.map]
                    .l7
                    .iter()
                    .map(|p| JsonL7 {
                        direction: if p.egress { "egress" } else { "ingress" },
                        port: crate::mapstate::Key::new(0, p.egress, p.proto, p.dport, p.plen)
                            .port_text(),
                        protocol: p.kind,
                        rules: p
                            .rules
                            .iter()
                            .map(|r| JsonL7Rule {
                                rule: r.text.clone(),
                                identities: r.identities.clone(),
                                headers: r
                                    .headers
                                    .iter()
                                    .map(|h| match &h.value {
                                        Some(v) => format!("{}: {v}", h.name),
                                        None => h.name.clone(),
                                    })
                                    .collect(),
                                derived_from: c
                                    .origins
                                    .get(r.origin as usize)
                                    .map_or_else(|| r.origin.to_string(), |x| x.to_string()),
                            })
                            .collect(),
                        open_to: p.open.clone(),
                        dfa_states: p.states,
                        dfa_bytes: p.bytes,
                    })
                    .collect(),
            })
            .collect(),
    }
}
