//! Judging flows against compiled state, doing the datapath's lookups:
//! egress at the source endpoint, then ingress at the destination endpoint.

use crate::flow::{Flow, PeerRef, Verdict};
use compiler::compile::{Compiled, Endpoint};
use compiler::identity::{self, reserved_name, HOST, REMOTE_NODE, WORLD};
use compiler::mapstate::{Entry, Key};
use policy_lang::ir::Direction;
use serde::Serialize;
use std::net::IpAddr;

/// Origin index of the wildcard entry of a direction no policy enforces.
pub const DEFAULT_ALLOW: u32 = u32::MAX;
/// Origin index of the allow-localhost entry.
pub const ALLOW_LOCALHOST: u32 = u32::MAX - 1;

/// One side of a flow, resolved against the compiled state.
#[derive(Clone, Debug)]
pub struct Side<'a> {
    pub endpoint: Option<&'a Endpoint>,
    pub ip: Option<IpAddr>,
    /// For entities: the reserved identity it stands for.
    pub entity: Option<u32>,
    /// The node the peer runs on (pods), or is (node addresses).
    pub node: Option<&'a str>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Step<'a> {
    pub direction: Direction,
    /// The endpoint whose policy map was consulted.
    pub endpoint: &'a str,
    /// The peer's identity as that endpoint's datapath sees it.
    pub remote_identity: u32,
    pub enforced: bool,
    /// The deciding map entry, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<Key>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entry: Option<&'a Entry>,
    pub verdict: Verdict,
    /// The proxy's decision, when the entry redirects to L7 and the flow
    /// carries a request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub l7: Option<L7Step>,
    /// Allowed here, but the endpoint's policies in audit mode, enforced,
    /// would drop it: the datapath passes it with an AUDIT verdict.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit: Option<AuditStep<'a>>,
}

/// What the full state (policies in audit mode enforced) decides for an
/// allowed step: a deny entry, or default deny when `entry` is `None`.
#[derive(Clone, Debug, Serialize)]
pub struct AuditStep<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<Key>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entry: Option<&'a Entry>,
}

/// What the L7 policy of a redirected port said.
#[derive(Clone, Debug, Serialize)]
pub struct L7Step {
    pub protocol: compiler::l7::L7Kind,
    pub verdict: Verdict,
    /// The rules that allowed the request (as written), or what an L4-only
    /// allow means here.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<String>,
    /// The answer a denied request gets: 403 for HTTP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Outcome<'a> {
    pub verdict: Verdict,
    /// The direction whose lookup decided: the denying one, else the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<Direction>,
    pub steps: Vec<Step<'a>>,
    /// The first direction an audited policy would have dropped (the flow
    /// passes: its verdict is the enforced state's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit: Option<Direction>,
}

/// Resolves a flow's side; `Err` names what is unknown.
pub fn resolve<'a>(c: &'a Compiled, p: &PeerRef) -> Result<Side<'a>, String> {
    match p {
        PeerRef::Pod(name) => {
            let ep = c
                .endpoint(name)
                .ok_or_else(|| format!("no endpoint `{name}` in the compiled state"))?;
            Ok(Side {
                endpoint: Some(ep),
                ip: ep.ips.first().copied(),
                entity: None,
                node: ep.node.as_deref(),
            })
        }
        PeerRef::Ip(ip) => {
            if let Some(ep) = c.endpoint_by_ip(*ip) {
                return Ok(Side {
                    endpoint: Some(ep),
                    ip: Some(*ip),
                    entity: None,
                    node: ep.node.as_deref(),
                });
            }
            let node = c.ipcache_lookup(*ip).and_then(|e| e.node.as_deref());
            let host_ep = node.and_then(|n| {
                c.endpoints
                    .iter()
                    .find(|e| e.host && e.node.as_deref() == Some(n))
            });
            Ok(Side {
                endpoint: host_ep,
                ip: Some(*ip),
                entity: None,
                node,
            })
        }
        PeerRef::Entity(name) => {
            let id = identity::RESERVED
                .iter()
                .find(|(_, n)| n == name)
                .map(|(id, _)| *id)
                .ok_or_else(|| format!("unknown entity `{name}`"))?;
            Ok(Side {
                endpoint: None,
                ip: None,
                entity: Some(id),
                node: None,
            })
        }
    }
}

