//! The datapath's binary interface: the map keys and values, events and
//! constants of `bpf/sluice.h`, as Rust sees them. Defined once, here:
//! the compiler encodes its policy-map entries into these structs, the
//! agent writes them into the kernel's maps and reads events back, and
//! `tests::layouts_match_the_c_header` checks every size, offset and
//! constant against the header, so the C and Rust sides cannot drift
//! apart silently.
//!
//! ipcache keys are aya's `lpm_trie::Key<[u8; 4]>` / `Key<[u8; 16]>`
//! (a 32-bit prefix length, then the address), the layout of
//! `struct sl_ipcache_key` / `struct sl_ipcache6_key`.
//!
//! No dependencies (aya only with the `aya` feature, which the agent
//! enables): the compiler and simulator build without the kernel-facing
//! crates.

/// `SL_LAYOUT_VERSION`: bumped whenever a map's layout changes; pins live
/// under a directory named after it.
pub const LAYOUT_VERSION: u32 = 6;

/// `SL_EP_DIRECT`: endpoint keys below it live in the array map.
pub const EP_DIRECT: u32 = 65536;

/// The identity of a prefix in each of the two states an update spans
/// (`struct sl_ipcache_value`); 0: not in that state.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IpcacheValue {
    pub identity: [u32; 2],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PolicyKey {
    pub map_id: u32,
    pub identity: u32,
    pub egress: u8,
    /// Masked to `plen` bits, with `dport`.
    pub proto: u8,
    /// Network byte order, masked.
    pub dport: [u8; 2],
    pub plen: u8,
    pub pad: [u8; 3],
}

pub const FLAG_DENY: u8 = 1;
pub const FLAG_REDIRECT: u8 = 2;
pub const FLAG_AUTH: u8 = 4;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PolicyValue {
    pub precedence: u32,
    pub flags: u8,
    pub plen: u8,
    pub pad: u16,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndpointInfo {
    pub map_id: u32,
    pub identity: u32,
    pub enforced_ingress: u8,
    pub enforced_egress: u8,
    /// Index of the endpoint's counters.
    pub slot: u16,
    /// Bit p set: the endpoint's map has entries for a specific peer
    /// identity of prefix length p.
    pub plens: u32,
    /// The same for wildcard-identity entries.
    pub plens_any: u32,
    /// Policy entries in the endpoint's map (for metrics).
    pub entries: u32,
    /// With policies in audit mode: the map with them enforced (0: none).
    /// What `map_id` allows and this denies passes as AUDIT.
    pub audit_map_id: u32,
    pub audit_plens: u32,
    pub audit_plens_any: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    pub test_mode: u32,
    pub allow_localhost: u32,
    /// Bumped by every applied state.
    pub generation: u32,
    /// The ipcache trie has entries.
    pub has_lpm: u32,
    /// Updates applied and refused, for metrics.
    pub updates: u32,
    pub update_errors: u32,
    /// The identity of addresses no prefix matches, per ipcache slot.
    pub world: [u32; 2],
    /// Ports of the agent's L7 proxy sockets on 127.0.0.1 (0: none, and
    /// traffic to be proxied is dropped).
    pub proxy_port_tcp: u16,
    pub proxy_port_udp: u16,
    /// IPv6's `has_lpm` and `world`.
    pub has_lpm6: u32,
    pub world6: [u32; 2],
}

/// Counters per endpoint (`SL_STAT_*`): forwarded, dropped for lack of an
/// allow, dropped by a deny, replies of tracked connections, handed to the
/// L7 proxy, dropped for want of a proxy socket, passed in audit mode.
pub const STAT_MAX: usize = 7;
/// `SL_STAT_AUDIT`: allowed, but a policy in audit mode would drop it.
pub const STAT_AUDIT: usize = 6;
/// Event verdicts (`sl_event.verdict`).
pub const VERDICT_FORWARDED: u8 = 0;
pub const VERDICT_DROPPED: u8 = 1;
pub const VERDICT_REDIRECTED: u8 = 2;
pub const VERDICT_AUDIT: u8 = 3;

/// Packet marks shared with the programs and the routing rule (`SL_MARK_*`).
pub const MARK_MASK: u32 = 0xf000_0000;
pub const MARK_TO_PROXY: u32 = 0xa000_0000;
pub const MARK_FROM_PROXY: u32 = 0xb000_0000;
pub const MARK_ID_MASK: u32 = 0x0fff_ffff;

/// A verdict event as the programs write it (`struct sl_event`): one
/// 64-byte slot of a per-CPU ring.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RawEvent {
    /// IPv4: the first four bytes.
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    /// Network byte order.
    pub sport: [u8; 2],
    pub dport: [u8; 2],
    pub proto: u8,
    pub egress: u8,
    pub verdict: u8,
    pub reason: u8,
    pub endpoint: u32,
    pub remote_identity: u32,
    /// The kernel's tick count (low 32 bits) when the packet was judged.
    pub jiffies: u32,
    /// 4 or 6.
    pub family: u8,
    pub pad: [u8; 11],
}

