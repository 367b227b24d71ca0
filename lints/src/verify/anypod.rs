//! `--any-pod`: each assertion that held over the inventory is asked again
//! of every pod that could exist, and of every outside address and
//! reserved identity it names; witnesses are confirmed by the ordinary
//! compile before they are reported.

use super::{
    AnyPod, Assertion, Check, Coverage, Expect, PeerExpr, PeerForm, PortRange, Report, World,
    UNDECIDED, VIOLATED,
};
use crate::Finding;
use compiler::inventory::{Inventory, Pod};
use policy_lang::ir::{Cidr, Direction};
use verifier::{Answer, Bool, EdgeAnswer, Encoder, Other, PodAnswer, SymPod};

/// What one side of an assertion stands for, symbolically.
enum SymSide<'p> {
    /// Pods by namespace and labels (`all`: every pod).
    Pattern(verifier::Pattern),
    /// One pod of the inventory.
    Pod(&'p Pod),
    /// Outside addresses of the families (IPv4 first), within a CIDR.
    Addr {
        families: Vec<bool>,
        within: Option<Cidr>,
    },
    /// A reserved identity: `host`, `remote-node`, ...
    Reserved(u32),
}

/// One kind of peer a query ranges over.
#[derive(Clone, Copy)]
enum Part<'s> {
    /// Pods meeting the side (any pod without one), or not meeting it.
    Pods {
        side: Option<&'s SymSide<'s>>,
        negate: bool,
    },
    Addr {
        v4: bool,
        within: Option<&'s Cidr>,
        negate: bool,
    },
    Reserved(u32),
    /// The address of the inventory's node with this index.
    Node(usize),
}

/// The side of an assertion's peer, or `None` when the solver leaves it
/// to the inventory check.
fn sym_side<'p>(inv: &'p Inventory, p: &PeerExpr) -> Option<SymSide<'p>> {
    match &p.form {
        PeerForm::Entity(e) => match e.as_str() {
            "all" => Some(SymSide::Pattern(verifier::Pattern::default())),
            "world" => Some(SymSide::Addr {
                families: vec![true, false],
                within: None,
            }),
            "world-ipv4" | "world-ipv6" => Some(SymSide::Addr {
                families: vec![e == "world-ipv4"],
                within: None,
            }),
            name => compiler::identity::RESERVED
                .iter()
                .find(|(_, n)| *n == name)
                .map(|(id, _)| SymSide::Reserved(*id)),
        },
        PeerForm::Cidr(c) => {
            let cidr = Cidr::parse(c).ok()?;
            Some(SymSide::Addr {
                families: vec![cidr.addr.is_ipv4()],
                within: Some(cidr),
            })
        }
        PeerForm::Pods {
            namespace,
            labels,
            not,
        } => Some(SymSide::Pattern(verifier::Pattern {
            namespace: namespace.clone(),
            labels: labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            not: not.clone(),
        })),
        PeerForm::Name(n) => inv
            .pods
            .iter()
            .find(|p| &p.qualified_name() == n)
            .map(SymSide::Pod),
    }
}

fn parts<'s>(inv: &Inventory, side: &'s SymSide<'s>) -> Vec<Part<'s>> {
    // A CIDR that holds nodes' addresses stands for those nodes too, as in
    // the inventory check.
    let nodes = |c: &Cidr| {
        inv.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.ips.first().is_some_and(|ip| c.contains(&host_cidr(*ip))))
            .map(|(i, _)| Part::Node(i))
            .collect::<Vec<_>>()
    };
    match side {
        SymSide::Pattern(_) | SymSide::Pod(_) => vec![Part::Pods {
            side: Some(side),
            negate: false,
        }],
        SymSide::Addr { families, within } => families
            .iter()
            .map(|&v4| Part::Addr {
                v4,
                within: within.as_ref(),
                negate: false,
            })
            .chain(within.iter().flat_map(nodes))
            .collect(),
        SymSide::Reserved(id) => vec![Part::Reserved(*id)],
    }
}

