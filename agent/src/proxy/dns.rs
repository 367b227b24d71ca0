//! DNS through the proxy, over UDP and TCP: each query is judged by its
//! name; a denied one
//! gets REFUSED, a malformed one FORMERR (or nothing, when not even its
//! header can be read), an allowed one is forwarded to the server the
//! client asked, and the addresses in the answer are learned for toFQDNs
//! before the answer is released to the client.

use super::{decide, Shared};
use compiler::l7::{L7Kind, Request};
use socket2::{Domain, Protocol, Socket, Type};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
const RCODE_FORMERR: u8 = 1;
const RCODE_SERVFAIL: u8 = 2;
const RCODE_NOTIMP: u8 = 4;
const RCODE_REFUSED: u8 = 5;

/// The proxy's DNS sockets on 127.0.0.1 and (where the host has IPv6) ::1,
/// on one port.
pub(super) fn listen() -> io::Result<(UdpSocket, Option<UdpSocket>)> {
    super::same_port(|at| {
        let s = Socket::new(Domain::for_address(at), Type::DGRAM, Some(Protocol::UDP))?;
        super::transparent(&s, at)?;
        // Datagrams keep their original destination (the DNS server the
        // client asked); this option reports it with each one.
        let (level, name) = if at.is_ipv6() {
            (libc::SOL_IPV6, libc::IPV6_RECVORIGDSTADDR)
        } else {
            (libc::SOL_IP, libc::IP_RECVORIGDSTADDR)
        };
        let one: libc::c_int = 1;
        // SAFETY: a valid socket and a pointer to an int of the given size.
        let r = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                level,
                name,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        s.bind(&at.into())?;
        Ok(s.into())
    })
}

/// A socket address as the kernel wrote it (IPv4 or IPv6).
///
/// # Safety
/// `p` points to a `sockaddr_in` (family AF_INET), a `sockaddr_in6`
/// (AF_INET6), or at least a family field of another value.
unsafe fn socket_addr(p: *const u8) -> Option<SocketAddr> {
    // SAFETY: as the caller promises; unaligned reads copy the structs out.
    unsafe {
        let family = std::ptr::read_unaligned(p.cast::<libc::sa_family_t>());
        match i32::from(family) {
            libc::AF_INET => {
                let a: libc::sockaddr_in = std::ptr::read_unaligned(p.cast());
                Some(SocketAddr::from((
                    Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                    u16::from_be(a.sin_port),
                )))
            }
            libc::AF_INET6 => {
                let a: libc::sockaddr_in6 = std::ptr::read_unaligned(p.cast());
                Some(SocketAddr::from((
                    Ipv6Addr::from(a.sin6_addr.s6_addr),
                    u16::from_be(a.sin6_port),
                )))
            }
            _ => None,
        }
    }
}

/// One datagram with its sender and original destination.
fn receive(
    sock: &UdpSocket,
    buf: &mut [u8],
) -> io::Result<(usize, SocketAddr, Option<SocketAddr>)> {
    // SAFETY: every pointer handed to recvmsg points into a live local of
    // the size given; control messages are read only within msg_controllen
    // through the CMSG_* accessors, and addresses are copied out by
    // `socket_addr` from buffers the kernel filled for their family.
    unsafe {
        let mut src: libc::sockaddr_storage = std::mem::zeroed();
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let mut control = [0u64; 16];
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_name = (&mut src as *mut libc::sockaddr_storage).cast();
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control);
        let n = libc::recvmsg(sock.as_raw_fd(), &mut msg, 0);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let from = socket_addr((&src as *const libc::sockaddr_storage).cast())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "sender address"))?;
        let mut orig = None;
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            let (level, kind) = ((*c).cmsg_level, (*c).cmsg_type);
            if (level == libc::SOL_IP && kind == libc::IP_ORIGDSTADDR)
                || (level == libc::SOL_IPV6 && kind == libc::IPV6_ORIGDSTADDR)
            {
                orig = socket_addr(libc::CMSG_DATA(c));
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
        // A datagram cut short by the buffer is not judged on a prefix.
        let n = if msg.msg_flags & libc::MSG_TRUNC != 0 {
            0
        } else {
            n as usize
        };
        Ok((n, from, orig))
    }
}

pub(super) fn serve(sock: UdpSocket, shared: Arc<Shared>) {
    let mut buf = vec![0u8; 65536];
    loop {
        let Ok((n, src, orig)) = receive(&sock, &mut buf) else {
            continue;
        };
        let Some(dst) = orig else { continue };
        let Some(slot) = shared.enter() else { continue };
        let packet = buf[..n].to_vec();
        let s = shared.clone();
        let _ = std::thread::Builder::new()
            .name("proxy-dns".into())
            .spawn(move || {
                let _slot = slot;
                query(&s, &packet, src, dst);
            });
    }
}

