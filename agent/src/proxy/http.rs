//! TCP through the proxy: HTTP/1.1 judged request by request (a denied
//! request gets 403 and the connection stays usable when the client keeps
//! it alive), DNS over TCP (in `dns`), redirects without L7 rules passed
//! through on their L4 verdict, and protocols this proxy does not parse
//! (Kafka) refused.

use super::{decide, Shared};
use compiler::l7::{L7Kind, Request};
use socket2::{Domain, Protocol, Socket, Type};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

/// Longest request or response head (request line and headers) read; a
/// longer one is refused, never judged on a prefix.
pub(super) const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 128;
/// Longest chunk-size or trailer line.
const MAX_LINE: usize = 4096;
const IDLE: Duration = Duration::from_secs(60);
const CONNECT: Duration = Duration::from_secs(5);

/// The proxy's listeners on 127.0.0.1 and, where the host has IPv6, on
/// ::1, both on the same port (the datapath knows one port per protocol).
pub(super) fn listen() -> io::Result<(TcpListener, Option<TcpListener>)> {
    super::same_port(|at| {
        let s = Socket::new(Domain::for_address(at), Type::STREAM, Some(Protocol::TCP))?;
        s.set_reuse_address(true)?;
        // Accepted connections keep their original destination as local
        // address; answering from it needs a transparent socket.
        super::transparent(&s, at)?;
        s.bind(&at.into())?;
        s.listen(1024)?;
        Ok(s.into())
    })
}

pub(super) fn serve(listener: TcpListener, shared: Arc<Shared>) {
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let Some(slot) = shared.enter() else {
            continue; // dropped: the client sees a reset, never an allow
        };
        let s = shared.clone();
        let _ = std::thread::Builder::new()
            .name("proxy-conn".into())
            .spawn(move || {
                let _slot = slot;
                connection(conn, &s);
            });
    }
}

fn connection(client: TcpStream, shared: &Shared) {
    let (Ok(src), Ok(dst)) = (client.peer_addr(), client.local_addr()) else {
        return;
    };
    let _ = client.set_read_timeout(Some(IDLE));
    let _ = client.set_write_timeout(Some(IDLE));
    // Before any state is enforced nothing is allowed.
    let Some(c) = shared.state() else { return };
    let first = decide(&c, src, dst, 6, None);
    if !first.allowed {
        shared.log(format!("denied   TCP {src} → {dst}: {}", first.reason));
        return;
    }
    if first.kinds.contains(&L7Kind::Http) {
        let _ = http(client, src, dst, shared);
    } else if first.kinds.contains(&L7Kind::Dns) {
        let _ = super::dns::tcp(client, src, dst, shared);
    } else if first.kinds.is_empty() {
        // The redirect judges no requests (e.g. an L7 listener without
        // rules here): the L4 allow is the verdict.
        if let Ok(up) = connect(dst, first.mark) {
            tunnel(client, up);
        }
    } else {
        shared.log(format!(
            "denied   TCP {src} → {dst}: {:?} rules are not enforced by this proxy, the connection is refused",
            first.kinds
        ));
    }
}

/// The proxy's own connection to a destination, carrying the client's
/// identity in its mark.
pub(super) fn connect(dst: SocketAddr, mark: u32) -> io::Result<TcpStream> {
    let s = Socket::new(Domain::for_address(dst), Type::STREAM, Some(Protocol::TCP))?;
    s.set_mark(mark)?;
    s.connect_timeout(&dst.into(), CONNECT)?;
    let t: TcpStream = s.into();
    t.set_read_timeout(Some(IDLE))?;
    t.set_write_timeout(Some(IDLE))?;
    Ok(t)
}