fn host_cidr(ip: std::net::IpAddr) -> Cidr {
    Cidr {
        addr: ip,
        prefix_len: if ip.is_ipv4() { 32 } else { 128 },
        bare: true,
    }
}

/// Every pod and outside address but the side's, as the inventory check
/// reads "everything else" (reserved identities are not among them). A
/// CIDR that holds pods' addresses stands for those pods there; a pod
/// that could exist has no address yet, so its complement leaves pods out.
fn complement<'s>(inv: &Inventory, side: &'s SymSide<'s>) -> Vec<Part<'s>> {
    let any_addr = |v4| Part::Addr {
        v4,
        within: None,
        negate: false,
    };
    match side {
        SymSide::Pattern(_) | SymSide::Pod(_) => vec![
            Part::Pods {
                side: Some(side),
                negate: true,
            },
            any_addr(true),
            any_addr(false),
        ],
        SymSide::Addr { families, within } => {
            let holds_pods = within.as_ref().is_some_and(|c| {
                inv.pods
                    .iter()
                    .flat_map(|p| &p.ips)
                    .any(|ip| c.contains(&host_cidr(*ip)))
            });
            let mut v = Vec::new();
            if !holds_pods {
                v.push(Part::Pods {
                    side: None,
                    negate: false,
                });
            }
            for v4 in [true, false] {
                match (families.contains(&v4), within) {
                    (false, _) => v.push(any_addr(v4)),
                    (true, Some(c)) => v.push(Part::Addr {
                        v4,
                        within: Some(c),
                        negate: true,
                    }),
                    (true, None) => {}
                }
            }
            v
        }
        SymSide::Reserved(_) => vec![
            Part::Pods {
                side: None,
                negate: false,
            },
            any_addr(true),
            any_addr(false),
        ],
    }
}

fn ns_pattern(ns: &str) -> verifier::Pattern {
    verifier::Pattern {
        namespace: Some(ns.to_owned()),
        ..verifier::Pattern::default()
    }
}

/// A query: peers of the source, of the destination, ports, whether
/// `allowed` is wanted.
struct Query<'s> {
    from: Vec<Part<'s>>,
    to: Vec<Part<'s>>,
    ports: Vec<(u8, u16, u16)>,
    want_allowed: bool,
}

/// What a query found: nothing, a finding, or a bug of the semantics.
enum Outcome {
    Holds,
    Finding(Finding),
    Broken(Finding),
    Internal(String),
}

struct Ctx<'a, 'e> {
    w: &'a World<'a>,
    ap: &'a AnyPod<'a>,
    enc: &'a Encoder<'e>,
    model: &'a compiler::model::Model,
    solver: &'a verifier::Solver,
    flow: &'a verifier::SymFlow,
    /// The pod of flows whose other side is not a pod.
    edge_pod: &'a SymPod,
}

impl Ctx<'_, '_> {
    fn pods(&self, part: Part<'_>, pod: &SymPod) -> Bool {
        let Part::Pods { side, negate } = part else {
            return Bool::from_bool(false);
        };
        let b = match side {
            Some(SymSide::Pattern(p)) => self.enc.pattern(p, pod),
            Some(SymSide::Pod(p)) => self.enc.concrete(pod, p),
            _ => Bool::from_bool(true),
        };
        if negate {
            b.not()
        } else {
            b
        }
    }

    /// The non-pod side of an edge flow, and the condition on it.
    fn other(&self, part: Part<'_>) -> Option<(Other, Bool)> {
        match part {
            Part::Pods { .. } => None,
            Part::Reserved(id) => Some((Other::Reserved(id), Bool::from_bool(true))),
            Part::Node(i) => Some((Other::Node(i), Bool::from_bool(true))),
            Part::Addr { v4, within, negate } => {
                let a = self.enc.addr(v4);
                let inside = match within {
                    Some(c) => self.enc.addr_in(&a, c),
                    None => Bool::from_bool(true),
                };
                let cond = if negate { inside.not() } else { inside };
                Some((Other::Addr(a), cond))
            }
        }
    }