/// How ticks map to wall-clock time (`struct sl_clock`): at tick
/// `jiffies` it was `wall_ns` since the Unix epoch, with `hz` ticks per
/// second (0: not measured yet).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClockValue {
    pub wall_ns: u64,
    pub jiffies: u32,
    pub hz: u32,
}

/// Slots per CPU ring (`SL_RING_SLOTS`).
pub const RING_SLOTS: usize = 8192;

/// One CPU's ring (`struct sl_ring`): the header, then the slots.
#[repr(C)]
pub struct RingHeader {
    pub head: u64,
    pub lost: u64,
    pub busy: u32,
    pub pad0: u32,
    pub pad1: [u64; 5],
    pub tail: u64,
    pub pad2: [u64; 7],
}

/// Bytes of one CPU's ring, the value size of `SL_EVENTS`.
pub const RING_SIZE: usize =
    std::mem::size_of::<RingHeader>() + RING_SLOTS * std::mem::size_of::<RawEvent>();

#[cfg(feature = "aya")]
mod pod {
    // The Pod impls promise aya that every bit pattern of these plain-data
    // structs is valid and that they have no padding the kernel could
    // leak: true for the fixed-width integer fields above.
    #![allow(unsafe_code)]
    use super::*;
    unsafe impl aya::Pod for IpcacheValue {}
    unsafe impl aya::Pod for PolicyKey {}
    unsafe impl aya::Pod for PolicyValue {}
    unsafe impl aya::Pod for EndpointInfo {}
    unsafe impl aya::Pod for Config {}
    unsafe impl aya::Pod for ClockValue {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    /// Finds `name` in the header's struct `s` and returns the C type that
    /// precedes it, so the test fails if a field is renamed or retyped.
    fn c_field(header: &str, s: &str, name: &str) -> String {
        let start = header
            .find(&format!("struct {s} {{"))
            .unwrap_or_else(|| panic!("struct {s} in sluice.h"));
        let body = &header[start..start + header[start..].find("};").expect("end of struct")];
        body.lines()
            .map(|l| l.split("/*").next().unwrap_or("").trim())
            .find(|l| {
                l.trim_end_matches(';')
                    .split_whitespace()
                    .last()
                    .is_some_and(|n| {
                        n.starts_with(name) && (n == name || n[name.len()..].starts_with('['))
                    })
            })
            .unwrap_or_else(|| panic!("field {name} in struct {s}"))
            .to_owned()
    }