/// Copies both ways until both sides are done.
fn tunnel(client: TcpStream, up: TcpStream) {
    let (Ok(mut c2), Ok(mut u2)) = (client.try_clone(), up.try_clone()) else {
        return;
    };
    let t = std::thread::spawn(move || {
        let _ = io::copy(&mut c2, &mut u2);
        let _ = u2.shutdown(Shutdown::Write);
    });
    let (mut c, mut u) = (client, up);
    let _ = io::copy(&mut u, &mut c);
    let _ = c.shutdown(Shutdown::Write);
    let _ = t.join();
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Body {
    None,
    Length(u64),
    Chunked,
    /// A response that ends when the server closes.
    UntilClose,
}

#[derive(Debug)]
enum HeadError {
    TooLarge,
    Io(io::Error),
}

/// Reads a message head up to and including its empty line. `Ok(None)`:
/// the peer closed between messages.
fn read_head(r: &mut impl BufRead) -> Result<Option<Vec<u8>>, HeadError> {
    let mut head = Vec::new();
    loop {
        let mut line = Vec::new();
        let room = (MAX_HEAD - head.len()) as u64 + 1;
        let n = r
            .by_ref()
            .take(room)
            .read_until(b'\n', &mut line)
            .map_err(HeadError::Io)?;
        if n == 0 {
            return if head.is_empty() {
                Ok(None)
            } else {
                Err(HeadError::Io(io::ErrorKind::UnexpectedEof.into()))
            };
        }
        let blank = line == b"\r\n" || line == b"\n";
        if blank && head.is_empty() {
            continue; // empty lines before a request line are allowed
        }
        head.extend_from_slice(&line);
        if head.len() > MAX_HEAD {
            return Err(HeadError::TooLarge);
        }
        if !line.ends_with(b"\n") {
            // Short of the limit without a line end: the peer closed.
            return Err(HeadError::Io(io::ErrorKind::UnexpectedEof.into()));
        }
        if blank {
            return Ok(Some(head));
        }
    }
}

fn header<'a>(headers: &'a [httparse::Header<'a>], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .and_then(|h| std::str::from_utf8(h.value).ok())
        .map(str::trim)
}

/// How a message's body is delimited (RFC 9112 §6.3); `Err` for framing a
/// proxy must not guess at (request smuggling).
fn framing(headers: &[httparse::Header], response: bool) -> Result<Body, ()> {
    let te: Vec<&httparse::Header> = headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("transfer-encoding"))
        .collect();
    let lengths: Vec<&httparse::Header> = headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("content-length"))
        .collect();
    if !te.is_empty() {
        if !lengths.is_empty() {
            return Err(());
        }
        let last = te
            .last()
            .and_then(|h| std::str::from_utf8(h.value).ok())
            .and_then(|v| v.rsplit(',').next())
            .map(|v| v.trim().to_ascii_lowercase());
        return match last.as_deref() {
            Some("chunked") => Ok(Body::Chunked),
            _ if response => Ok(Body::UntilClose),
            _ => Err(()),
        };
    }
    let mut length = None;
    for h in lengths {
        let v = std::str::from_utf8(h.value).map_err(|_| ())?.trim();
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
            return Err(());
        }
        let n: u64 = v.parse().map_err(|_| ())?;
        if length.is_some_and(|l| l != n) {
            return Err(());
        }
        length = Some(n);
    }
    Ok(match length {
        Some(n) => Body::Length(n),
        None if response => Body::UntilClose,
        None => Body::None,
    })
}

fn read_line(r: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut line = Vec::new();
    r.by_ref()
        .take(MAX_LINE as u64)
        .read_until(b'\n', &mut line)?;
    if !line.ends_with(b"\n") {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "chunk line too long or cut short",
        ));
    }
    Ok(line)
}

/// Copies one body from `r` to `w` as framed (into `io::sink()` to skip it).
fn copy_body(r: &mut impl BufRead, w: &mut impl Write, body: Body) -> io::Result<()> {
    match body {
        Body::None => Ok(()),
        Body::Length(n) => {
            let copied = io::copy(&mut r.by_ref().take(n), w)?;
            if copied != n {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            Ok(())
        }
        Body::UntilClose => io::copy(r, w).map(|_| ()),
        Body::Chunked => loop {
            let line = read_line(r)?;
            w.write_all(&line)?;
            let text = std::str::from_utf8(&line).map_err(|_| bad("chunk size"))?;
            let size = text.split(';').next().unwrap_or_default();
            let size = size
                .trim_end_matches(['\r', '\n'])
                .trim_end_matches([' ', '\t']);
            // Hex digits and nothing else (`+5`, ` 5`, `0x5` are refused):
            // a proxy and a server that read a size differently disagree on
            // where the next request starts.
            if size.is_empty() || size.len() > 16 || !size.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad("chunk size"));
            }
            let size = u64::from_str_radix(size, 16).map_err(|_| bad("chunk size"))?;
            if size == 0 {
                // Trailers, up to the empty line.
                loop {
                    let t = read_line(r)?;
                    w.write_all(&t)?;
                    if t == b"\r\n" || t == b"\n" {
                        return Ok(());
                    }
                }
            }
            copy_body(r, w, Body::Length(size))?;
            let end = read_line(r)?;
            if end != b"\r\n" && end != b"\n" {
                return Err(bad("chunk end"));
            }
            w.write_all(&end)?;
        },
    }
}