    fn run(&self, a: &Assertion, q: &Query<'_>) -> Outcome {
        for &fp in &q.from {
            for &tp in &q.to {
                let out = match (self.other(fp), self.other(tp)) {
                    (None, None) => self.pod_pair(a, fp, tp, q),
                    (Some((other, cond)), None) => self.edge(a, tp, other, cond, false, q),
                    (None, Some((other, cond))) => self.edge(a, fp, other, cond, true, q),
                    // Between two peers that are not pods no policy decides.
                    (Some(_), Some(_)) => Outcome::Holds,
                };
                if !matches!(out, Outcome::Holds) {
                    return out;
                }
            }
        }
        Outcome::Holds
    }

    fn pod_pair(&self, a: &Assertion, fp: Part<'_>, tp: Part<'_>, q: &Query<'_>) -> Outcome {
        let (fb, tb) = (self.pods(fp, &self.flow.src), self.pods(tp, &self.flow.dst));
        match self
            .enc
            .expect(&fb, &tb, self.flow, &q.ports, q.want_allowed, self.solver)
        {
            Answer::Holds => Outcome::Holds,
            Answer::Unknown(why) => Outcome::Finding(undecided(a, &why)),
            Answer::Broken(wit) => {
                match verifier::confirm(&wit, self.model, self.w.inventory, self.ap.config) {
                    Err(e) => Outcome::Internal(format!("assertion `{}`: {e}", a.name)),
                    Ok(()) => Outcome::Broken(witness_finding(a, &wit, q.want_allowed)),
                }
            }
        }
    }

    fn edge(
        &self,
        a: &Assertion,
        pod_part: Part<'_>,
        other: Other,
        cond: Bool,
        pod_is_src: bool,
        q: &Query<'_>,
    ) -> Outcome {
        let e = self.enc.edge(self.edge_pod, other, pod_is_src);
        let pb = self.pods(pod_part, self.edge_pod);
        match self
            .enc
            .expect_edge(&pb, &cond, &e, &q.ports, q.want_allowed, self.solver)
        {
            EdgeAnswer::Holds => Outcome::Holds,
            EdgeAnswer::Unknown(why) => Outcome::Finding(undecided(a, &why)),
            EdgeAnswer::Broken(wit) => {
                match verifier::confirm_edge(&wit, self.model, self.w.inventory, self.ap.config) {
                    Err(e) => Outcome::Internal(format!("assertion `{}`: {e}", a.name)),
                    Ok(()) => Outcome::Broken(edge_finding(a, &wit, q.want_allowed)),
                }
            }
        }
    }
}

