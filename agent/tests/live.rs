//! Live enforcement: a network namespace as a pod, joined to the root
//! namespace by a veth pair the test creates; the datapath attached to the
//! host side; real TCP connections from the pod to a server on the
//! host-side address (an address of this test's own interface). Checks that
//! the allowed port connects, the denied port does not, and that policy
//! updates adding and removing allows take effect in place. Everything the
//! test makes is removed on exit, also on failure. Needs root; fails rather
//! than skips with SLUICE_REQUIRE_BPF=1.

use agent::datapath::{ifindex, Datapath};
use agent::testnet::{compile_texts, PodNet};
use compiler::compile::Compiled;
use std::collections::HashMap;
use std::net::TcpListener;
use std::time::Duration;

fn state(net: &PodNet, ports: &str) -> Compiled {
    let policy = format!(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {{name: client-out, namespace: live}}\nspec:\n  endpointSelector: {{matchLabels: {{app: client}}}}\n  egress:\n  - toCIDR: [{}/32]\n    toPorts: [{{ports: [{ports}]}}]\n",
        net.host_addr()
    );
    let inv = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: client, namespace: live, labels: {{app: client}}}}\nspec: {{containers: [{{name: c}}]}}\nstatus: {{podIP: {}}}\n",
        net.pod_addr()
    );
    compile_texts(&policy, &inv)
}

/// The test's pod network (with IPv6 addresses too when asked) and a
/// loaded datapath; `None` (the test is skipped) when this machine cannot
/// have them, which fails the test with SLUICE_REQUIRE_BPF=1.
fn setup(tag: &str, ipv6: bool) -> Option<(PodNet, Datapath)> {
    let require = std::env::var("SLUICE_REQUIRE_BPF").as_deref() == Ok("1");
    let Some(net) = PodNet::create(tag).filter(|n| !ipv6 || n.add_ipv6()) else {
        assert!(
            !require,
            "SLUICE_REQUIRE_BPF=1 but a network namespace and veth pair could not be created"
        );
        eprintln!("SKIPPED: cannot create network namespaces here (root and iproute2 needed)");
        return None;
    };
    match Datapath::load() {
        Ok(d) => Some((net, d)),
        Err(e) => {
            assert!(
                !require,
                "SLUICE_REQUIRE_BPF=1 but the datapath did not load: {e}"
            );
            eprintln!("SKIPPED: {e}");
            None
        }
    }
}

#[test]
fn allowed_port_connects_denied_port_does_not() {
    let Some((net, mut dp)) = setup("a", false) else {
        return;
    };
    // Servers on the test's own host-side address; they only need to accept.
    let _listeners: Vec<TcpListener> = [8000u16, 8001]
        .iter()
        .map(|p| {
            TcpListener::bind((net.host_addr().as_str(), *p))
                .expect("bind on the test's veth address")
        })
        .collect();
    let keys = HashMap::from([(
        "live/client".to_owned(),
        ifindex(&net.host_if).expect("ifindex"),
    )]);
    dp.apply(
        &state(&net, r#"{port: "8000", protocol: TCP}"#),
        &keys,
        None,
        false,
    )
    .expect("apply");
    dp.attach(&net.host_if).expect("attach");
    std::thread::sleep(Duration::from_millis(100));
    assert!(net.connects(8000), "port 8000 is allowed and must connect");
    assert!(
        !net.connects(8001),
        "port 8001 is not allowed and must not connect"
    );

    // Update: allow 8001 too, in place, while attached.
    let both = r#"{port: "8000", protocol: TCP}, {port: "8001", protocol: TCP}"#;
    dp.apply(&state(&net, both), &keys, None, false)
        .expect("update");
    assert!(
        net.connects(8001),
        "after the update port 8001 must connect"
    );
    assert!(net.connects(8000), "port 8000 still connects");

    // An update that removes an allow: stale entries must not survive.
    dp.apply(
        &state(&net, r#"{port: "8001", protocol: TCP}"#),
        &keys,
        None,
        false,
    )
    .expect("update");
    assert!(
        !net.connects(8000),
        "after the update port 8000 must be refused"
    );
    assert!(net.connects(8001), "port 8001 still connects");
}

#[test]
fn ipv6_allowed_port_connects_denied_port_does_not() {
    let Some((net, mut dp)) = setup("s", true) else {
        return;
    };
    let host = net.host_addr6();
    let _listeners: Vec<TcpListener> = [8000u16, 8001]
        .iter()
        .map(|p| TcpListener::bind((host.as_str(), *p)).expect("bind on the test's IPv6 address"))
        .collect();
    let policy = format!(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {{name: client-out, namespace: live}}\nspec:\n  endpointSelector: {{matchLabels: {{app: client}}}}\n  egress:\n  - toCIDR: [\"{host}/128\"]\n    toPorts: [{{ports: [{{port: \"8000\", protocol: TCP}}]}}]\n"
    );
    let inv = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: client, namespace: live, labels: {{app: client}}}}\nspec: {{containers: [{{name: c}}]}}\nstatus: {{podIPs: [{{ip: {}}}, {{ip: \"{}\"}}]}}\n",
        net.pod_addr(),
        net.pod_addr6()
    );
    let c = compile_texts(&policy, &inv);
    let keys = HashMap::from([(
        "live/client".to_owned(),
        ifindex(&net.host_if).expect("ifindex"),
    )]);
    dp.apply(&c, &keys, None, false).expect("apply");
    dp.attach(&net.host_if).expect("attach");
    std::thread::sleep(Duration::from_millis(100));
    // Neighbour discovery passes whatever the policy, so the address
    // resolves; then the policy decides.
    assert!(
        net.connects_to(&host, 8000),
        "8000 over IPv6 is allowed and must connect"
    );
    assert!(
        !net.connects_to(&host, 8001),
        "8001 over IPv6 is not allowed"
    );
    // IPv4 to the same port (a listener is there) is not allowed by an
    // IPv6 CIDR.
    let _v4 = TcpListener::bind((net.host_addr().as_str(), 8000)).expect("bind IPv4");
    assert!(!net.connects(8000), "the IPv6 allow does not open IPv4");
}
