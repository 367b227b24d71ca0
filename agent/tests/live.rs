//! Live enforcement: a network namespace as a pod, joined to the root
//! namespace by a veth pair the test creates; the datapath attached to the
//! host side; real TCP connections from the pod to a server on the
//! host-side address (an address of this test's own interface). Checks that
//! the allowed port connects, the denied port does not, and that a policy
//! update opens it. Everything the test makes is removed on exit, also on
//! failure. Needs root; fails rather than skips with SLUICE_REQUIRE_BPF=1.

use agent::datapath::{ifindex, Datapath};
use compiler::compile::{compile, Compiled, Config};
use compiler::inventory;
use std::collections::HashMap;
use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

fn sh(args: &[&str]) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .status()
        .is_ok_and(|s| s.success())
}

/// The namespace and veth pair; removed on drop.
struct Net {
    ns: String,
    host_if: String,
}

impl Drop for Net {
    fn drop(&mut self) {
        sh(&["ip", "link", "del", &self.host_if]);
        sh(&["ip", "netns", "del", &self.ns]);
    }
}

fn setup(subnet: u8) -> Option<Net> {
    let id = std::process::id() % 100_000;
    let net = Net {
        ns: format!("sl-live-{id}"),
        host_if: format!("slh{id}"),
    };
    let pod_if = format!("slp{id}");
    let host_addr = format!("10.199.{subnet}.1/24");
    let pod_addr = format!("10.199.{subnet}.2/24");
    let ok = sh(&["ip", "netns", "add", &net.ns])
        && sh(&[
            "ip",
            "link",
            "add",
            &net.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &pod_if,
        ])
        && sh(&["ip", "link", "set", &pod_if, "netns", &net.ns])
        && sh(&["ip", "addr", "add", &host_addr, "dev", &net.host_if])
        && sh(&["ip", "link", "set", &net.host_if, "up"])
        && sh(&[
            "ip", "netns", "exec", &net.ns, "ip", "addr", "add", &pod_addr, "dev", &pod_if,
        ])
        && sh(&[
            "ip", "netns", "exec", &net.ns, "ip", "link", "set", &pod_if, "up",
        ])
        && sh(&[
            "ip", "netns", "exec", &net.ns, "ip", "link", "set", "lo", "up",
        ]);
    ok.then_some(net)
}

fn state(subnet: u8, ports: &str) -> Compiled {
    let policy = format!(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {{name: client-out, namespace: live}}\nspec:\n  endpointSelector: {{matchLabels: {{app: client}}}}\n  egress:\n  - toCIDR: [10.199.{subnet}.1/32]\n    toPorts: [{{ports: [{ports}]}}]\n"
    );
    let inv = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: client, namespace: live, labels: {{app: client}}}}\nspec: {{containers: [{{name: c}}]}}\nstatus: {{podIP: 10.199.{subnet}.2}}\n"
    );
    let loaded = policy_lang::parse_source("policy.yaml", &policy, &Default::default());
    assert_eq!(loaded.error_count(), 0, "{:?}", loaded.diagnostics);
    let mut sources = loaded.sources.clone();
    let mut diags = Vec::new();
    let inv = inventory::parse_str("inventory.yaml", &inv, &mut sources, &mut diags);
    let (c, d) = compile(&loaded.set, &sources, &inv, &Config::default());
    assert!(d.iter().all(|x| !x.is_error()), "{d:?}");
    c
}

/// Whether a TCP connection from inside the namespace succeeds (3 s bound).
fn connects(ns: &str, addr: &str, port: u16) -> bool {
    sh(&[
        "ip",
        "netns",
        "exec",
        ns,
        "timeout",
        "3",
        "bash",
        "-c",
        &format!("exec 3<>/dev/tcp/{addr}/{port}"),
    ])
}

#[test]
fn allowed_port_connects_denied_port_does_not() {
    let require = std::env::var("SLUICE_REQUIRE_BPF").as_deref() == Ok("1");
    let subnet = (std::process::id() % 200) as u8 + 20;
    let Some(net) = setup(subnet) else {
        assert!(
            !require,
            "SLUICE_REQUIRE_BPF=1 but a network namespace and veth pair could not be created"
        );
        eprintln!("SKIPPED: cannot create network namespaces here (root and iproute2 needed)");
        return;
    };
    let mut dp = match Datapath::load() {
        Ok(d) => d,
        Err(e) => {
            assert!(
                !require,
                "SLUICE_REQUIRE_BPF=1 but the datapath did not load: {e}"
            );
            eprintln!("SKIPPED: {e}");
            return;
        }
    };
    let host = format!("10.199.{subnet}.1");
    // Servers on the test's own host-side address, bounded in time.
    let mut listeners = Vec::new();
    for port in [8000u16, 8001] {
        let l = TcpListener::bind((host.as_str(), port)).expect("bind on the test's veth address");
        l.set_nonblocking(true).expect("nonblocking");
        listeners.push(l);
    }
    let keys = HashMap::from([(
        "live/client".to_owned(),
        ifindex(&net.host_if).expect("ifindex"),
    )]);
    dp.apply(
        &state(subnet, r#"{port: "8000", protocol: TCP}"#),
        &keys,
        None,
        false,
    )
    .expect("apply");
    dp.attach(&net.host_if).expect("attach");
    std::thread::sleep(Duration::from_millis(100));

    assert!(
        connects(&net.ns, &host, 8000),
        "port 8000 is allowed and must connect"
    );
    assert!(
        !connects(&net.ns, &host, 8001),
        "port 8001 is not allowed and must not connect"
    );

    // Update: allow 8001 too, in place, while attached.
    dp.apply(
        &state(
            subnet,
            r#"{port: "8000", protocol: TCP}, {port: "8001", protocol: TCP}"#,
        ),
        &keys,
        None,
        false,
    )
    .expect("update");
    assert!(
        connects(&net.ns, &host, 8001),
        "after the update port 8001 must connect"
    );
    assert!(connects(&net.ns, &host, 8000), "port 8000 still connects");

    // An update that removes an allow: stale entries must not survive.
    dp.apply(
        &state(subnet, r#"{port: "8001", protocol: TCP}"#),
        &keys,
        None,
        false,
    )
    .expect("update");
    assert!(
        !connects(&net.ns, &host, 8000),
        "after the update port 8000 must be refused"
    );
    assert!(connects(&net.ns, &host, 8001), "port 8001 still connects");
    drop(listeners);
    drop(dp);
    drop(net);
}