/// The identity of `peer` as seen by the datapath of `observer`'s node.
pub fn seen_from(c: &Compiled, peer: &Side, observer: &Endpoint) -> u32 {
    if let Some(ep) = peer.endpoint {
        if !ep.host {
            return ep.identity;
        }
    }
    if let Some(ip) = peer.ip {
        return c.identity_of_ip(ip, observer.node.as_deref());
    }
    match peer.entity {
        // `host` is the observer's own node; `remote-node` any other.
        Some(HOST) => HOST,
        Some(REMOTE_NODE) => REMOTE_NODE,
        // In a dual-stack cluster outside traffic is world-ipv4 or -ipv6;
        // a flow naming `world` means IPv4.
        Some(WORLD) if c.identity(identity::WORLD_IPV4).is_some() => identity::WORLD_IPV4,
        Some(id) if c.identity(id).is_some() => id,
        Some(_) | None => WORLD,
    }
}

fn step<'a>(
    c: &'a Compiled,
    ep: &'a Endpoint,
    remote: u32,
    dir: Direction,
    proto: u8,
    port: u16,
) -> Step<'a> {
    let egress = dir == Direction::Egress;
    let hit = c.maps[ep.map].lookup(remote, egress, proto, port);
    let verdict = match hit {
        Some(h) if !h.entry.deny => Verdict::Allowed,
        _ => Verdict::Denied,
    };
    // The audit map is consulted for what the enforced state allows, as
    // the datapath does.
    let audit = match (verdict, ep.audit_map) {
        (Verdict::Allowed, Some(m)) => match c.maps[m].lookup(remote, egress, proto, port) {
            Some(h) if !h.entry.deny => None,
            Some(h) => Some(AuditStep {
                key: Some(*h.key),
                entry: Some(h.entry),
            }),
            None => Some(AuditStep {
                key: None,
                entry: None,
            }),
        },
        _ => None,
    };
    Step {
        direction: dir,
        endpoint: &ep.name,
        remote_identity: remote,
        enforced: ep.enforced[usize::from(egress)],
        key: hit.map(|h| *h.key),
        entry: hit.map(|h| h.entry),
        verdict,
        l7: None,
        audit,
    }
}

/// A flow with both sides resolved against the compiled state: what the
/// datapath knows when a packet arrives.
#[derive(Clone, Debug)]
pub struct Resolved<'a> {
    pub src: Side<'a>,
    pub dst: Side<'a>,
    pub protocol: u8,
    pub port: u16,
}

/// Resolves a flow's peers (names, addresses, entities).
pub fn resolve_flow<'a>(c: &'a Compiled, flow: &Flow) -> Result<Resolved<'a>, String> {
    Ok(Resolved {
        src: resolve(c, &flow.from)?,
        dst: resolve(c, &flow.to)?,
        protocol: flow.protocol,
        port: flow.port,
    })
}

/// Judges one flow against the compiled state.
pub fn simulate<'a>(c: &'a Compiled, flow: &Flow) -> Result<Outcome<'a>, String> {
    let mut o = judge(c, &resolve_flow(c, flow)?);
    if let Some(req) = &flow.l7 {
        judge_l7(c, &mut o, req);
    }
    Ok(o)
}

