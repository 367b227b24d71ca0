//! Crafting test packets: Ethernet + IPv4 or IPv6 + TCP/UDP/SCTP/ICMP
//! headers.

use std::net::{Ipv4Addr, Ipv6Addr};

/// An Ethernet frame carrying an IPv4 packet from `src` to `dst`. For ICMP,
/// `dport` is the ICMP type. Checksums are left zero: the programs do not
/// check them.
pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, sport: u16, dport: u16) -> Vec<u8> {
    let mut p = ipv4_any(src, dst, proto, sport, dport);
    if proto == 6 {
        p[TCP_FLAGS] = 0x02; // SYN: the first packet of a connection
    }
    p
}

/// Offset of the TCP flags byte in a frame from [`ipv4`].
const TCP_FLAGS: usize = 14 + 20 + 13;

/// A TCP segment with the given flags (0x10 ACK: a packet of an
/// established connection; 0x12 SYN+ACK).
pub fn tcp(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut p = ipv4_any(src, dst, 6, sport, dport);
    p[TCP_FLAGS] = flags;
    p
}

/// An Ethernet frame carrying an IPv6 packet (a TCP SYN for TCP); for
/// ICMPv6 (58), `dport` is the type.
pub fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, proto: u8, sport: u16, dport: u16) -> Vec<u8> {
    let mut l4 = l4_header(proto, sport, dport);
    if proto == 6 {
        l4[13] = 0x02;
    }
    let mut p = Vec::with_capacity(54 + l4.len());
    p.extend_from_slice(&[0x02, 0, 0, 0, 0, 2]);
    p.extend_from_slice(&[0x02, 0, 0, 0, 0, 1]);
    p.extend_from_slice(&0x86ddu16.to_be_bytes());
    p.extend_from_slice(&[0x60, 0, 0, 0]); // version, traffic class, flow label
    p.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    p.extend_from_slice(&[proto, 64]); // next header, hop limit
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&l4);
    p
}

fn l4_header(proto: u8, sport: u16, dport: u16) -> Vec<u8> {
    match proto {
        6 => {
            let mut t = vec![0u8; 20];
            t[0..2].copy_from_slice(&sport.to_be_bytes());
            t[2..4].copy_from_slice(&dport.to_be_bytes());
            t[12] = 5 << 4; // data offset
            t
        }
        17 => {
            let mut u = vec![0u8; 8];
            u[0..2].copy_from_slice(&sport.to_be_bytes());
            u[2..4].copy_from_slice(&dport.to_be_bytes());
            u[4..6].copy_from_slice(&8u16.to_be_bytes());
            u
        }
        132 => {
            let mut s = vec![0u8; 12];
            s[0..2].copy_from_slice(&sport.to_be_bytes());
            s[2..4].copy_from_slice(&dport.to_be_bytes());
            s
        }
        1 | 58 => {
            let mut i = vec![0u8; 8];
            i[0] = dport as u8;
            i
        }
        _ => Vec::new(),
    }
}

fn ipv4_any(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, sport: u16, dport: u16) -> Vec<u8> {
    let l4 = l4_header(proto, sport, dport);
    let mut p = Vec::with_capacity(34 + l4.len());
    p.extend_from_slice(&[0x02, 0, 0, 0, 0, 2]); // destination MAC
    p.extend_from_slice(&[0x02, 0, 0, 0, 0, 1]); // source MAC
    p.extend_from_slice(&0x0800u16.to_be_bytes());
    let total = 20 + l4.len() as u16;
    p.extend_from_slice(&[0x45, 0]);
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0x40, 0]); // id, flags: don't fragment
    p.extend_from_slice(&[64, proto, 0, 0]); // ttl, protocol, checksum
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&l4);
    p
}
