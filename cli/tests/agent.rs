//! `sluice agent` enforcing for real: a network namespace as the pod, a
//! veth pair to the root namespace (all made by this test and removed after,
//! also on failure), the agent finding the pod's interface by route, and
//! real TCP connections from the pod to a server on the test's own
//! host-side address. Covers applying, a policy change picked up by the
//! watch, and an invalid change that leaves the enforced state in place.
//! Needs root; fails rather than skips with SLUICE_REQUIRE_BPF=1.

mod common;

use agent::testnet::PodNet;
use common::{
    http_get, metrics_addr, sample, setup, spawn_agent, spawn_sluice, wait_line, write, PinnedRun,
    SLUICE,
};
use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

/// The agents of these tests share the node's routing rule for the L7
/// proxy, and one test checks that a stopping agent removes it: they run
/// one at a time.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// TCP listeners on the test's host-side address, for the pod to connect to.
fn listen(net: &PodNet, ports: &[u16]) -> Vec<TcpListener> {
    let host = net.host_addr();
    ports
        .iter()
        .map(|p| TcpListener::bind((host.as_str(), *p)).expect("bind on the test's veth address"))
        .collect()
}

/// `ip ARGS` output, for checks of what the agent left behind.
fn ip(args: &[&str]) -> String {
    let o = Command::new("ip").args(args).output().expect("ip");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A veth pair with both ends in the root namespace, standing in for the
/// node's uplink: an address routed through it is not a local pod.
struct Uplink(String);

impl Uplink {
    fn create(subnet: u8) -> Option<Uplink> {
        let id = std::process::id() % 100_000;
        let (a, b) = (format!("slup{id}"), format!("slupb{id}"));
        let ok = agent::testnet::sh(&["ip", "link", "add", &a, "type", "veth", "peer", "name", &b])
            && agent::testnet::sh(&[
                "ip",
                "addr",
                "add",
                &format!("10.198.{subnet}.1/24"),
                "dev",
                &a,
            ])
            && agent::testnet::sh(&["ip", "link", "set", &a, "up"])
            && agent::testnet::sh(&["ip", "link", "set", &b, "up"]);
        let up = Uplink(a);
        ok.then_some(up)
    }
}

impl Drop for Uplink {
    fn drop(&mut self) {
        agent::testnet::sh(&["ip", "link", "del", &self.0]);
    }
}

/// Runs `sluice agent` to its exit (bounded: these runs must refuse at
/// once); returns the exit code and stderr.
fn agent_run(args: &[&str]) -> (Option<i32>, String) {
    let start = Instant::now();
    let o = Command::new(SLUICE)
        .arg("agent")
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        // A guard if the refusal ever regressed: stop soon, pin nothing.
        .args(["--duration-s", "2", "--interval-ms", "100"])
        .env("NO_COLOR", "1")
        .output()
        .expect("run the agent");
    assert!(start.elapsed() < Duration::from_secs(20));
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// An agent never enforces nothing and never touches what is not a pod's
/// interface: no inventory, a node with no endpoints (the default node is
/// the host's name), and endpoints routed via the uplink are refused
/// before anything is loaded or pinned.
#[test]
fn agent_refuses_to_start_with_nothing_to_enforce() {
    let _one_at_a_time = serial();
    let require = std::env::var("SLUICE_REQUIRE_BPF").as_deref() == Ok("1");
    let bpffs = std::env::temp_dir().join(format!("sluice-refuse-{}", std::process::id()));
    let b = bpffs.to_str().expect("path");
    let (code, err) = agent_run(&["-p", "fixtures/example/policies", "--bpffs", b]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("no inventory"), "{err}");
    // The example's pods are on node-1, not on this machine.
    let (code, err) = agent_run(&[
        "-p",
        "fixtures/example/policies",
        "-i",
        "fixtures/example/inventory.yaml",
        "--bpffs",
        b,
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("has no endpoints in the inventory") && err.contains("node-1"),
        "{err}"
    );
    let (code, err) = agent_run(&[
        "-p",
        "fixtures/example/policies",
        "-i",
        "fixtures/example/inventory.yaml",
        "--node",
        "no-such-node",
        "--bpffs",
        b,
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("`no-such-node`"), "{err}");
    assert!(!bpffs.exists(), "nothing may be pinned by a refused agent");
    // An endpoint whose address routes via an interface that is not a
    // pod's is refused, and so is the agent that has nothing else.
    let Some(up) = Uplink::create(7) else {
        assert!(
            !require,
            "SLUICE_REQUIRE_BPF=1 but a veth cannot be created"
        );
        return;
    };
    let dir = std::env::temp_dir().join(format!("sluice-uplink-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let inv = dir.join("inventory.yaml");
    write(&inv, "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: live, labels: {app: client}}\nspec: {nodeName: sluice-test, containers: [{name: c}]}\nstatus: {podIP: 10.198.7.2}\n");
    let (code, err) = agent_run(&[
        "-p",
        "fixtures/example/policies",
        "-i",
        inv.to_str().expect("path"),
        "--node",
        "sluice-test",
        "--bpffs",
        b,
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(&format!("live/p: not local: route via {}", up.0)),
        "{err}"
    );
    assert!(err.contains("peer is in this network namespace"), "{err}");
    assert!(!bpffs.exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// With --no-pin, SIGTERM ends enforcement and removes everything the
/// agent made: its routing rule and table, and its links (traffic the
/// policy denied flows again).
#[test]
fn unpinned_agent_cleans_up_on_sigterm() {
    let _one_at_a_time = serial();
    let require = std::env::var("SLUICE_REQUIRE_BPF").as_deref() == Ok("1");
    let Some((net, mut fx, inv)) = setup("t") else {
        return;
    };
    let pol = fx.dir.join("policy.yaml");
    write(&pol, &policy(&net, "8000"));
    let _listeners = listen(&net, &[8000, 8001]);
    let (child, rx) = spawn_agent(&pol, &inv, &["--no-pin"]);
    let pid = child.id();
    fx.agent = Some(child);
    let Some(_) = wait_line(&rx, "applied:", require) else {
        return;
    };
    assert!(!net.connects(8001), "enforced");
    assert!(
        ip(&["rule", "list"]).contains("lookup 2026"),
        "the proxy's rule is installed"
    );
    assert!(Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill")
        .success());
    let status = fx.agent.as_mut().expect("agent").wait().expect("wait");
    fx.agent = None;
    assert!(status.success(), "{status:?}");
    assert!(
        !ip(&["rule", "list"]).contains("lookup 2026"),
        "the routing rule is removed"
    );
    assert!(
        ip(&["route", "show", "table", "2026"]).trim().is_empty(),
        "and its table"
    );
    assert!(
        net.connects(8001),
        "the links are gone: nothing is enforced any more"
    );
}

fn policy(net: &PodNet, port: &str) -> String {
    format!(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {{name: client-out, namespace: live}}\nspec:\n  endpointSelector: {{matchLabels: {{app: client}}}}\n  egress:\n  - toCIDR: [{}/32]\n    toPorts: [{{ports: [{{port: \"{port}\", protocol: TCP}}]}}]\n",
        net.host_addr()
    )
}

#[test]
fn agent_enforces_and_follows_policy_changes() {
    let _one_at_a_time = serial();
    let require = std::env::var("SLUICE_REQUIRE_BPF").as_deref() == Ok("1");
    let Some((net, mut fx, inv)) = setup("b") else {
        return;
    };
    let pol = fx.dir.join("policy.yaml");
    write(&pol, &policy(&net, "8000"));
    let _listeners = listen(&net, &[8000, 8001]);

    let (child, rx) = spawn_agent(&pol, &inv, &["--no-pin", "--observe", "json"]);
    fx.agent = Some(child);
    let wait_for = |what: &str| wait_line(&rx, what, require).unwrap_or_default();
    let Some(first) = wait_line(&rx, "applied:", require) else {
        return;
    };
    assert!(
        first.contains(&format!("live/client={}", net.host_if)),
        "{first}"
    );
    assert!(net.connects(8000), "8000 is allowed");
    assert!(!net.connects(8001), "8001 is not allowed");

    // The drop is reported as a Hubble-shaped event, and replaying it with
    // `sluice simulate` gives the same verdict under the same policies.
    let dropped = wait_for("\"destination_port\":8001");
    assert!(dropped.contains("\"verdict\":\"DROPPED\""), "{dropped}");
    assert!(dropped.contains("\"pod_name\":\"client\""), "{dropped}");
    // Stamped, as Hubble stamps flows, when the agent read it.
    let flow: serde_json::Value = serde_json::from_str(&dropped).expect("one JSON object per line");
    let time = flow["flow"]["time"].as_str().unwrap_or_default();
    assert!(time.starts_with("20") && time.ends_with('Z'), "{dropped}");
    let replay = fx.dir.join("recorded.jsonl");
    write(&replay, &format!("{dropped}\n"));
    let sim = Command::new(SLUICE)
        .args([
            "simulate",
            "-p",
            pol.to_str().expect("path"),
            "-i",
            inv.to_str().expect("path"),
        ])
        .args(["-f", replay.to_str().expect("path"), "-o", "json"])
        .output()
        .expect("run simulate");
    let v = String::from_utf8_lossy(&sim.stdout);
    assert!(
        v.contains("\"verdict\": \"denied\"") && v.contains("\"changed\": 0"),
        "{v}"
    );

    write(&pol, &policy(&net, "8001"));
    wait_for("applied:");
    assert!(net.connects(8001), "after the change 8001 is allowed");
    assert!(!net.connects(8000), "after the change 8000 is refused");

    write(&pol, "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: broken, namespace: live}\nspec:\n  endpointSelector: {}\n  ingres: [{}]\n");
    wait_for("previous state stays enforced");
    assert!(
        net.connects(8001),
        "an invalid change keeps the enforced state"
    );
    assert!(
        !net.connects(8000),
        "an invalid change does not open anything"
    );
}

fn policy_tcp_udp(net: &PodNet, tcp: u16, udp: u16) -> String {
    format!(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {{name: client-out, namespace: live}}\nspec:\n  endpointSelector: {{matchLabels: {{app: client}}}}\n  egress:\n  - toCIDR: [{}/32]\n    toPorts: [{{ports: [{{port: \"{tcp}\", protocol: TCP}}, {{port: \"{udp}\", protocol: UDP}}]}}]\n",
        net.host_addr()
    )
}

/// Replies of an echo server on the test's host-side address: each
/// datagram is sent back to its sender, for `seconds` at most.
fn udp_echo(addr: &str, port: u16) -> std::net::UdpSocket {
    let s = std::net::UdpSocket::bind((addr, port)).expect("bind udp on the test's veth address");
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let echo = s.try_clone().expect("clone");
    std::thread::spawn(move || {
        let start = std::time::Instant::now();
        let mut buf = [0u8; 1500];
        while start.elapsed() < Duration::from_secs(120) {
            if let Ok((n, from)) = echo.recv_from(&mut buf) {
                let _ = echo.send_to(&buf[..n], from);
            }
        }
    });
    s
}

#[test]
fn pinned_enforcement_survives_an_agent_restart_and_is_adopted() {
    let _one_at_a_time = serial();
    let require = std::env::var("SLUICE_REQUIRE_BPF").as_deref() == Ok("1");
    let Some((net, run, inv)) = setup("c") else {
        return;
    };
    let mut fx = PinnedRun {
        run,
        bpffs: std::path::PathBuf::from(format!("/sys/fs/bpf/sluice-test-{}", std::process::id())),
    };
    let dir = fx.run.dir.clone();
    let pol = dir.join("policy.yaml");
    write(&pol, &policy_tcp_udp(&net, 8000, 9000));
    let host = net.host_addr();
    let _tcp = listen(&net, &[8000, 8001]);
    let _udp: Vec<_> = [9000u16, 9001]
        .iter()
        .map(|p| udp_echo(&host, *p))
        .collect();
    let bpffs = fx.bpffs.to_str().expect("path").to_owned();

    let (child, rx) = spawn_agent(&pol, &inv, &["--bpffs", &bpffs, "--metrics", "127.0.0.1:0"]);
    fx.run.agent = Some(child);
    let Some(metrics_addr) = metrics_addr(&rx, require) else {
        return;
    };
    let applied = wait_line(&rx, "applied:", require).unwrap_or_default();
    assert!(applied.contains(&net.host_if), "{applied}");

    // TCP and UDP, with UDP replies let back in by conntrack.
    assert!(net.connects(8000), "TCP 8000 is allowed");
    assert!(!net.connects(8001), "TCP 8001 is not");
    assert_eq!(
        net.udp_exchange(9000, "ping"),
        "ping",
        "UDP 9000 and its reply pass"
    );
    assert_eq!(net.udp_exchange(9001, "ping"), "", "UDP 9001 is dropped");

    // Metrics come from the kernel's counters: the drops above are there.
    std::thread::sleep(Duration::from_millis(400));
    let m = http_get(&metrics_addr);
    let series = format!(
        "sluice_packets_total{{interface=\"{}\",verdict=\"dropped\",reason=\"no_allow\"}}",
        net.host_if
    );
    assert!(sample(&m, &series).is_some_and(|v| v >= 2.0), "{m}");
    assert!(
        sample(&m, "sluice_updates_total").is_some_and(|v| v >= 1.0),
        "{m}"
    );
    let replies = format!(
        "sluice_packets_total{{interface=\"{}\",verdict=\"forwarded\",reason=\"conntrack_reply\"}}",
        net.host_if
    );
    assert!(sample(&m, &replies).is_some_and(|v| v >= 1.0), "{m}");

    // `sluice observe` reads the same pinned event rings: the drops made
    // above are in it, named and in Hubble's shape.
    let obs = Command::new(SLUICE)
        .args([
            "observe",
            "--bpffs",
            &bpffs,
            "-o",
            "json",
            "--duration-s",
            "1",
        ])
        .args([
            "-p",
            pol.to_str().expect("path"),
            "-i",
            inv.to_str().expect("path"),
        ])
        .output()
        .expect("run observe");
    let events = String::from_utf8_lossy(&obs.stdout);
    assert!(
        events
            .lines()
            .any(|l| l.contains("\"destination_port\":9001")
                && l.contains("\"verdict\":\"DROPPED\"")
                && l.contains("\"pod_name\":\"client\"")),
        "{events}"
    );

    // The agent dies without any chance to clean up: the pinned programs
    // and maps keep enforcing.
    if let Some(mut a) = fx.run.agent.take() {
        a.kill().expect("kill the agent");
        let _ = a.wait();
    }
    assert!(net.connects(8000), "with no agent, TCP 8000 still passes");
    assert!(
        !net.connects(8001),
        "with no agent, TCP 8001 is still dropped"
    );
    assert_eq!(net.udp_exchange(9001, "ping"), "", "and UDP 9001 too");

    // A new agent adopts the pinned state and applies the inputs as they
    // are now.
    write(&pol, &policy_tcp_udp(&net, 8001, 9001));
    let (child, rx) = spawn_agent(&pol, &inv, &["--bpffs", &bpffs]);
    fx.run.agent = Some(child);
    let adopted = wait_line(&rx, "adopted:", require).unwrap_or_default();
    assert!(adopted.contains("adopted: 1 endpoint,"), "{adopted}");
    wait_line(&rx, "applied:", require);
    assert!(net.connects(8001), "after the restart the new policy holds");
    assert!(!net.connects(8000), "and the old allow is gone");
    assert_eq!(net.udp_exchange(9001, "pong"), "pong");
    assert_eq!(net.udp_exchange(9000, "pong"), "");
    // One link per direction: the new agent's replaced the old ones.
    let ifindex = std::fs::read_to_string(format!("/sys/class/net/{}/ifindex", net.host_if))
        .expect("ifindex")
        .trim()
        .to_owned();
    let links: Vec<String> = std::fs::read_dir(
        fx.bpffs
            .join(format!("v{}/links", agent::datapath::LAYOUT_VERSION)),
    )
    .expect("links dir")
    .flatten()
    .map(|e| e.file_name().to_string_lossy().into_owned())
    .collect();
    let mut links = links;
    links.sort();
    assert_eq!(
        links,
        [format!("{ifindex}-egress"), format!("{ifindex}-ingress")]
    );

    // Teardown ends enforcement and leaves nothing pinned.
    if let Some(mut a) = fx.run.agent.take() {
        let _ = a.kill();
        let _ = a.wait();
    }
    let td = Command::new(SLUICE)
        .args(["teardown", "--bpffs", &bpffs])
        .output()
        .expect("teardown");
    assert!(
        td.status.success(),
        "{}",
        String::from_utf8_lossy(&td.stderr)
    );
    assert!(!fx.bpffs.exists(), "teardown removes the pin directory");
    // (The rule may have been left before this test by another binary's
    // agent: after teardown there is none at all.)
    assert!(
        !ip(&["rule", "list"]).contains("lookup 2026"),
        "and the routing rule"
    );
    assert!(
        ip(&["route", "show", "table", "2026"]).trim().is_empty(),
        "and its table"
    );
    assert!(net.connects(8000), "without sluice everything passes again");
}

#[test]
fn agent_enforces_a_compiled_artifact_and_refuses_a_corrupt_one() {
    let _one_at_a_time = serial();
    let require = std::env::var("SLUICE_REQUIRE_BPF").as_deref() == Ok("1");
    let Some((net, mut fx, inv)) = setup("d") else {
        return;
    };
    let pol = fx.dir.join("policy.yaml");
    let art = fx.dir.join("state.bin");
    write(&pol, &policy(&net, "8000"));
    let compiled = Command::new(SLUICE)
        .args(["compile", "-p", pol.to_str().expect("path")])
        .args(["-i", inv.to_str().expect("path")])
        .args(["-o", "binary", "--out", art.to_str().expect("path")])
        .output()
        .expect("compile");
    assert!(
        compiled.status.success(),
        "{}",
        String::from_utf8_lossy(&compiled.stderr)
    );
    let _listeners = listen(&net, &[8000, 8001]);
    let (child, rx) = spawn_sluice(&[
        "agent",
        "--artifact",
        art.to_str().expect("path"),
        "--no-pin",
    ]);
    fx.agent = Some(child);
    let Some(applied) = wait_line(&rx, "applied:", require) else {
        return;
    };
    assert!(
        applied.contains(&format!("live/client={}", net.host_if)),
        "{applied}"
    );
    assert!(net.connects(8000));
    assert!(!net.connects(8001));
    // A truncated artifact is refused and the enforced state stays.
    let bytes = std::fs::read(&art).expect("artifact");
    std::fs::write(&art, &bytes[..bytes.len() / 2]).expect("truncate");
    wait_line(&rx, "previous state stays enforced", require);
    assert!(net.connects(8000), "the enforced state stays");
    assert!(!net.connects(8001), "and nothing opens");
}

#[test]
fn agent_warns_that_kafka_rules_are_not_enforced_live() {
    let _one_at_a_time = serial();
    let require = std::env::var("SLUICE_REQUIRE_BPF").as_deref() == Ok("1");
    let Some((net, mut fx, inv)) = setup("i") else {
        return;
    };
    let pol = fx.dir.join("policy.yaml");
    write(
        &pol,
        &format!(
            "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {{name: client-out, namespace: live}}\nspec:\n  endpointSelector: {{matchLabels: {{app: client}}}}\n  egress:\n  - toCIDR: [{}/32]\n    toPorts:\n    - ports: [{{port: \"9092\", protocol: TCP}}]\n      rules:\n        kafka: [{{role: produce, topic: orders}}]\n",
            net.host_addr()
        ),
    );
    let (child, rx) = spawn_agent(&pol, &inv, &["--no-pin"]);
    fx.agent = Some(child);
    let Some(warning) = wait_line(&rx, "Kafka rules", require) else {
        return;
    };
    assert!(
        warning.contains("1 port has Kafka rules") && warning.contains("refuses"),
        "{warning}"
    );
}

/// A policy in audit mode drops nothing: the connection it would deny is
/// made, the agent reports it as AUDIT (Hubble shape, with the policy
/// named), and metrics count it by policy.
#[test]
fn a_policy_in_audit_mode_reports_and_drops_nothing() {
    let _one_at_a_time = serial();
    let require = std::env::var("SLUICE_REQUIRE_BPF").as_deref() == Ok("1");
    let Some((net, fx, inv)) = setup("u") else {
        return;
    };
    let mut fx = PinnedRun {
        bpffs: std::path::PathBuf::from(format!("/sys/fs/bpf/sluice-audit-{}", std::process::id())),
        run: fx,
    };
    let pol = fx.run.dir.join("policy.yaml");
    write(
        &pol,
        &policy(&net, "8000").replace(
            "metadata: {name: client-out, namespace: live}",
            "metadata: {name: client-out, namespace: live, annotations: {policy.sluice.dev/mode: audit}}",
        ),
    );
    let _listeners = listen(&net, &[8000, 8001]);
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
            "json",
        ],
    );
    fx.run.agent = Some(child);
    let Some(addr) = metrics_addr(&rx, require) else {
        return;
    };
    let Some(_) = wait_line(&rx, "applied:", require) else {
        return;
    };
    assert!(net.connects(8000), "allowed by the audited policy");
    assert!(
        net.connects(8001),
        "the audited policy would deny this, and drops nothing"
    );
    // The pod's own other traffic (its stack's housekeeping) may be
    // audited too: the event of the connection made here is the one to
    // check.
    let (event, v) = (0..20)
        .find_map(|_| {
            let line = wait_line(&rx, "\"AUDIT\"", true)?;
            let v: serde_json::Value = serde_json::from_str(&line).expect("JSON event");
            (v["flow"]["l4"]["TCP"]["destination_port"] == 8001).then_some((line, v))
        })
        .expect("an AUDIT event for the connection to 8001");
    assert_eq!(v["flow"]["verdict"], "AUDIT");
    assert_eq!(
        v["flow"]["egress_denied_by"][0]["name"], "client-out",
        "{event}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = http_get(&addr);
        let by_policy = sample(
            &text,
            "sluice_audit_total{policy=\"CiliumNetworkPolicy live/client-out\"}",
        );
        if by_policy.is_some_and(|v| v >= 1.0) {
            // The kernel counts every packet it passed in audit mode (a
            // retransmitted SYN too); the policy count comes from events.
            let series = format!(
                "sluice_packets_total{{interface=\"{}\",verdict=\"audit\",reason=\"policy_audit\"}}",
                net.host_if
            );
            assert!(sample(&text, &series).is_some_and(|v| v >= 1.0), "{text}");
            break;
        }
        assert!(Instant::now() < deadline, "no audit metric: {text}");
        std::thread::sleep(Duration::from_millis(200));
    }
}