/// The proxies' decisions: each step allowed by an entry that redirects to
/// L7 (egress first) has the request judged by its port's L7 policy; the
/// first denial decides, and the steps after it never happen.
pub fn judge_l7(c: &Compiled, o: &mut Outcome<'_>, req: &compiler::l7::Request) {
    use compiler::l7::L7Verdict;
    for i in 0..o.steps.len() {
        let s = &o.steps[i];
        let (Some(key), Some(entry)) = (s.key, s.entry) else {
            continue;
        };
        if s.verdict != Verdict::Allowed || !entry.redirect {
            continue;
        }
        let Some(ep) = c.endpoint(s.endpoint) else {
            continue;
        };
        let map = &c.maps[ep.map];
        let step = match map.l7_port(&key, req.kind()) {
            Some(port) => match port.judge(s.remote_identity, req) {
                L7Verdict::Allowed { rules, open } => L7Step {
                    protocol: port.kind,
                    verdict: Verdict::Allowed,
                    rules: if open {
                        vec!["an allow without L7 rules for this peer: every request".to_owned()]
                    } else {
                        rules.iter().map(|&r| port.rules[r].text.clone()).collect()
                    },
                    status: None,
                },
                L7Verdict::Denied => L7Step {
                    protocol: port.kind,
                    verdict: Verdict::Denied,
                    rules: Vec::new(),
                    status: (port.kind == compiler::l7::L7Kind::Http).then_some(403),
                },
            },
            None => {
                // The port redirects for another protocol's rules (the
                // proxy cannot parse this request: denied), or only for a
                // listener or SNI check, which does not judge requests.
                match map.l7_ports(key).next() {
                    Some(p) => L7Step {
                        protocol: p.kind,
                        verdict: Verdict::Denied,
                        rules: Vec::new(),
                        status: None,
                    },
                    None => continue,
                }
            }
        };
        let denied = step.verdict == Verdict::Denied;
        let s = &mut o.steps[i];
        s.l7 = Some(step);
        if denied {
            s.verdict = Verdict::Denied;
            o.verdict = Verdict::Denied;
            o.decided_by = Some(s.direction);
            o.audit = None;
            o.steps.truncate(i + 1);
            return;
        }
    }
}

/// The datapath's decision for a resolved flow: egress at the source
/// endpoint, then (if that allowed it) ingress at the destination.
pub fn judge<'a>(c: &'a Compiled, f: &Resolved<'a>) -> Outcome<'a> {
    let (src, dst) = (&f.src, &f.dst);
    if let (Some(a), Some(b)) = (src.endpoint, dst.endpoint) {
        if std::ptr::eq(a, b) && !a.host {
            // A pod reaching its own address never leaves its network
            // namespace: no datapath program sees it.
            return Outcome {
                verdict: Verdict::Allowed,
                decided_by: None,
                steps: Vec::new(),
                audit: None,
            };
        }
    }
    let mut steps = Vec::with_capacity(2);
    if let Some(ep) = src.endpoint {
        steps.push(step(
            c,
            ep,
            seen_from(c, dst, ep),
            Direction::Egress,
            f.protocol,
            f.port,
        ));
    }
    if steps.iter().all(|s| s.verdict == Verdict::Allowed) {
        if let Some(ep) = dst.endpoint {
            steps.push(step(
                c,
                ep,
                seen_from(c, src, ep),
                Direction::Ingress,
                f.protocol,
                f.port,
            ));
        }
    }
    let denied = steps.iter().find(|s| s.verdict == Verdict::Denied);
    Outcome {
        verdict: if denied.is_some() {
            Verdict::Denied
        } else {
            Verdict::Allowed
        },
        decided_by: denied.or(steps.last()).map(|s| s.direction),
        audit: if denied.is_some() {
            None
        } else {
            steps
                .iter()
                .find(|s| s.audit.is_some())
                .map(|s| s.direction)
        },
        steps,
    }
}

