//! The agent's L7 proxy end to end, in network namespaces made by this test
//! (removed after, also on failure): real HTTP/1.1 requests and DNS queries
//! from a client pod, judged by the proxy the datapath hands them to.
//!   - egress HTTP rules: allowed requests reach the server, denied ones get
//!     403, and the client's keep-alive connection survives a denial;
//!   - egress DNS rules: a denied name gets REFUSED, malformed queries
//!     FORMERR or nothing, an allowed one its answer, which the agent
//!     learns so that a toFQDNs rule opens the answered address; the same
//!     over TCP, two queries on one connection;
//!   - ingress HTTP rules (Star Wars): the host's connections to the pod
//!     turn around into the proxy, POST /v1/request-landing passes and
//!     PUT /v1/exhaust-port gets 403 on the same connection;
//!   - a 1 MB request line and binary garbage are refused and never reach
//!     the server;
//!   - over IPv6 too: HTTP egress rules and the ingress rule;
//!   - request bodies (sized and chunked) of denied requests are read past;
//!   - with the agent killed, redirected traffic is dropped, not passed.
//!
//! Needs root; fails rather than skips with SLUICE_REQUIRE_BPF=1.

mod common;

use agent::testnet::{sh, PodNet};
use common::{http_get, metrics_addr, sample, spawn_agent, wait_line, write, PinnedRun, Run};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long the test's servers run at most.
const SERVE: Duration = Duration::from_secs(120);

type Seen = Arc<Mutex<Vec<String>>>;

/// Serves HTTP/1.1 on `listener` (keep-alive; bodies by content-length):
/// every request is answered `200` with `conn=<n> <METHOD> <PATH>`, `n`
/// counting the connections accepted, and its request line is recorded.
fn http_server(listener: TcpListener, seen: Seen) {
    let _ = listener.set_nonblocking(true);
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < SERVE {
        let Ok((s, _)) = listener.accept() else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        n += 1;
        let seen = seen.clone();
        std::thread::spawn(move || {
            let _ = s.set_nonblocking(false);
            let _ = s.set_read_timeout(Some(Duration::from_secs(20)));
            let Ok(clone) = s.try_clone() else { return };
            let mut r = BufReader::new(clone);
            let mut w = s;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                let request = line.trim().to_owned();
                if request.is_empty() {
                    continue;
                }
                let (mut len, mut chunked) = (0usize, false);
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).unwrap_or(0) == 0 {
                        return;
                    }
                    if h.trim().is_empty() {
                        break;
                    }
                    let h = h.to_ascii_lowercase();
                    if let Some(v) = h.strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                    chunked |= h.starts_with("transfer-encoding:") && h.contains("chunked");
                }
                let Some(body) = read_body(&mut r, len, chunked) else {
                    return;
                };
                if let Ok(mut s) = seen.lock() {
                    s.push(request.clone());
                }
                let mut words = request.split(' ');
                let text = format!(
                    "conn={n} len={} {} {}",
                    body.len(),
                    words.next().unwrap_or_default(),
                    words.next().unwrap_or_default()
                );
                let _ = write!(
                    w,
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{text}",
                    text.len()
                );
            }
        });
    }
}

/// A request body: `len` bytes, or chunks up to the last one and its
/// trailers.
fn read_body(r: &mut impl BufRead, len: usize, chunked: bool) -> Option<Vec<u8>> {
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    if !chunked {
        return Some(body);
    }
    loop {
        let mut line = String::new();
        r.read_line(&mut line).ok()?;
        let size = usize::from_str_radix(line.trim().split(';').next()?, 16).ok()?;
        if size == 0 {
            loop {
                let mut t = String::new();
                r.read_line(&mut t).ok()?;
                if t.trim().is_empty() {
                    return Some(body);
                }
            }
        }
        let mut chunk = vec![0; size + 2];
        r.read_exact(&mut chunk).ok()?;
        body.extend_from_slice(&chunk[..size]);
    }
}

