//! State updates in the kernel: an established connection is judged again
//! after an update (conntrack does not keep a connection open that the new
//! state denies, nor drop one it still allows), replies follow their
//! connection, and a state applied over another gives exactly the verdicts
//! of the new one (entries, addresses and prefixes of the old one removed
//! or shadowed). Needs root; fails rather than skips with
//! SLUICE_REQUIRE_BPF=1.

use agent::datapath::{Datapath, FROM_ENDPOINT, TO_ENDPOINT};
use agent::packet;
use compiler::compile::Compiled;
use std::collections::HashMap;
use std::net::Ipv4Addr;

const INVENTORY: &str = "
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Namespace, metadata: {name: prod}}
- apiVersion: v1
  kind: Pod
  metadata: {name: server, namespace: prod, labels: {app: server}}
  spec: {containers: [{name: c, ports: [{containerPort: 80}]}]}
  status: {podIP: 10.0.0.10}
- apiVersion: v1
  kind: Pod
  metadata: {name: client, namespace: prod, labels: {app: client}}
  spec: {containers: [{name: c}]}
  status: {podIP: 10.0.0.20}
";

fn state(policy: &str) -> Compiled {
    agent::testnet::compile_texts(policy, INVENTORY)
}

/// Server egress only to a documentation prefix: its replies to the
/// client pass only as replies of a tracked connection.
const SERVER_EGRESS: &str = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: server-out, namespace: prod}\nspec:\n  endpointSelector: {matchLabels: {app: server}}\n  egress:\n  - toCIDR: [203.0.113.0/24]\n";

fn server_ingress(from: &str) -> String {
    format!(
        "{SERVER_EGRESS}---\napiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {{name: server-in, namespace: prod}}\nspec:\n  endpointSelector: {{matchLabels: {{app: server}}}}\n  ingress:\n  - {from}\n    toPorts: [{{ports: [{{port: \"80\", protocol: TCP}}]}}]\n"
    )
}

fn datapath() -> Option<Datapath> {
    match Datapath::load() {
        Ok(d) => Some(d),
        Err(e) => {
            assert!(
                std::env::var("SLUICE_REQUIRE_BPF").as_deref() != Ok("1"),
                "SLUICE_REQUIRE_BPF=1 but the datapath did not load: {e}"
            );
            eprintln!("SKIPPED: {e}");
            None
        }
    }
}

const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 20);
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 10);
const OUTSIDE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 7);

fn keys() -> HashMap<String, u32> {
    HashMap::from([("prod/server".to_owned(), 1), ("prod/client".to_owned(), 2)])
}

fn run(dp: &Datapath, prog: &str, pkt: &[u8], mark: u32) -> bool {
    dp.test_run(prog, pkt, mark, 1).expect("test run").0 == 0
}

#[test]
fn an_update_judges_established_connections_again() {
    let Some(mut dp) = datapath() else { return };
    let allow = state(&server_ingress(
        "fromEndpoints: [{matchLabels: {app: client}}]",
    ));
    dp.apply(&allow, &keys(), None, true).expect("apply");
    let syn = packet::tcp(CLIENT, SERVER, 40000, 80, 0x02);
    let ack = packet::tcp(CLIENT, SERVER, 40000, 80, 0x10);
    let reply = packet::tcp(SERVER, CLIENT, 80, 40000, 0x12);
    assert!(
        run(&dp, TO_ENDPOINT, &syn, 1),
        "the client may open the connection"
    );
    assert!(run(&dp, TO_ENDPOINT, &ack, 1), "and use it");
    assert!(
        run(&dp, FROM_ENDPOINT, &reply, 1),
        "the server's replies pass"
    );

    // Still allowed by the new state (a different policy, same verdict):
    // the established connection keeps working.
    let also = state(&server_ingress(
        "fromEndpoints: [{matchLabels: {k8s:io.kubernetes.pod.namespace: prod}}]",
    ));
    dp.apply(&also, &keys(), None, true).expect("apply");
    assert!(
        run(&dp, TO_ENDPOINT, &ack, 1),
        "an allowed connection survives the update"
    );

    // Denied by the next state: the very next packet of the established
    // connection is dropped, and its replies no longer pass.
    let deny = state(&server_ingress("fromCIDR: [192.0.2.0/24]"));
    dp.apply(&deny, &keys(), None, true).expect("apply");
    assert!(
        !run(&dp, TO_ENDPOINT, &ack, 1),
        "a connection the new state denies is cut"
    );
    assert!(
        !run(&dp, FROM_ENDPOINT, &reply, 1),
        "its replies are not let through as if it were still open"
    );
    // The CIDR the new state allows does pass, through the ipcache trie.
    assert!(run(
        &dp,
        TO_ENDPOINT,
        &packet::tcp(OUTSIDE, SERVER, 40001, 80, 0x02),
        1
    ));
}

#[test]
fn a_state_applied_over_another_gives_only_its_own_verdicts() {
    let Some(mut dp) = datapath() else { return };
    // The first state has prefixes, a deny and an allow from the client;
    // the second has none of them.
    let first = state(&format!(
        "{}---\n{}",
        server_ingress("fromCIDR: [192.0.2.0/24, 198.51.100.0/24]"),
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: deny-client, namespace: prod}\nspec:\n  endpointSelector: {matchLabels: {app: server}}\n  ingressDeny:\n  - fromEndpoints: [{matchLabels: {app: client}}]\n"
    ));
    let second = state(&server_ingress("fromCIDR: [192.0.2.128/25]"));
    let from = |a: Ipv4Addr, port: u16| packet::tcp(a, SERVER, port, 80, 0x02);
    dp.apply(&first, &keys(), None, true).expect("apply");
    assert!(run(&dp, TO_ENDPOINT, &from(OUTSIDE, 1), 1));
    assert!(run(
        &dp,
        TO_ENDPOINT,
        &from(Ipv4Addr::new(198, 51, 100, 1), 2),
        1
    ));
    assert!(
        !run(&dp, TO_ENDPOINT, &from(CLIENT, 3), 1),
        "denied in the first state"
    );
    dp.apply(&second, &keys(), None, true).expect("apply");
    // 192.0.2.7 is outside the /25 of the second state: world, dropped.
    assert!(!run(&dp, TO_ENDPOINT, &from(OUTSIDE, 4), 1));
    assert!(run(
        &dp,
        TO_ENDPOINT,
        &from(Ipv4Addr::new(192, 0, 2, 200), 5),
        1
    ));
    assert!(!run(
        &dp,
        TO_ENDPOINT,
        &from(Ipv4Addr::new(198, 51, 100, 1), 6),
        1
    ));
    assert!(
        !run(&dp, TO_ENDPOINT, &from(CLIENT, 7), 1),
        "no allow for the client"
    );
    // And back: the first state's verdicts return exactly.
    dp.apply(&first, &keys(), None, true).expect("apply");
    assert!(run(&dp, TO_ENDPOINT, &from(OUTSIDE, 8), 1));
    assert!(!run(
        &dp,
        TO_ENDPOINT,
        &from(Ipv4Addr::new(203, 0, 113, 1), 9),
        1
    ));
}
