//! Which interfaces the agent may attach to, on real links this test makes
//! (and removes): only a veth whose peer is in another network namespace
//! (or a name the user lists), never a bridge, a tun, a veth whose peer is
//! here, loopback or the uplink. Needs root; fails rather than skips with
//! SLUICE_REQUIRE_BPF=1.

use agent::iface::{check, default_route_devices};
use agent::testnet::{sh, PodNet};

/// Links made by the test, deleted on drop.
struct Links(Vec<String>);

impl Drop for Links {
    fn drop(&mut self) {
        for l in &self.0 {
            sh(&["ip", "link", "del", l]);
        }
    }
}

#[test]
fn only_pod_veths_are_endpoint_interfaces() {
    let require = std::env::var("SLUICE_REQUIRE_BPF").as_deref() == Ok("1");
    let Some(pod) = PodNet::create("if") else {
        assert!(
            !require,
            "SLUICE_REQUIRE_BPF=1 but network namespaces cannot be created"
        );
        eprintln!("SKIPPED: cannot create network namespaces here");
        return;
    };
    let id = std::process::id() % 100_000;
    let (br, dm, va, vb) = (
        format!("slbr{id}"),
        format!("sltn{id}"),
        format!("slva{id}"),
        format!("slvb{id}"),
    );
    let _links = Links(vec![br.clone(), dm.clone(), va.clone()]);
    assert!(sh(&["ip", "link", "add", &br, "type", "bridge"]));
    // A tun device: virtual, not a veth (the dummy module is not in every
    // kernel).
    assert!(sh(&["ip", "tuntap", "add", "dev", &dm, "mode", "tun"]));
    assert!(sh(&[
        "ip", "link", "add", &va, "type", "veth", "peer", "name", &vb
    ]));
    let uplinks = default_route_devices();

    assert_eq!(check(&pod.host_if, &[], &uplinks), Ok(()), "a pod's veth");
    let refused = |name: &str, globs: &[String]| {
        check(name, globs, &uplinks)
            .expect_err("refused")
            .to_string()
    };
    assert!(refused(&br, &[]).contains("is a bridge"));
    assert!(
        refused(&br, &["slbr*".to_owned()]).contains("is a bridge"),
        "not even when listed"
    );
    assert!(refused(&dm, &[]).contains("not a pod's veth"));
    assert_eq!(
        check(&dm, &["sltn*".to_owned()], &uplinks),
        Ok(()),
        "a listed name is taken"
    );
    assert!(refused(&va, &[]).contains("peer is in this network namespace"));
    assert!(refused("lo", &["*".to_owned()]).contains("loopback"));
    for up in &uplinks {
        assert!(
            refused(up, &["*".to_owned()]).contains("default route"),
            "{up}"
        );
    }
}