/// The test DNS server's answer to query `q`: `answer` for
/// `api.example.test`, NXDOMAIN for any other name (recorded in `seen`).
fn dns_answer(q: &[u8], answer: [u8; 4], seen: &Seen) -> Vec<u8> {
    let n = q.len();
    // The name, label by label, up to the question's end.
    let (mut i, mut name) = (12, Vec::new());
    while i < n && q[i] != 0 {
        let l = usize::from(q[i]);
        let label = q.get(i + 1..i + 1 + l).unwrap_or_default();
        name.push(String::from_utf8_lossy(label).into_owned());
        i += 1 + l;
    }
    let name = name.join(".");
    if let Ok(mut s) = seen.lock() {
        s.push(name.clone());
    }
    let end = (i + 5).min(n);
    let hit = name == "api.example.test";
    let mut r = q.get(..2).unwrap_or_default().to_vec();
    let rcode = if hit { 0x80 } else { 0x83 };
    r.extend_from_slice(&[0x81, rcode, 0, 1, 0, u8::from(hit), 0, 0, 0, 0]);
    r.extend_from_slice(q.get(12..end).unwrap_or_default());
    if hit {
        r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        r.extend_from_slice(&answer);
    }
    r
}

/// A DNS server on UDP and TCP answering with [`dns_answer`]. The UDP
/// socket is bound with SO_REUSEADDR: the proxy answers clients from this
/// same address.
fn dns_server(addr: &str, port: u16, answer: [u8; 4], seen: Seen) {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).expect("udp socket");
    s.set_reuse_address(true).expect("reuse");
    let at: std::net::SocketAddr = format!("{addr}:{port}").parse().expect("addr");
    s.bind(&at.into()).expect("bind the DNS server");
    let u: UdpSocket = s.into();
    u.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let udp_seen = seen.clone();
    std::thread::spawn(move || {
        let start = Instant::now();
        let mut buf = [0u8; 512];
        while start.elapsed() < SERVE {
            if let Ok((n, from)) = u.recv_from(&mut buf) {
                let _ = u.send_to(&dns_answer(&buf[..n], answer, &udp_seen), from);
            }
        }
    });
    let l = TcpListener::bind(at).expect("bind the DNS server (TCP)");
    l.set_nonblocking(true).expect("nonblocking");
    std::thread::spawn(move || {
        let start = Instant::now();
        while start.elapsed() < SERVE {
            let Ok((mut c, _)) = l.accept() else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            let _ = c.set_nonblocking(false);
            let _ = c.set_read_timeout(Some(Duration::from_secs(10)));
            let mut len = [0u8; 2];
            while c.read_exact(&mut len).is_ok() {
                let mut q = vec![0u8; usize::from(u16::from_be_bytes(len))];
                if c.read_exact(&mut q).is_err() {
                    break;
                }
                let r = dns_answer(&q, answer, &seen);
                let _ = c.write_all(&(r.len() as u16).to_be_bytes());
                let _ = c.write_all(&r);
            }
        }
    });
}

/// One request on an open connection; the status and body of its answer.
fn exchange(w: &mut TcpStream, r: &mut BufReader<TcpStream>, request: &str) -> (u16, String) {
    if w.write_all(request.as_bytes()).is_err() {
        return (0, String::new());
    }
    let mut status = String::new();
    if r.read_line(&mut status).unwrap_or(0) == 0 {
        return (0, String::new());
    }
    let code = status
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; len];
    let _ = r.read_exact(&mut body);
    (code, String::from_utf8_lossy(&body).trim().to_owned())
}

/// Removes the proxy's routing rule when the test ends (it is the only
/// test of this binary; `sluice teardown` does the same for agents).
struct Routing;

impl Drop for Routing {
    fn drop(&mut self) {
        agent::proxy::remove_routing();
    }
}