    #[test]
    fn layouts_match_the_c_header() {
        let header = include_str!("../../bpf/sluice.h");
        // (C struct, C field, expected C declaration, Rust size, Rust offset)
        assert_eq!(size_of::<PolicyKey>(), 16);
        assert_eq!(offset_of!(PolicyKey, identity), 4);
        assert_eq!(offset_of!(PolicyKey, egress), 8);
        assert_eq!(offset_of!(PolicyKey, proto), 9);
        assert_eq!(offset_of!(PolicyKey, dport), 10);
        assert_eq!(offset_of!(PolicyKey, plen), 12);
        for (f, decl) in [
            ("plen", "__u8 plen;"),
            ("map_id", "__u32 map_id;"),
            ("identity", "__u32 identity;"),
            ("egress", "__u8 egress;"),
            ("proto", "__u8 proto;"),
            ("dport", "__be16 dport;"),
        ] {
            assert_eq!(c_field(header, "sl_policy_key", f), decl);
        }
        assert_eq!(size_of::<PolicyValue>(), 8);
        for (f, decl) in [
            ("precedence", "__u32 precedence;"),
            ("flags", "__u8 flags;"),
            ("plen", "__u8 plen;"),
            ("pad", "__u16 pad;"),
        ] {
            assert_eq!(c_field(header, "sl_policy_value", f), decl);
        }
        assert_eq!(offset_of!(EndpointInfo, enforced_ingress), 8);
        assert_eq!(offset_of!(EndpointInfo, slot), 10);
        assert_eq!(offset_of!(EndpointInfo, plens), 12);
        assert_eq!(offset_of!(EndpointInfo, plens_any), 16);
        assert_eq!(offset_of!(EndpointInfo, entries), 20);
        for (f, decl) in [
            ("map_id", "__u32 map_id;"),
            ("identity", "__u32 identity;"),
            ("enforced_ingress", "__u8 enforced_ingress;"),
            ("enforced_egress", "__u8 enforced_egress;"),
            ("slot", "__u16 slot;"),
            ("plens", "__u32 plens;"),
            ("plens_any", "__u32 plens_any;"),
            ("entries", "__u32 entries;"),
            ("audit_map_id", "__u32 audit_map_id;"),
            ("audit_plens", "__u32 audit_plens;"),
            ("audit_plens_any", "__u32 audit_plens_any;"),
        ] {
            assert_eq!(c_field(header, "sl_endpoint", f), decl);
        }
        assert_eq!(size_of::<EndpointInfo>(), 36);
        assert_eq!(offset_of!(EndpointInfo, audit_map_id), 24);
        assert!(header.contains(&format!("SL_STAT_AUDIT = {STAT_AUDIT},")));
        for (name, v) in [
            ("SL_VERDICT_FORWARDED", VERDICT_FORWARDED),
            ("SL_VERDICT_DROPPED", VERDICT_DROPPED),
            ("SL_VERDICT_REDIRECTED", VERDICT_REDIRECTED),
            ("SL_VERDICT_AUDIT", VERDICT_AUDIT),
        ] {
            assert!(header.contains(&format!("#define {name} {v}")), "{name}");
        }
        assert_eq!(size_of::<Config>(), 48);
        assert_eq!(offset_of!(Config, has_lpm6), 36);
        assert_eq!(offset_of!(Config, world6), 40);
        assert_eq!(c_field(header, "sl_config", "has_lpm6"), "__u32 has_lpm6;");
        assert_eq!(c_field(header, "sl_config", "world6"), "__u32 world6[2];");
        assert_eq!(c_field(header, "sl_ipcache6_key", "addr"), "__u8 addr[16];");
        assert_eq!(offset_of!(Config, world), 24);
        assert_eq!(offset_of!(Config, proxy_port_tcp), 32);
        assert_eq!(offset_of!(Config, proxy_port_udp), 34);
        assert_eq!(c_field(header, "sl_config", "world"), "__u32 world[2];");
        for f in ["proxy_port_tcp", "proxy_port_udp"] {
            assert_eq!(c_field(header, "sl_config", f), format!("__u16 {f};"));
        }
        assert!(header.contains(&format!("SL_STAT_MAX = {STAT_MAX},")));
        for (name, value) in [
            ("SL_MARK_MASK", MARK_MASK),
            ("SL_MARK_TO_PROXY", MARK_TO_PROXY),
            ("SL_MARK_FROM_PROXY", MARK_FROM_PROXY),
            ("SL_MARK_ID_MASK", MARK_ID_MASK),
        ] {
            assert!(
                header.contains(&format!("#define {name} {value:#010x}u")),
                "{name}"
            );
        }
        for (i, f) in [
            "test_mode",
            "allow_localhost",
            "generation",
            "has_lpm",
            "updates",
            "update_errors",
        ]
        .into_iter()
        .enumerate()
        {
            assert_eq!(c_field(header, "sl_config", f), format!("__u32 {f};"));
            // Config is six u32s in this order.
            assert_eq!(
                [
                    offset_of!(Config, test_mode),
                    offset_of!(Config, allow_localhost),
                    offset_of!(Config, generation),
                    offset_of!(Config, has_lpm),
                    offset_of!(Config, updates),
                    offset_of!(Config, update_errors)
                ][i],
                4 * i
            );
        }
        assert_eq!(size_of::<IpcacheValue>(), 8);
        assert_eq!(
            c_field(header, "sl_ipcache_value", "identity"),
            "__u32 identity[2];"
        );
        assert!(header.contains(&format!("#define SL_LAYOUT_VERSION {}", LAYOUT_VERSION)));
        assert!(header.contains(&format!("#define SL_EP_DIRECT {}", EP_DIRECT)));
        assert_eq!(size_of::<RawEvent>(), 64);
        for (f, decl) in [
            ("saddr", "__u8 saddr[16];"),
            ("daddr", "__u8 daddr[16];"),
            ("sport", "__be16 sport;"),
            ("dport", "__be16 dport;"),
            ("proto", "__u8 proto;"),
            ("egress", "__u8 egress;"),
            ("verdict", "__u8 verdict;"),
            ("reason", "__u8 reason;"),
            ("endpoint", "__u32 endpoint;"),
            ("remote_identity", "__u32 remote_identity;"),
            ("jiffies", "__u32 jiffies;"),
            ("family", "__u8 family;"),
            ("pad", "__u8 pad[11];"),
        ] {
            assert_eq!(c_field(header, "sl_event", f), decl);
        }
        assert_eq!(offset_of!(RawEvent, sport), 32);
        assert_eq!(offset_of!(RawEvent, proto), 36);
        assert_eq!(offset_of!(RawEvent, endpoint), 40);
        assert_eq!(offset_of!(RawEvent, remote_identity), 44);
        assert_eq!(offset_of!(RawEvent, jiffies), 48);
        assert_eq!(offset_of!(RawEvent, family), 52);
        assert_eq!(size_of::<ClockValue>(), 16);
        assert_eq!(offset_of!(ClockValue, jiffies), 8);
        assert_eq!(offset_of!(ClockValue, hz), 12);
        for (f, decl) in [
            ("wall_ns", "__u64 wall_ns;"),
            ("jiffies", "__u32 jiffies;"),
            ("hz", "__u32 hz;"),
        ] {
            assert_eq!(c_field(header, "sl_clock", f), decl);
        }
        assert!(header.contains(&format!("#define SL_RING_SLOTS {RING_SLOTS}")));
        assert_eq!(size_of::<RingHeader>(), 128);
        assert_eq!(offset_of!(RingHeader, lost), 8);
        assert_eq!(offset_of!(RingHeader, busy), 16);
        assert_eq!(offset_of!(RingHeader, tail), 64);
        for (f, decl) in [
            ("head", "__u64 head;"),
            ("lost", "__u64 lost;"),
            ("busy", "__u32 busy;"),
            ("tail", "__u64 tail;"),
            ("rec", "struct sl_event rec[SL_RING_SLOTS];"),
        ] {
            assert_eq!(c_field(header, "sl_ring", f), decl);
        }
        assert!(
            header.contains("#define SL_FLAG_DENY 1")
                && header.contains("#define SL_FLAG_REDIRECT 2")
        );
    }
}