/// For a step an audited policy would have dropped: which entry (and
/// rules) or which policies' default deny, as one sentence.
pub fn explain_audit(c: &Compiled, s: &Step) -> Option<String> {
    let a = s.audit.as_ref()?;
    let dir = match s.direction {
        Direction::Ingress => "ingress",
        Direction::Egress => "egress",
    };
    Some(match (a.key, a.entry) {
        (Some(key), Some(entry)) => format!(
            "audit: {dir} at {} would be denied by the deny entry [identity {}, {}] from {}",
            s.endpoint,
            identity_name(c, key.identity),
            key.port_text(),
            entry
                .origins
                .iter()
                .map(|&o| origin_text(c, o))
                .collect::<Vec<_>>()
                .join("; ")
        ),
        _ => {
            let by: Vec<String> = c
                .endpoint(s.endpoint)
                .map(|e| {
                    e.audit_by
                        .iter()
                        .filter_map(|&o| c.origins.get(o as usize))
                        .map(|o| o.policy.clone())
                        .collect()
                })
                .unwrap_or_default();
            format!(
                "audit: {dir} at {} would be dropped by default deny of {} (in audit mode)",
                s.endpoint,
                if by.is_empty() {
                    "a policy".to_owned()
                } else {
                    by.join(", ")
                }
            )
        }
    })
}

/// The policies an AUDIT verdict names: the deny entry's origins, or the
/// audited policies whose default deny would drop it.
pub fn audit_policies(c: &Compiled, s: &Step) -> Vec<String> {
    let Some(a) = s.audit.as_ref() else {
        return Vec::new();
    };
    let origins: Vec<u32> = match a.entry {
        Some(e) => e.origins.to_vec(),
        None => c
            .endpoint(s.endpoint)
            .map(|e| e.audit_by.clone())
            .unwrap_or_default(),
    };
    policy_names(c, &origins)
}

/// The policies an AUDIT verdict of the datapath names, from what the
/// event carries: the endpoint, the peer's identity, direction and port.
pub fn audit_policies_of(
    c: &Compiled,
    ep: &Endpoint,
    remote: u32,
    egress: bool,
    proto: u8,
    port: u16,
) -> Vec<String> {
    let Some(m) = ep.audit_map else {
        return Vec::new();
    };
    match c.maps[m].lookup(remote, egress, proto, port) {
        Some(h) if h.entry.deny => policy_names(c, &h.entry.origins),
        Some(_) => Vec::new(),
        None => policy_names(c, &ep.audit_by),
    }
}

fn policy_names(c: &Compiled, origins: &[u32]) -> Vec<String> {
    let mut names: Vec<String> = origins
        .iter()
        .filter_map(|&o| c.origins.get(o as usize))
        .map(|o| o.policy.clone())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Where Hubble's policy correlation and sluice name different policies
/// for the same decision of one direction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyDifference {
    pub direction: Direction,
    /// Whether the decision both agree on is an allow.
    pub allowed: bool,
    /// What the record names, `Kind namespace/name`.
    pub hubble: Vec<String>,
    /// What decides the flow here; empty for default deny (or default
    /// allow), where no policy's rule decides.
    pub sluice: Vec<String>,
}

/// The directions of a replayed flow where Hubble named other policies
/// than the ones whose rules decide here. Only decisions both agree on
/// are compared: a changed verdict says more than its policies would.
pub fn policy_differences(c: &Compiled, f: &Flow, o: &Outcome) -> Vec<PolicyDifference> {
    let Some(recorded) = f.replay.as_ref().map(|r| &r.policies) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for direction in [Direction::Egress, Direction::Ingress] {
        for allowed in [true, false] {
            let hubble: Vec<_> = recorded
                .iter()
                .filter(|p| p.direction == direction && p.allowed == allowed)
                .collect();
            if hubble.is_empty() {
                continue;
            }
            let verdict = if allowed {
                Verdict::Allowed
            } else {
                Verdict::Denied
            };
            let Some(st) = o
                .steps
                .iter()
                .find(|s| s.direction == direction && s.verdict == verdict)
            else {
                continue;
            };
            let sluice = st
                .entry
                .map(|e| policy_names(c, &e.origins))
                .unwrap_or_default();
            let same = hubble.iter().all(|h| sluice.iter().any(|s| h.names(s)))
                && sluice.iter().all(|s| hubble.iter().any(|h| h.names(s)));
            if !same {
                let mut hubble: Vec<String> = hubble.iter().map(|h| h.to_string()).collect();
                hubble.sort();
                hubble.dedup();
                out.push(PolicyDifference {
                    direction,
                    allowed,
                    hubble,
                    sluice,
                });
            }
        }
    }
    out
}