const HTTP_CLIENT: &str = r#"
import http.client
c = http.client.HTTPConnection("HOST", 8080, timeout=10)
chunks = lambda: iter([b"ab", b"cde"])
for m, p, b in [("GET", "/public/a", None), ("GET", "/private", None),
                ("POST", "/submit", "x" * 10), ("POST", "/other", "y" * 5000),
                ("GET", "/public/b", None), ("POST", "/other", chunks()),
                ("POST", "/submit", chunks()), ("GET", "/public/c", None)]:
    c.request(m, p, body=b, encode_chunked=not isinstance(b, (str, type(None))))
    r = c.getresponse()
    body = r.read().decode().strip()
    port = c.sock.getsockname()[1] if c.sock else 0
    print(m, p, r.status, port, body, sep="|")
"#;

const DNS_CLIENT: &str = r#"
import socket, struct
def ask(name=None, raw=None):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(2)
    if raw is None:
        raw = struct.pack(">HHHHHH", 0x4242, 0x0100, 1, 0, 0, 0)
        raw += b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0"
        raw += struct.pack(">HH", 1, 1)
    s.sendto(raw, ("HOST", 8053))
    try:
        d = s.recv(4096)
    except socket.timeout:
        return "timeout"
    an = struct.unpack(">H", d[6:8])[0]
    ip = socket.inet_ntoa(d[-4:]) if an else "-"
    return "rcode=%d an=%d %s" % (d[3] & 15, an, ip)
print("evil", ask("evil.other.test"), sep="|")
print("short", ask(raw=b"\x12\x34\x01"), sep="|")
print("twoq", ask(raw=struct.pack(">HHHHHH", 7, 0x0100, 2, 0, 0, 0)), sep="|")
print("api", ask("api.example.test"), sep="|")
# Over TCP: two queries on one connection.
c = socket.create_connection(("HOST", 8053), timeout=3)
def ask_tcp(name):
    q = struct.pack(">HHHHHH", 0x4343, 0x0100, 1, 0, 0, 0)
    q += b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0"
    q += struct.pack(">HH", 1, 1)
    c.sendall(struct.pack(">H", len(q)) + q)
    n = struct.unpack(">H", c.recv(2, socket.MSG_WAITALL))[0]
    d = c.recv(n, socket.MSG_WAITALL)
    an = struct.unpack(">H", d[6:8])[0]
    return "rcode=%d an=%d %s" % (d[3] & 15, an, socket.inet_ntoa(d[-4:]) if an else "-")
print("tcp-evil", ask_tcp("evil.other.test"), sep="|")
print("tcp-api", ask_tcp("api.example.test"), sep="|")
"#;

