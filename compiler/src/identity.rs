//! Numeric security identities, as Cilium numbers them.

use crate::labels::{Label, LabelSet};
use policy_lang::ir::Cidr;
use serde::Serialize;

pub const WILDCARD: u32 = 0;
pub const HOST: u32 = 1;
pub const WORLD: u32 = 2;
pub const UNMANAGED: u32 = 3;
pub const HEALTH: u32 = 4;
pub const INIT: u32 = 5;
pub const REMOTE_NODE: u32 = 6;
pub const KUBE_APISERVER: u32 = 7;
pub const INGRESS: u32 = 8;
pub const WORLD_IPV4: u32 = 9;
pub const WORLD_IPV6: u32 = 10;
/// The first identity allocated to endpoints; lower numbers are reserved.
pub const FIRST_ENDPOINT: u32 = 256;
/// Node-local CIDR identities (`IDENTITY_LOCAL_SCOPE` for CIDRs).
pub const CIDR_SCOPE: u32 = 0x0100_0000;
/// Node-local remote-node identities, one per node.
pub const NODE_SCOPE: u32 = 0x0200_0000;

/// The reserved identities with their names, in numeric order.
pub const RESERVED: &[(u32, &str)] = &[
    (HOST, "host"),
    (WORLD, "world"),
    (UNMANAGED, "unmanaged"),
    (HEALTH, "health"),
    (INIT, "init"),
    (REMOTE_NODE, "remote-node"),
    (KUBE_APISERVER, "kube-apiserver"),
    (INGRESS, "ingress"),
    (WORLD_IPV4, "world-ipv4"),
    (WORLD_IPV6, "world-ipv6"),
];

pub fn reserved_name(id: u32) -> Option<&'static str> {
    RESERVED.iter().find(|(n, _)| *n == id).map(|(_, s)| *s)
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum IdKind {
    Reserved,
    Endpoint,
    Cidr { prefix: String },
    Node { node: String },
}

#[derive(Clone, Debug, Serialize)]
pub struct IdentityInfo {
    pub id: u32,
    pub labels: LabelSet,
    #[serde(flatten)]
    pub kind: IdKind,
}

/// Labels of a reserved identity.
pub fn reserved_labels(id: u32) -> LabelSet {
    let mut v = vec![];
    if let Some(name) = reserved_name(id) {
        v.push(Label::reserved(name));
    }
    // kube-apiserver is a remote node too: `remote-node` selects it.
    if id == KUBE_APISERVER {
        v.push(Label::reserved("remote-node"));
    }
    // World identities of a family also carry the plain world label.
    if matches!(id, WORLD_IPV4 | WORLD_IPV6) {
        v.push(Label::reserved("world"));
    }
    LabelSet::from_labels(v)
}

pub fn cidr_labels(c: &Cidr) -> LabelSet {
    LabelSet::from_labels(vec![
        Label::new("cidr", &c.to_string(), ""),
        Label::reserved("world"),
    ])
}