/// The queries of `--any-pod`.
pub(super) fn symbolic(
    w: &World<'_>,
    assertions: &[Assertion],
    held: &[bool],
    ap: &AnyPod<'_>,
    report: &mut Report,
) {
    let model =
        compiler::model::normalize(ap.set, ap.sources, &w.inventory.services, &ap.config.model);
    let mut enc = Encoder::new(&model, w.inventory, ap.config);
    // Every value the assertions name joins the vocabulary first.
    let mut patterns: Vec<verifier::Pattern> = Vec::new();
    let mut learn = |p: &PeerExpr, _: &Encoder<'_>| {
        if let Some(SymSide::Pattern(pat)) = sym_side(w.inventory, p) {
            patterns.push(pat);
        }
    };
    for a in assertions {
        match &a.check {
            Check::Expect { from, to, .. } | Check::Only { from, to, .. } => {
                learn(from, &enc);
                learn(to, &enc);
            }
            Check::NamespaceIsolated {
                namespace, from, ..
            } => {
                learn(
                    &PeerExpr {
                        span: a.span,
                        form: PeerForm::Pods {
                            namespace: Some(namespace.clone()),
                            labels: Default::default(),
                            not: Vec::new(),
                        },
                    },
                    &enc,
                );
                if let Some(f) = from {
                    learn(f, &enc);
                }
            }
            Check::Covered { of, .. } => {
                if let Some(o) = of {
                    learn(o, &enc);
                }
            }
        }
    }
    for p in &patterns {
        enc.learn(p);
    }
    let solver = verifier::solver(ap.budget.into());
    let f = enc.flow(&solver);
    let edge_pod = enc.pod("pod", &solver);
    let ctx = Ctx {
        w,
        ap,
        enc: &enc,
        model: &model,
        solver: &solver,
        flow: &f,
        edge_pod: &edge_pod,
    };
    let ports = |ps: &[PortRange]| -> Vec<(u8, u16, u16)> {
        ps.iter().map(|p| (p.protocol, p.lo, p.hi)).collect()
    };
    let side = |p: &PeerExpr| sym_side(w.inventory, p);
    let (mut checked, mut inventory_only) = (0usize, 0usize);
    for (a, &ok) in assertions.iter().zip(held) {
        if !ok {
            continue;
        }
        let outcome = match &a.check {
            Check::Expect {
                from,
                to,
                ports: ps,
                expect,
            } => {
                let (Some(fs), Some(ts)) = (side(from), side(to)) else {
                    inventory_only += 1;
                    continue;
                };
                let mut queries = vec![Query {
                    from: parts(w.inventory, &fs),
                    to: parts(w.inventory, &ts),
                    ports: if *expect == Expect::Isolated {
                        Vec::new()
                    } else {
                        ports(ps)
                    },
                    want_allowed: *expect == Expect::Allowed,
                }];
                if *expect == Expect::Isolated {
                    queries.push(Query {
                        from: parts(w.inventory, &ts),
                        to: parts(w.inventory, &fs),
                        ports: Vec::new(),
                        want_allowed: false,
                    });
                }
                run_all(&ctx, a, &queries)
            }
            Check::Only {
                from,
                to,
                ports: ps,
            } => {
                let (Some(fs), Some(ts)) = (side(from), side(to)) else {
                    inventory_only += 1;
                    continue;
                };
                run_all(
                    &ctx,
                    a,
                    &[Query {
                        from: complement(w.inventory, &fs),
                        to: parts(w.inventory, &ts),
                        ports: ports(ps),
                        want_allowed: false,
                    }],
                )
            }
            Check::NamespaceIsolated {
                namespace, from, ..
            } => {
                let inside = SymSide::Pattern(ns_pattern(namespace));
                let fs = match from {
                    None => None,
                    Some(p) => match side(p) {
                        Some(s) => Some(s),
                        None => {
                            inventory_only += 1;
                            continue;
                        }
                    },
                };
                let from = match &fs {
                    None => complement(w.inventory, &inside),
                    Some(s) => parts(w.inventory, s),
                };
                run_all(
                    &ctx,
                    a,
                    &[Query {
                        from,
                        to: parts(w.inventory, &inside),
                        ports: Vec::new(),
                        want_allowed: false,
                    }],
                )
            }
            Check::Covered { direction, of } => {
                let of_side = match of {
                    None => SymSide::Pattern(verifier::Pattern::default()),
                    Some(p) => match side(p) {
                        Some(s @ (SymSide::Pattern(_) | SymSide::Pod(_))) => s,
                        _ => {
                            inventory_only += 1;
                            continue;
                        }
                    },
                };
                let of = ctx.pods(
                    Part::Pods {
                        side: Some(&of_side),
                        negate: false,
                    },
                    &f.dst,
                );
                covered(&ctx, a, &of, *direction)
            }
        };
        checked += 1;
        match outcome {
            Outcome::Holds => {}
            Outcome::Finding(f) => {
                report.held -= 1;
                report.undecided += 1;
                report.findings.push((f, None));
            }
            Outcome::Internal(e) => report.internal.push(e),
            Outcome::Broken(f) => {
                report.held -= 1;
                report.broken += 1;
                report.findings.push((f, None));
            }
        }
    }
    report.any_pod = Some((checked, inventory_only));
}