/// Everything the proxy does with a client's bytes before a socket is
/// involved, for fuzzing: heads read one after another, each parsed,
/// framed, its path normalized and its body read past. Must never panic,
/// whatever the input.
pub fn parse_requests(data: &[u8]) {
    let mut r = std::io::BufReader::new(data);
    for _ in 0..64 {
        let Ok(Some(head)) = read_head(&mut r) else {
            return;
        };
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        if !matches!(req.parse(&head), Ok(httparse::Status::Complete(_))) {
            return;
        }
        let Ok(body) = framing(req.headers, false) else {
            return;
        };
        if let (Some(m), Some(p), Some(v)) = (req.method, req.path, req.version) {
            let _ = with_target(&head, m, &normalize_path(p), v);
        }
        if copy_body(&mut r, &mut io::sink(), body).is_err() {
            return;
        }
    }
}

/// The path a request is judged and forwarded by: see
/// [`compiler::l7::normalize_http_path`].
pub(crate) fn normalize_path(raw: &str) -> String {
    compiler::l7::normalize_http_path(raw)
}

/// The request head with its target replaced by `path` (the rest of the
/// head as received).
fn with_target(head: &[u8], method: &str, path: &str, version: u8) -> Vec<u8> {
    // From the request line's end (CRLF, or a bare LF) on.
    let rest = match head.iter().position(|&b| b == b'\n') {
        Some(i) if i > 0 && head[i - 1] == b'\r' => &head[i - 1..],
        Some(i) => &head[i..],
        None => &head[head.len()..],
    };
    let mut out = format!("{method} {path} HTTP/1.{version}").into_bytes();
    out.extend_from_slice(rest);
    out
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("malformed {what}"))
}

/// The proxy's own answer. 403 carries the body Cilium's proxy sends.
fn respond(w: &mut impl Write, status: u16, keep_alive: bool) -> io::Result<()> {
    let (reason, body) = match status {
        403 => ("Forbidden", "Access denied\r\n"),
        400 => ("Bad Request", "Bad request\r\n"),
        431 => (
            "Request Header Fields Too Large",
            "Request header too large\r\n",
        ),
        502 => ("Bad Gateway", "Bad gateway\r\n"),
        _ => ("Service Unavailable", "Upstream connect error\r\n"),
    };
    write!(
        w,
        "HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n{}\r\n{body}",
        body.len(),
        if keep_alive { "" } else { "connection: close\r\n" }
    )?;
    w.flush()
}

struct Upstream {
    w: TcpStream,
    r: BufReader<TcpStream>,
}