/// What to do with one query.
enum Step {
    /// Answer the client with this (REFUSED, FORMERR).
    Answer(Vec<u8>),
    /// Drop it without an answer.
    Ignore,
    /// Ask the server, as the client (mark), and learn from the answer.
    Forward { q: Query, mark: u32, line: String },
}

/// Judges one query from `src` to the server `dst` (over `protocol`).
fn judge(shared: &Shared, packet: &[u8], src: SocketAddr, dst: SocketAddr, protocol: u8) -> Step {
    let q = match parse_query(packet) {
        Ok(q) => q,
        Err(reply) => {
            shared.judged(L7Kind::Dns, false);
            shared.log(format!("denied   DNS {src} → {dst}: malformed query"));
            return reply.map_or(Step::Ignore, Step::Answer);
        }
    };
    let line = format!("DNS {src} → {dst}: {}", q.name);
    let Some(c) = shared.state() else {
        return Step::Ignore;
    };
    let d = decide(
        &c,
        src,
        dst,
        protocol,
        Some(Request::Dns {
            query: q.name.clone(),
        }),
    );
    if !d.allowed {
        shared.judged(L7Kind::Dns, false);
        shared.log(format!("denied   {line}: {}", d.reason));
        return Step::Answer(reply(packet, &q, RCODE_REFUSED));
    }
    shared.judged(L7Kind::Dns, true);
    shared.log(format!("allowed  {line}: {}", d.reason));
    Step::Forward {
        q,
        mark: d.mark,
        line,
    }
}

/// The server's answer, after learning its addresses; SERVFAIL when there
/// was none.
fn answered(
    shared: &Shared,
    packet: &[u8],
    q: &Query,
    line: &str,
    got: io::Result<Vec<u8>>,
) -> Vec<u8> {
    match got {
        Ok(answer) => {
            let ips = answer_addresses(&answer);
            shared.log(format!("answered {line}: {ips:?}"));
            shared.learn(&q.name, &ips);
            answer
        }
        Err(e) => {
            shared.log(format!("error    {line}: {e}"));
            reply(packet, q, RCODE_SERVFAIL)
        }
    }
}

fn query(shared: &Shared, packet: &[u8], src: SocketAddr, dst: SocketAddr) {
    let out = match judge(shared, packet, src, dst, 17) {
        Step::Answer(r) => r,
        Step::Ignore => return,
        Step::Forward { q, mark, line } => {
            let got = forward(packet, q.id, dst, mark);
            answered(shared, packet, &q, &line, got)
        }
    };
    let _ = send_from(dst, src, &out);
}

/// DNS over TCP (RFC 7766): length-prefixed queries on one connection,
/// each judged like a datagram; allowed ones go to the server on one
/// connection of the proxy's own. A malformed query without a readable
/// header ends the connection.
pub(super) fn tcp(
    client: TcpStream,
    src: SocketAddr,
    dst: SocketAddr,
    shared: &Shared,
) -> io::Result<()> {
    let mut r = client.try_clone()?;
    let mut w = client;
    let mut up: Option<TcpStream> = None;
    loop {
        let Some(packet) = read_framed(&mut r)? else {
            return Ok(());
        };
        let out = match judge(shared, &packet, src, dst, 6) {
            Step::Answer(a) => a,
            Step::Ignore => return Ok(()),
            Step::Forward { q, mark, line } => {
                let got = (|| {
                    if up.is_none() {
                        up = Some(super::http::connect(dst, mark)?);
                    }
                    let u = up.as_mut().ok_or(io::ErrorKind::NotConnected)?;
                    write_framed(u, &packet)?;
                    read_framed(u)?.ok_or_else(|| io::ErrorKind::UnexpectedEof.into())
                })();
                if got.is_err() {
                    up = None;
                }
                answered(shared, &packet, &q, &line, got)
            }
        };
        write_framed(&mut w, &out)?;
    }
}

/// One length-prefixed DNS message; `None` when the peer closed between
/// messages.
fn read_framed(r: &mut impl Read) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 2];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut m = vec![0u8; usize::from(u16::from_be_bytes(len))];
    r.read_exact(&mut m)?;
    Ok(Some(m))
}

fn write_framed(w: &mut impl Write, m: &[u8]) -> io::Result<()> {
    let len = u16::try_from(m.len()).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
    w.write_all(&len.to_be_bytes())?;
    w.write_all(m)?;
    w.flush()
}