#[test]
fn the_l7_proxy_enforces_http_and_dns_end_to_end() {
    let require = std::env::var("SLUICE_REQUIRE_BPF").as_deref() == Ok("1");
    let (Some(a), Some(b)) = (
        PodNet::create("pa").filter(PodNet::add_ipv6),
        PodNet::create("pb").filter(PodNet::add_ipv6),
    ) else {
        assert!(
            !require,
            "SLUICE_REQUIRE_BPF=1 but network namespaces cannot be created"
        );
        eprintln!("SKIPPED: cannot create network namespaces here");
        return;
    };
    let _routing = Routing;
    let mut fx = PinnedRun {
        run: Run {
            dir: std::env::temp_dir().join(format!("sluice-proxy-{}", std::process::id())),
            agent: None,
        },
        bpffs: std::path::PathBuf::from(format!(
            "/sys/fs/bpf/sluice-proxy-test-{}",
            std::process::id()
        )),
    };
    std::fs::create_dir_all(&fx.run.dir).expect("tmp dir");
    let (host, fqdn_addr) = (a.host_addr(), format!("10.199.{}.77", a.subnet));
    // The address the DNS server answers with: this host's, on the
    // client's link, and nothing the inventory knows (world, until learned).
    assert!(sh(&[
        "ip",
        "addr",
        "add",
        &format!("{fqdn_addr}/32"),
        "dev",
        &a.host_if
    ]));

    let inv = fx.run.dir.join("inventory.yaml");
    write(
        &inv,
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: client, namespace: live, labels: {{app: client}}}}\nspec: {{nodeName: sluice-test, containers: [{{name: c}}]}}\nstatus: {{podIPs: [{{ip: {}}}, {{ip: \"{}\"}}]}}\n---\n\
             apiVersion: v1\nkind: Pod\nmetadata: {{name: deathstar, namespace: live, labels: {{org: empire, class: deathstar}}}}\nspec: {{nodeName: sluice-test, containers: [{{name: c}}]}}\nstatus: {{podIPs: [{{ip: {}}}, {{ip: \"{}\"}}]}}\n",
            a.pod_addr(),
            a.pod_addr6(),
            b.pod_addr(),
            b.pod_addr6()
        ),
    );
    let pol = fx.run.dir.join("policy.yaml");
    write(
        &pol,
        &format!(
            r#"apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: client-out, namespace: live}}
spec:
  endpointSelector: {{matchLabels: {{app: client}}}}
  egress:
  - toCIDR: [{host}/32, "{host6}/128"]
    toPorts:
    - ports: [{{port: "8080", protocol: TCP}}]
      rules:
        http:
        - {{method: GET, path: "/public/.*"}}
        - {{method: POST, path: "/submit"}}
  - toCIDR: [{host}/32]
    toPorts:
    - ports: [{{port: "8053", protocol: UDP}}, {{port: "8053", protocol: TCP}}]
      rules:
        dns: [{{matchPattern: "*.example.test"}}]
  - toFQDNs: [{{matchName: api.example.test}}]
    toPorts: [{{ports: [{{port: "8081", protocol: TCP}}]}}]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: rule1, namespace: live}}
spec:
  endpointSelector: {{matchLabels: {{org: empire, class: deathstar}}}}
  ingress:
  - fromCIDR: [{}/32, "{}/128"]
    toPorts:
    - ports: [{{port: "80", protocol: TCP}}]
      rules:
        http: [{{method: POST, path: "/v1/request-landing"}}]
"#,
            b.host_addr(),
            b.host_addr6(),
            host6 = a.host_addr6(),
        ),
    );

    let seen_http: Seen = Arc::default();
    let seen_dns: Seen = Arc::default();
    let seen_star: Seen = Arc::default();
    let l = TcpListener::bind((host.as_str(), 8080)).expect("bind the HTTP server");
    let s = seen_http.clone();
    std::thread::spawn(move || http_server(l, s));
    let seen_http6: Seen = Arc::default();
    let l = TcpListener::bind((a.host_addr6().as_str(), 8080)).expect("bind the IPv6 HTTP server");
    let s = seen_http6.clone();
    std::thread::spawn(move || http_server(l, s));
    let fqdn_listener = TcpListener::bind((fqdn_addr.as_str(), 8081)).expect("bind 8081");
    let ip: std::net::Ipv4Addr = fqdn_addr.parse().expect("ipv4");
    dns_server(&host, 8053, ip.octets(), seen_dns.clone());
    let star = b.pod_addr();
    let s = seen_star.clone();
    let _deathstar = b.spawn_in(move || {
        if let Ok(l) = TcpListener::bind((star.as_str(), 80)) {
            http_server(l, s);
        }
    });
    let (star6, s) = (b.pod_addr6(), seen_star.clone());
    let _deathstar6 = b.spawn_in(move || {
        if let Ok(l) = TcpListener::bind((star6.as_str(), 80)) {
            http_server(l, s);
        }
    });

    let bpffs = fx.bpffs.to_str().expect("path").to_owned();
    let (child, rx) = spawn_agent(
        &pol,
        &inv,
        &[
            "--bpffs",
            &bpffs,
            "--metrics",
            "127.0.0.1:0",
            "--observe",
            "text",
        ],
    );
    fx.run.agent = Some(child);
    let Some(metrics_addr) = metrics_addr(&rx, require) else {
        return;
    };
    let applied = wait_line(&rx, "applied:", require).unwrap_or_default();
    assert!(
        applied.contains("live/client=") && applied.contains("live/deathstar="),
        "{applied}"
    );

    // HTTP egress, one keep-alive connection.
    let out = a.python(&HTTP_CLIENT.replace("HOST", &host));
    let rows: Vec<Vec<&str>> = out.lines().map(|l| l.split('|').collect()).collect();
    assert_eq!(rows.len(), 8, "{out}");
    // Denied bodies (5,000 bytes, chunked) are read past: the requests
    // after them on the connection are found and answered.
    let expect = [
        ("/public/a", "200", "len=0 GET /public/a"),
        ("/private", "403", "Access denied"),
        ("/submit", "200", "len=10 POST /submit"),
        ("/other", "403", "Access denied"),
        ("/public/b", "200", "len=0 GET /public/b"),
        ("/other", "403", "Access denied"),
        ("/submit", "200", "len=5 POST /submit"),
        ("/public/c", "200", "len=0 GET /public/c"),
    ];
    for (row, (path, status, body)) in rows.iter().zip(expect) {
        assert_eq!(row[1], path, "{out}");
        assert_eq!(row[2], status, "{path}: {out}");
        assert!(row[4].ends_with(body), "{path}: {out}");
    }
    let ports: std::collections::BTreeSet<&str> = rows.iter().map(|r| r[3]).collect();
    assert_eq!(ports.len(), 1, "one client connection throughout: {out}");
    assert!(
        rows.iter()
            .filter(|r| r[2] == "200")
            .all(|r| r[4].starts_with("conn=1 ")),
        "one upstream connection: {out}"
    );
    assert_eq!(
        *seen_http.lock().expect("seen"),
        vec![
            "GET /public/a HTTP/1.1",
            "POST /submit HTTP/1.1",
            "GET /public/b HTTP/1.1",
            "POST /submit HTTP/1.1",
            "GET /public/c HTTP/1.1"
        ],
        "denied requests never reach the server"
    );
    wait_line(&rx, "l7 denied   HTTP", require);

    // DNS egress and toFQDNs.
    assert!(
        !a.connects_to(&fqdn_addr, 8081),
        "before the lookup the address is world, and denied"
    );
    let out = a.python(&DNS_CLIENT.replace("HOST", &host));
    let answers: std::collections::BTreeMap<&str, &str> =
        out.lines().filter_map(|l| l.split_once('|')).collect();
    assert_eq!(answers.get("evil"), Some(&"rcode=5 an=0 -"), "{out}");
    assert_eq!(answers.get("short"), Some(&"timeout"), "{out}");
    assert_eq!(answers.get("twoq"), Some(&"rcode=1 an=0 -"), "{out}");
    assert_eq!(
        answers.get("api"),
        Some(&format!("rcode=0 an=1 {fqdn_addr}").as_str()),
        "{out}"
    );
    assert_eq!(answers.get("tcp-evil"), Some(&"rcode=5 an=0 -"), "{out}");
    assert_eq!(
        answers.get("tcp-api"),
        Some(&format!("rcode=0 an=1 {fqdn_addr}").as_str()),
        "{out}"
    );
    assert_eq!(
        *seen_dns.lock().expect("seen"),
        vec!["api.example.test", "api.example.test"],
        "only the allowed queries reach the server"
    );
    assert!(
        a.connects_to(&fqdn_addr, 8081),
        "the learned answer opens the toFQDNs rule"
    );
    drop(fqdn_listener);

    // HTTP ingress from the host: turned around into the proxy.
    let mut w = TcpStream::connect((b.pod_addr().as_str(), 80)).expect("connect to the deathstar");
    w.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut r = BufReader::new(w.try_clone().expect("clone"));
    let land = "POST /v1/request-landing HTTP/1.1\r\nhost: deathstar\r\ncontent-length: 0\r\n\r\n";
    let exhaust =
        "PUT /v1/exhaust-port HTTP/1.1\r\nhost: deathstar\r\ncontent-length: 4\r\n\r\nboom";
    assert_eq!(
        exchange(&mut w, &mut r, land),
        (200, "conn=1 len=0 POST /v1/request-landing".into())
    );
    assert_eq!(
        exchange(&mut w, &mut r, exhaust),
        (403, "Access denied".into())
    );
    assert_eq!(
        exchange(&mut w, &mut r, land),
        (200, "conn=1 len=0 POST /v1/request-landing".into())
    );
    // Judged and forwarded with the path normalized, as Cilium's Envoy
    // does: the backend sees the path the rule allowed.
    let dotted =
        "POST /v1/./request-landing HTTP/1.1\r\nhost: deathstar\r\ncontent-length: 0\r\n\r\n";
    assert_eq!(
        exchange(&mut w, &mut r, dotted),
        (200, "conn=1 len=0 POST /v1/request-landing".into())
    );
    let escaped = "POST /v1/request-landing/%2e%2e/exhaust-port HTTP/1.1\r\nhost: deathstar\r\ncontent-length: 0\r\n\r\n";
    assert_eq!(
        exchange(&mut w, &mut r, escaped),
        (403, "Access denied".into())
    );
    // Ambiguous requests are refused and the connection closed: two Host
    // headers, a chunk size a server could read otherwise.
    for smuggle in [
        "POST /v1/request-landing HTTP/1.1\r\nhost: deathstar\r\nhost: other\r\ncontent-length: 0\r\n\r\n",
        "POST /v1/request-landing HTTP/1.1\r\nhost: deathstar\r\ncontent-length: 0\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
    ] {
        let mut w = TcpStream::connect((b.pod_addr().as_str(), 80)).expect("connect to the deathstar");
        w.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let mut r = BufReader::new(w.try_clone().expect("clone"));
        assert_eq!(exchange(&mut w, &mut r, smuggle).0, 400, "{smuggle}");
    }
    // The same over IPv6: egress HTTP rules, then the ingress rule.
    // (With the port given, http.client takes the address as it is.)
    let out = a.python(&HTTP_CLIENT.replace("HOST", &a.host_addr6()));
    let rows: Vec<Vec<&str>> = out.lines().map(|l| l.split('|').collect()).collect();
    assert_eq!(rows.len(), 8, "{out}");
    for (row, (path, status, body)) in rows.iter().zip(expect) {
        assert_eq!((row[1], row[2]), (path, status), "IPv6: {out}");
        assert!(row[4].ends_with(body), "IPv6 {path}: {out}");
    }
    assert_eq!(seen_http6.lock().expect("seen").len(), 5, "IPv6: {out}");
    let mut w = TcpStream::connect((b.pod_addr6().as_str(), 80)).expect("connect over IPv6");
    w.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut r = BufReader::new(w.try_clone().expect("clone"));
    assert_eq!(
        exchange(&mut w, &mut r, exhaust),
        (403, "Access denied".into())
    );
    let (status, body) = exchange(&mut w, &mut r, land);
    assert_eq!(status, 200, "IPv6 landing: {body}");

    // Binary garbage where a request should be: 400, never forwarded.
    let mut w = TcpStream::connect((b.pod_addr().as_str(), 80)).expect("connect to the deathstar");
    w.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut r = BufReader::new(w.try_clone().expect("clone"));
    let garbage = "\u{1}\u{2}\u{7f}GET\u{0}/v1/request-landing \u{fe}\r\n\r\n";
    assert_eq!(exchange(&mut w, &mut r, garbage).0, 400);

    // The proxy's decisions are counted in the agent's metrics.
    std::thread::sleep(Duration::from_millis(400));
    let m = http_get(&metrics_addr);
    let count = |series: &str| sample(&m, series).unwrap_or(-1.0);
    // HTTP: 5 + 5 egress (IPv4, IPv6) and 3 + 1 ingress allowed (the
    // dot-segment one among them); 3 + 3 egress and 2 + 1 ingress denied,
    // the two ambiguous requests and the garbage. DNS: one allowed over
    // UDP and TCP, REFUSED twice, two malformed (one unanswered).
    assert_eq!(
        count("sluice_l7_requests_total{protocol=\"http\",verdict=\"allowed\"}"),
        14.0,
        "{m}"
    );
    assert_eq!(
        count("sluice_l7_requests_total{protocol=\"http\",verdict=\"denied\"}"),
        12.0,
        "{m}"
    );
    assert_eq!(
        count("sluice_l7_requests_total{protocol=\"dns\",verdict=\"allowed\"}"),
        2.0,
        "{m}"
    );
    assert_eq!(
        count("sluice_l7_requests_total{protocol=\"dns\",verdict=\"denied\"}"),
        4.0,
        "{m}"
    );
    assert_eq!(count("sluice_l7_learned_names"), 1.0, "{m}");
    let redirected = format!(
        "sluice_packets_total{{interface=\"{}\",verdict=\"redirected\",reason=\"l7_proxy\"}}",
        a.host_if
    );
    assert!(count(&redirected) >= 10.0, "{m}");

    // A 1 MB request line: refused, never forwarded.
    let mut w = TcpStream::connect((b.pod_addr().as_str(), 80)).expect("connect to the deathstar");
    w.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut r = BufReader::new(w.try_clone().expect("clone"));
    let huge = format!(
        "POST /v1/request-landing{} HTTP/1.1\r\n\r\n",
        "a".repeat(1 << 20)
    );
    let (status, _) = exchange(&mut w, &mut r, &huge);
    assert_ne!(status, 200);
    assert_eq!(
        seen_star.lock().expect("seen").len(),
        4,
        "only the four landings reached the deathstar (the dot-segment one normalized)"
    );

    // An update that drops the ingress L7 rules while the proxy holds a
    // connection: the connection keeps its path through the proxy (moved
    // mid-stream it would break), and the proxy judges its next request by
    // the new state, which now allows PUT.
    let mut w = TcpStream::connect((b.pod_addr().as_str(), 80)).expect("connect to the deathstar");
    w.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut r = BufReader::new(w.try_clone().expect("clone"));
    assert_eq!(exchange(&mut w, &mut r, exhaust).0, 403);
    let text = std::fs::read_to_string(&pol).expect("policy");
    let relaxed = text.replace(
        "      rules:\n        http: [{method: POST, path: \"/v1/request-landing\"}]\n",
        "",
    );
    assert_ne!(relaxed, text, "the ingress rule has its L7 part");
    let _ = rx.try_iter().count(); // lines of earlier updates
    write(&pol, &relaxed);
    wait_line(&rx, "applied:", require);
    let (status, body) = exchange(&mut w, &mut r, exhaust);
    assert_eq!(
        status, 200,
        "the proxied connection survives the update: {body}"
    );
    // A new connection goes straight to the pod now.
    let mut w2 = TcpStream::connect((b.pod_addr().as_str(), 80)).expect("connect to the deathstar");
    w2.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut r2 = BufReader::new(w2.try_clone().expect("clone"));
    assert_eq!(exchange(&mut w2, &mut r2, exhaust).0, 200);

    // With the agent gone (killed; its programs stay attached through the
    // pinned links), traffic to be proxied has no socket to go to: dropped,
    // never passed on its L4 allow.
    if let Some(mut agent) = fx.run.agent.take() {
        let _ = agent.kill();
        let _ = agent.wait();
    }
    let before = seen_http.lock().expect("seen").len();
    let out = a.python(&format!(
        "import http.client\ntry:\n    c = http.client.HTTPConnection(\"{host}\", 8080, timeout=3)\n    c.request(\"GET\", \"/public/a\")\n    print(\"status\", c.getresponse().status)\nexcept Exception as e:\n    print(\"failed\", type(e).__name__)\n"
    ));
    assert!(out.starts_with("failed"), "{out}");
    assert_eq!(seen_http.lock().expect("seen").len(), before);
}