/// Serves HTTP/1.1 requests of one client connection in order (pipelined
/// requests too), until either side closes.
fn http(client: TcpStream, src: SocketAddr, dst: SocketAddr, shared: &Shared) -> io::Result<()> {
    let mut reader = BufReader::with_capacity(16 * 1024, client.try_clone()?);
    let mut out = client;
    let mut up: Option<Upstream> = None;
    loop {
        let head = match read_head(&mut reader) {
            Ok(Some(h)) => h,
            Ok(None) => return Ok(()),
            Err(HeadError::TooLarge) => {
                shared.judged(L7Kind::Http, false);
                shared.log(format!(
                    "denied   HTTP {src} → {dst}: request head over {MAX_HEAD} bytes"
                ));
                return respond(&mut out, 431, false);
            }
            Err(HeadError::Io(e)) => return Err(e),
        };
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        let parsed = matches!(req.parse(&head), Ok(httparse::Status::Complete(_)));
        let body = framing(req.headers, false);
        let (Some(method), Some(path), Some(version), true, Ok(body)) =
            (req.method, req.path, req.version, parsed, body)
        else {
            shared.judged(L7Kind::Http, false);
            shared.log(format!("denied   HTTP {src} → {dst}: malformed request"));
            return respond(&mut out, 400, false);
        };
        // Two Host headers: a proxy that judges one and a server that
        // serves the other.
        if req
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("host"))
            .count()
            > 1
        {
            shared.judged(L7Kind::Http, false);
            shared.log(format!(
                "denied   HTTP {src} → {dst}: more than one Host header"
            ));
            return respond(&mut out, 400, false);
        }
        let path = normalize_path(path);
        let connection = header(req.headers, "connection").map(str::to_ascii_lowercase);
        let keep_alive = match connection.as_deref() {
            Some(c) if c.split(',').any(|t| t.trim() == "close") => false,
            Some(c) if c.split(',').any(|t| t.trim() == "keep-alive") => true,
            _ => version == 1,
        };
        let request = Request::Http {
            method: method.to_owned(),
            path: path.clone(),
            host: header(req.headers, "host").unwrap_or_default().to_owned(),
            headers: req
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_owned(),
                        String::from_utf8_lossy(h.value).trim().to_owned(),
                    )
                })
                .collect(),
        };
        let is_head = method.eq_ignore_ascii_case("HEAD");
        let line = format!("HTTP {src} → {dst}: {method} {path}");
        // Judged by the state enforced now, which may have changed since
        // the connection opened.
        let d = match shared.state() {
            Some(c) => decide(&c, src, dst, 6, Some(request)),
            None => return Ok(()),
        };
        if !d.allowed {
            shared.judged(L7Kind::Http, false);
            shared.log(format!("denied   {line}: {}", d.reason));
            // The body is read past so that the next request on this
            // connection is found where it starts.
            copy_body(&mut reader, &mut io::sink(), body)?;
            respond(&mut out, 403, keep_alive)?;
            if !keep_alive {
                return Ok(());
            }
            continue;
        }
        shared.judged(L7Kind::Http, true);
        shared.log(format!("allowed  {line}: {}", d.reason));
        if up.is_none() {
            match connect(dst, d.mark) {
                Ok(t) => {
                    let r = BufReader::with_capacity(16 * 1024, t.try_clone()?);
                    up = Some(Upstream { w: t, r });
                }
                Err(e) => {
                    shared.log(format!("error    {line}: connecting to {dst}: {e}"));
                    return respond(&mut out, 503, false);
                }
            }
        }
        let Some(u) = up.as_mut() else { return Ok(()) };
        // Forwarded as judged: with the normalized path.
        if req.path == Some(path.as_str()) {
            u.w.write_all(&head)?;
        } else {
            u.w.write_all(&with_target(&head, method, &path, version))?;
        }
        copy_body(&mut reader, &mut u.w, body)?;
        u.w.flush()?;
        // The response (after any 1xx interim ones).
        loop {
            let rhead = match read_head(&mut u.r) {
                Ok(Some(h)) => h,
                Ok(None) | Err(_) => return respond(&mut out, 502, false),
            };
            let mut rh = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut resp = httparse::Response::new(&mut rh);
            let ok = matches!(resp.parse(&rhead), Ok(httparse::Status::Complete(_)));
            let (true, Some(status)) = (ok, resp.code) else {
                return respond(&mut out, 502, false);
            };
            out.write_all(&rhead)?;
            if status == 101 {
                // An upgrade (WebSocket): past it the bytes are not HTTP.
                out.flush()?;
                let rest = u.r.buffer().to_vec();
                out.write_all(&rest)?;
                let Some(u) = up.take() else { return Ok(()) };
                tunnel(out, u.w);
                return Ok(());
            }
            if (100..200).contains(&status) {
                continue;
            }
            let rbody = if is_head || status == 204 || status == 304 {
                Body::None
            } else {
                match framing(resp.headers, true) {
                    Ok(b) => b,
                    Err(()) => return Ok(()),
                }
            };
            let close = header(resp.headers, "connection")
                .is_some_and(|c| c.to_ascii_lowercase().contains("close"));
            copy_body(&mut u.r, &mut out, rbody)?;
            out.flush()?;
            if rbody == Body::UntilClose || close {
                return Ok(());
            }
            break;
        }
        if !keep_alive {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalized_before_they_are_judged() {
        for (raw, want) in [
            ("/public/../admin", "/admin"),
            ("/public/%2e%2e/admin", "/admin"),
            ("/public/%2E%2E/admin", "/admin"),
            ("/public/./x", "/public/x"),
            ("//public///x", "/public/x"),
            ("/public%2F..%2Fadmin", "/admin"),
            ("/public\\..\\admin", "/admin"),
            ("/../../etc/passwd", "/etc/passwd"),
            ("/a/b/..", "/a/"),
            ("/a/b/", "/a/b/"),
            ("/", "/"),
            ("", "/"),
            ("/%7Euser/%41", "/~user/A"),
            ("/q?x=/../y", "/q?x=/../y"),
            ("/a%20b", "/a%20b"),
            ("/a%zz", "/a%25zz"),
            // Decoding never forms a new escape (found by fuzzing).
            ("/public/%%32%65%%32%65/admin", "/public/%252e%252e/admin"),
            ("/%%36%31dmin", "/%2561dmin"),
            ("http://example.com/p/../q?z", "/q?z"),
        ] {
            assert_eq!(normalize_path(raw), want, "{raw}");
        }
    }

    #[test]
    fn forwarded_heads_carry_the_normalized_target() {
        let head = b"GET /public/../admin HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(
            with_target(head, "GET", "/admin", 1),
            b"GET /admin HTTP/1.1\r\nHost: a\r\n\r\n".to_vec()
        );
    }

    #[test]
    fn chunk_sizes_are_hex_digits_only() {
        for bad_size in ["+5", " 5", "0x5", "-1", "5 5", "", "12345678901234567"] {
            let body = format!("{bad_size}\r\nhello\r\n0\r\n\r\n");
            let mut r = std::io::BufReader::new(body.as_bytes());
            assert!(
                copy_body(&mut r, &mut io::sink(), Body::Chunked).is_err(),
                "chunk size {bad_size:?} accepted"
            );
        }
        let ok = b"5\r\nhello\r\n5;ext=1\r\nworld\r\n0\r\n\r\n";
        let mut out = Vec::new();
        copy_body(
            &mut std::io::BufReader::new(&ok[..]),
            &mut out,
            Body::Chunked,
        )
        .expect("valid");
        assert_eq!(out, ok.to_vec());
    }

    fn head_of(text: &[u8]) -> Result<Option<Vec<u8>>, HeadError> {
        read_head(&mut BufReader::new(text))
    }

    #[test]
    fn heads_end_at_the_empty_line_and_huge_ones_are_refused() {
        let two = b"GET / HTTP/1.1\r\nhost: a\r\n\r\nGET /b HTTP/1.1\r\n\r\n";
        let mut r = BufReader::new(&two[..]);
        assert_eq!(
            read_head(&mut r).ok().flatten().as_deref(),
            Some(&b"GET / HTTP/1.1\r\nhost: a\r\n\r\n"[..])
        );
        assert_eq!(
            read_head(&mut r).ok().flatten().as_deref(),
            Some(&b"GET /b HTTP/1.1\r\n\r\n"[..])
        );
        assert!(matches!(read_head(&mut r), Ok(None)));
        let mut big = b"GET /".to_vec();
        big.extend(std::iter::repeat_n(b'a', 1 << 20));
        big.extend_from_slice(b" HTTP/1.1\r\n\r\n");
        assert!(matches!(head_of(&big), Err(HeadError::TooLarge)));
        assert!(matches!(
            head_of(b"GET / HTTP/1.1\r\nhost"),
            Err(HeadError::Io(_))
        ));
    }

    #[test]
    fn framing_refuses_what_could_smuggle_a_request() {
        let h = |pairs: &[(&'static str, &'static str)]| -> Vec<httparse::Header<'static>> {
            pairs
                .iter()
                .map(|(n, v)| httparse::Header {
                    name: n,
                    value: v.as_bytes(),
                })
                .collect()
        };
        assert_eq!(
            framing(&h(&[("Content-Length", "5")]), false),
            Ok(Body::Length(5))
        );
        assert_eq!(framing(&h(&[]), false), Ok(Body::None));
        assert_eq!(framing(&h(&[]), true), Ok(Body::UntilClose));
        assert_eq!(
            framing(&h(&[("transfer-encoding", "gzip, chunked")]), false),
            Ok(Body::Chunked)
        );
        for bad in [
            h(&[("content-length", "5"), ("content-length", "6")]),
            h(&[("content-length", "-1")]),
            h(&[("content-length", "5"), ("transfer-encoding", "chunked")]),
            h(&[("transfer-encoding", "gzip")]),
        ] {
            assert_eq!(framing(&bad, false), Err(()), "{bad:?}");
        }
    }

    #[test]
    fn chunked_bodies_are_copied_exactly_and_skipped_whole() {
        let body = b"4\r\nWiki\r\n5;x=y\r\npedia\r\n0\r\nt: 1\r\n\r\nNEXT";
        let mut r = BufReader::new(&body[..]);
        let mut out = Vec::new();
        copy_body(&mut r, &mut out, Body::Chunked).expect("copy");
        assert_eq!(out, &body[..body.len() - 4]);
        let mut rest = String::new();
        r.read_to_string(&mut rest).expect("rest");
        assert_eq!(rest, "NEXT");
        let mut r = BufReader::new(&b"zz\r\n"[..]);
        assert!(copy_body(&mut r, &mut io::sink(), Body::Chunked).is_err());
        let mut r = BufReader::new(&b"abc"[..]);
        assert!(copy_body(&mut r, &mut io::sink(), Body::Length(5)).is_err());
    }
}