fn run_all(ctx: &Ctx<'_, '_>, a: &Assertion, queries: &[Query<'_>]) -> Outcome {
    for q in queries {
        let out = ctx.run(a, q);
        if !matches!(out, Outcome::Holds) {
            return out;
        }
    }
    Outcome::Holds
}

fn covered(ctx: &Ctx<'_, '_>, a: &Assertion, of: &Bool, direction: Coverage) -> Outcome {
    let dirs: &[Direction] = match direction {
        Coverage::Ingress => &[Direction::Ingress],
        Coverage::Egress => &[Direction::Egress],
        Coverage::Both => &[Direction::Ingress, Direction::Egress],
    };
    for &dir in dirs {
        match ctx.enc.uncovered(of, &ctx.flow.dst, dir, ctx.solver) {
            PodAnswer::Holds => continue,
            PodAnswer::Unknown(why) => return Outcome::Finding(undecided(a, &why)),
            PodAnswer::Pod(pod) => {
                return match verifier::confirm_uncovered(
                    &pod,
                    dir,
                    ctx.model,
                    ctx.w.inventory,
                    ctx.ap.config,
                ) {
                    Err(e) => Outcome::Internal(format!("assertion `{}`: {e}", a.name)),
                    Ok(()) => Outcome::Broken(
                        Finding::new(
                            &VIOLATED,
                            a.span,
                            format!(
                                "assertion `{}` does not hold for a pod that could exist: no policy would cover the {} of {}",
                                a.name,
                                if dir == Direction::Ingress { "ingress" } else { "egress" },
                                pod.summary()
                            ),
                        )
                        .label("expects every possible pod covered")
                        .help(format!("such a pod:\n{}", pod.manifest("example"))),
                    ),
                };
            }
        }
    }
    Outcome::Holds
}

fn undecided(a: &Assertion, why: &str) -> Finding {
    Finding::new(
        &UNDECIDED,
        a.span,
        format!(
            "assertion `{}`: the solver could not decide it for every possible pod ({why})",
            a.name
        ),
    )
    .label("undecided: not known to hold")
    .help("raise --solver-timeout-ms (or --solver-steps), or narrow the assertion's peers")
}

fn witness_finding(a: &Assertion, wit: &verifier::Witness, want_allowed: bool) -> Finding {
    let verdict = if wit.allowed { "allowed" } else { "denied" };
    Finding::new(
        &VIOLATED,
        a.span,
        format!(
            "assertion `{}` does not hold for pods that could exist: {} → {} {}/{} would be {verdict}",
            a.name,
            wit.src.summary(),
            wit.dst.summary(),
            wit.port,
            compiler::mapstate::proto_name(wit.protocol)
        ),
    )
    .label(format!("expects {}", if want_allowed { "allowed" } else { "denied" }))
    .help(format!(
        "no pod of the inventory breaks it, but these would (sluice compiled the policies with them added and `simulate` agrees):\n{}---\n{}",
        wit.src.manifest("source"),
        wit.dst.manifest("destination")
    ))
}

fn edge_finding(a: &Assertion, wit: &verifier::EdgeWitness, want_allowed: bool) -> Finding {
    let verdict = if wit.allowed { "allowed" } else { "denied" };
    Finding::new(
        &VIOLATED,
        a.span,
        format!(
            "assertion `{}` does not hold for a pod that could exist: {} would be {verdict}",
            a.name,
            wit.flow_text()
        ),
    )
    .label(format!("expects {}", if want_allowed { "allowed" } else { "denied" }))
    .help(format!(
        "no pod of the inventory breaks it, but this one would (sluice compiled the policies with it added and `simulate` agrees):\n{}",
        wit.pod.manifest("example")
    ))
}