/// A one-line note for a policy difference.
pub fn explain_difference(d: &PolicyDifference) -> String {
    let dir = match d.direction {
        Direction::Ingress => "ingress",
        Direction::Egress => "egress",
    };
    let what = if d.allowed { "allowed" } else { "denied" };
    let here = if d.sluice.is_empty() {
        if d.allowed {
            "no policy (default allow)".to_owned()
        } else {
            "no policy's rule (default deny)".to_owned()
        }
    } else {
        d.sluice.join(", ")
    };
    format!(
        "{dir}: Hubble recorded it {what} by {}; here it is {what} by {here}",
        d.hubble.join(", ")
    )
}

/// A one-line reason for a step: which entry, from which rules.
pub fn explain_step(c: &Compiled, s: &Step) -> String {
    let dir = match s.direction {
        Direction::Ingress => "ingress",
        Direction::Egress => "egress",
    };
    let Some((key, entry)) = s.key.as_ref().zip(s.entry) else {
        let policies: Vec<String> = c
            .endpoint(s.endpoint)
            .map(|e| {
                e.selected_by
                    .iter()
                    .filter_map(|&o| c.origins.get(o as usize))
                    .map(|o| o.policy.clone())
                    .collect()
            })
            .unwrap_or_default();
        return format!(
            "{dir} at {}: no entry for identity {} → dropped by default deny (selected by {})",
            s.endpoint,
            identity_name(c, s.remote_identity),
            if policies.is_empty() {
                "no policy".to_owned()
            } else {
                policies.join(", ")
            }
        );
    };
    let what = if entry.deny {
        "deny"
    } else if entry.redirect {
        "allow (L7 redirect)"
    } else {
        "allow"
    };
    let origins: Vec<String> = entry.origins.iter().map(|&o| origin_text(c, o)).collect();
    let l7 = match &s.l7 {
        None => String::new(),
        Some(l) if l.verdict == Verdict::Allowed => {
            format!("; L7 {:?}: allowed by {}", l.protocol, l.rules.join(", "))
                .replace("Http", "HTTP")
        }
        Some(l) => format!(
            "; L7 {:?}: denied{}, no rule matches the request",
            l.protocol,
            l.status.map(|s| format!(" ({s})")).unwrap_or_default()
        )
        .replace("Http", "HTTP"),
    };
    format!(
        "{dir} at {}: {what} entry [identity {}, {}] from {}{l7}",
        s.endpoint,
        identity_name(c, key.identity),
        key.port_text(),
        origins.join("; ")
    )
}

pub fn origin_text(c: &Compiled, o: u32) -> String {
    match o {
        DEFAULT_ALLOW => "default allow (no policy enforces this direction)".into(),
        ALLOW_LOCALHOST => "allow-localhost (the node may always reach its pods)".into(),
        o => c
            .origins
            .get(o as usize)
            .map_or_else(|| format!("rule #{o}"), |x| x.to_string()),
    }
}

/// `256 (k8s:app=web, ...)`, `world`, `0 (any)`.
pub fn identity_name(c: &Compiled, id: u32) -> String {
    if id == 0 {
        return "0 (any)".into();
    }
    if let Some(n) = reserved_name(id) {
        return format!("{id} ({n})");
    }
    match c.identity(id) {
        Some(i) => {
            let short: Vec<String> = i
                .labels
                .iter()
                .filter(|l| {
                    !l.key.starts_with("io.cilium.k8s.namespace.labels.")
                        && l.key != "io.cilium.k8s.policy.cluster"
                        && l.key != "io.cilium.k8s.policy.serviceaccount"
                })
                .map(|l| l.to_string())
                .collect();
            format!("{id} ({})", short.join(","))
        }
        None => id.to_string(),
    }
}