/// Sends `data` to `to` from `from`, the server the client asked, as the
/// client expects its answer from there.
fn send_from(from: SocketAddr, to: SocketAddr, data: &[u8]) -> io::Result<()> {
    let s = Socket::new(Domain::for_address(from), Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    super::transparent(&s, from)?;
    s.bind(&from.into())?;
    s.send_to(data, &to.into())?;
    Ok(())
}

/// Asks the original server, as the client (its identity in the mark).
fn forward(packet: &[u8], id: u16, dst: SocketAddr, mark: u32) -> io::Result<Vec<u8>> {
    let s = Socket::new(Domain::for_address(dst), Type::DGRAM, Some(Protocol::UDP))?;
    s.set_mark(mark)?;
    let any: IpAddr = if dst.is_ipv6() {
        Ipv6Addr::UNSPECIFIED.into()
    } else {
        Ipv4Addr::UNSPECIFIED.into()
    };
    s.bind(&SocketAddr::new(any, 0).into())?;
    let u: UdpSocket = s.into();
    u.connect(dst)?;
    u.send(packet)?;
    let deadline = Instant::now() + UPSTREAM_TIMEOUT;
    let mut buf = vec![0u8; 65536];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        u.set_read_timeout(Some(left))?;
        let n = u.recv(&mut buf)?;
        if n >= 12 && u16::from_be_bytes([buf[0], buf[1]]) == id && buf[2] & 0x80 != 0 {
            return Ok(buf[..n].to_vec());
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub(super) struct Query {
    pub id: u16,
    /// Lower case, with the root dot.
    pub name: String,
    /// End of the question section in the packet.
    end: usize,
}

/// Reads a standard query with one question. `Err(Some(reply))`: malformed,
/// answer with that; `Err(None)`: not even a header, or not a query.
/// What the proxy does with a DNS message's bytes before a socket is
/// involved, for fuzzing: parse it as a query (building the reply it would
/// send) and as an answer. Must never panic.
pub fn parse_message(b: &[u8]) {
    if let Ok(q) = parse_query(b) {
        let _ = reply(b, &q, 5);
    }
    let _ = answer_addresses(b);
}

pub(super) fn parse_query(b: &[u8]) -> Result<Query, Option<Vec<u8>>> {
    if b.len() < 12 || b[2] & 0x80 != 0 {
        return Err(None);
    }
    let id = u16::from_be_bytes([b[0], b[1]]);
    let error = |rcode| {
        let q = Query {
            id,
            name: String::new(),
            end: 12,
        };
        Some(reply(b, &q, rcode))
    };
    if (b[2] >> 3) & 0xf != 0 {
        return Err(error(RCODE_NOTIMP));
    }
    if u16::from_be_bytes([b[4], b[5]]) != 1 {
        return Err(error(RCODE_FORMERR));
    }
    let mut name = String::new();
    let mut i = 12;
    loop {
        let Some(&len) = b.get(i) else {
            return Err(error(RCODE_FORMERR));
        };
        i += 1;
        if len == 0 {
            break;
        }
        // Compression has no place in a question; labels are ≤ 63 bytes.
        if len & 0xc0 != 0 {
            return Err(error(RCODE_FORMERR));
        }
        let Some(label) = b.get(i..i + usize::from(len)) else {
            return Err(error(RCODE_FORMERR));
        };
        // Names are matched as text: a byte that is not a letter, digit,
        // hyphen, underscore or `*` could not be written in a rule either.
        if !label
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'*'))
        {
            return Err(error(RCODE_FORMERR));
        }
        name.extend(label.iter().map(|c| char::from(c.to_ascii_lowercase())));
        name.push('.');
        i += usize::from(len);
        if name.len() > 254 {
            return Err(error(RCODE_FORMERR));
        }
    }
    if name.is_empty() {
        name.push('.');
    }
    let end = i + 4; // type and class
    if b.len() < end {
        return Err(error(RCODE_FORMERR));
    }
    Ok(Query { id, name, end })
}

/// An answer with no records: the query's header flags (RD kept), the
/// given code, and its question when it had a readable one.
fn reply(query: &[u8], q: &Query, rcode: u8) -> Vec<u8> {
    let question = query.get(12..q.end).unwrap_or_default();
    let mut r = Vec::with_capacity(12 + question.len());
    r.extend_from_slice(&q.id.to_be_bytes());
    let rd = query.get(2).map_or(0, |f| f & 0x01);
    r.push(0x80 | rd); // QR, opcode 0, RD as asked
    r.push(0x80 | rcode); // RA
    let qd: u16 = if question.is_empty() { 0 } else { 1 };
    r.extend_from_slice(&qd.to_be_bytes());
    r.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    r.extend_from_slice(question);
    r
}

/// Skips a (possibly compressed) name; the index after it.
fn skip_name(b: &[u8], mut i: usize) -> Option<usize> {
    loop {
        let len = *b.get(i)?;
        if len & 0xc0 == 0xc0 {
            return Some(i + 2).filter(|&e| e <= b.len());
        }
        if len & 0xc0 != 0 {
            return None;
        }
        i += 1 + usize::from(len);
        if len == 0 {
            return Some(i);
        }
    }
}

/// The A and AAAA addresses in a successful answer (none when the answer
/// is malformed or an error).
pub(super) fn answer_addresses(b: &[u8]) -> Vec<IpAddr> {
    let parse = || -> Option<Vec<IpAddr>> {
        if b.len() < 12 || b[3] & 0x0f != 0 {
            return Some(Vec::new());
        }
        let qd = u16::from_be_bytes([b[4], b[5]]);
        let an = u16::from_be_bytes([b[6], b[7]]);
        let mut i = 12;
        for _ in 0..qd {
            i = skip_name(b, i)? + 4;
        }
        let mut ips = Vec::new();
        for _ in 0..an {
            i = skip_name(b, i)?;
            let h = b.get(i..i + 10)?;
            let (ty, class) = (
                u16::from_be_bytes([h[0], h[1]]),
                u16::from_be_bytes([h[2], h[3]]),
            );
            let len = usize::from(u16::from_be_bytes([h[8], h[9]]));
            let data = b.get(i + 10..i + 10 + len)?;
            match (ty, class, len) {
                (1, 1, 4) => ips.push(IpAddr::V4(Ipv4Addr::new(
                    data[0], data[1], data[2], data[3],
                ))),
                (28, 1, 16) => {
                    let mut o = [0u8; 16];
                    o.copy_from_slice(data);
                    ips.push(IpAddr::V6(Ipv6Addr::from(o)));
                }
                _ => {}
            }
            i += 10 + len;
        }
        Some(ips)
    };
    parse().unwrap_or_default()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A query for `name` (type A), as a stub resolver sends it.
    pub fn query_packet(id: u16, name: &str) -> Vec<u8> {
        let mut p = id.to_be_bytes().to_vec();
        p.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        for label in name.trim_end_matches('.').split('.') {
            p.push(label.len() as u8);
            p.extend_from_slice(label.as_bytes());
        }
        p.extend_from_slice(&[0, 0, 1, 0, 1]);
        p
    }

    #[test]
    fn queries_are_read_and_refusals_echo_the_question() {
        let p = query_packet(0x1234, "API.Example.test");
        let q = parse_query(&p).expect("a query");
        assert_eq!(q.name, "api.example.test.");
        let r = reply(&p, &q, RCODE_REFUSED);
        assert_eq!(&r[..2], &[0x12, 0x34]);
        assert_eq!(r[3] & 0x0f, RCODE_REFUSED);
        assert_eq!(&r[12..], &p[12..]);
        assert!(answer_addresses(&r).is_empty());
    }

    #[test]
    fn malformed_queries_get_formerr_or_nothing_and_never_panic() {
        assert_eq!(parse_query(&[1, 2, 3]), Err(None));
        let mut p = query_packet(7, "a.b");
        p[5] = 2; // two questions
        let r = parse_query(&p).expect_err("malformed").expect("a reply");
        assert_eq!(r[3] & 0x0f, RCODE_FORMERR);
        let mut p = query_packet(7, "a.b");
        p[12] = 0xc0; // a compression pointer in the question
        assert!(parse_query(&p).is_err());
        let p = query_packet(7, "bad name.test");
        assert!(parse_query(&p).is_err());
        // Every truncation and every single-byte corruption of a valid
        // query is handled without a panic.
        let p = query_packet(9, "www.example.test");
        for n in 0..p.len() {
            let _ = parse_query(&p[..n]);
            let _ = answer_addresses(&p[..n]);
        }
        for i in 0..p.len() {
            for v in [0u8, 0x3f, 0xc0, 0xff] {
                let mut q = p.clone();
                q[i] = v;
                let _ = parse_query(&q);
                let _ = answer_addresses(&q);
            }
        }
    }

    #[test]
    fn answers_yield_their_addresses_through_compressed_names() {
        let mut a = query_packet(5, "api.example.test");
        a[2] = 0x81;
        a[3] = 0x80;
        a[7] = 2; // two answers
                  // CNAME api → web (compressed owner), then A for web.
        a.extend_from_slice(&[
            0xc0, 12, 0, 5, 0, 1, 0, 0, 0, 60, 0, 6, 3, b'w', b'e', b'b', 0xc0, 16,
        ]);
        a.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 1, 2, 3]);
        assert_eq!(
            answer_addresses(&a),
            vec![IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3))]
        );
        // An error answer teaches nothing.
        a[3] = 0x83;
        assert!(answer_addresses(&a).is_empty());
    }
}
