//! Verdict events as the agent and `sluice observe` hand them out; the
//! map layouts themselves are the `abi` crate's (re-exported here).

pub use abi::*;

/// A verdict event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// When the packet was judged, to a kernel tick (see `struct
    /// sl_event`); what Hubble calls a flow's time.
    pub time: std::time::SystemTime,
    pub saddr: std::net::IpAddr,
    pub daddr: std::net::IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub egress: u8,
    /// 0 forwarded (a new connection), 1 dropped, 2 redirected to the proxy.
    pub verdict: u8,
    /// `SL_STAT_*`.
    pub reason: u8,
    pub endpoint: u32,
    pub remote_identity: u32,
}

impl Event {
    /// The event a slot holds, stamped with `time`; `None` for a slot that
    /// is not an IPv4 or IPv6 record.
    pub fn from_raw(r: &RawEvent, time: std::time::SystemTime) -> Option<Event> {
        use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
        let (saddr, daddr) = match r.family {
            4 => {
                let v4 = |a: &[u8; 16]| IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]));
                (v4(&r.saddr), v4(&r.daddr))
            }
            6 => (
                IpAddr::V6(Ipv6Addr::from(r.saddr)),
                IpAddr::V6(Ipv6Addr::from(r.daddr)),
            ),
            _ => return None,
        };
        Some(Event {
            time,
            saddr,
            daddr,
            sport: u16::from_be_bytes(r.sport),
            dport: u16::from_be_bytes(r.dport),
            proto: r.proto,
            egress: r.egress,
            verdict: r.verdict,
            reason: r.reason,
            endpoint: r.endpoint,
            remote_identity: r.remote_identity,
        })
    }
}
