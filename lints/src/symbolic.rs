//! The solver rules (`--any-pod`): properties of each policy rule over
//! every pod, address and entity that could exist, decided by z3 over the
//! policies' model (the verifier crate). A claim that something can
//! happen comes with a witness that sluice confirms by compiling it in
//! and running `simulate`; a claim that something can never happen is
//! the solver's proof. A check the solver cannot decide is reported as
//! undecided (SL123), never as clean.

use crate::rules::{
    ALLOW_ADMITS_NEW_NAMESPACES, ALLOW_SHADOWED_BY_DENY, ALLOW_SHADOWED_FOR_EVERY_POD,
    DENY_NEVER_MATCHES, SOLVER_UNDECIDED,
};
use crate::{Finding, Input, Solver};
use compiler::inventory::Inventory;
use compiler::labels::{NAMESPACE_LABEL, NAMESPACE_LABELS_PREFIX};
use compiler::model::{Model, NPolicyRule, NRule, PeerSel, Peers, Subject};
use compiler::selector::{Op, Sel};
use policy_lang::ir::{Direction, PolicyBody};
use policy_lang::source::Span;
use std::collections::HashMap;
use verifier::{Answer, Ast, Bool, EdgeFlow, Encoder};

/// What one satisfiability question over every kind of peer gave.
enum Sat {
    /// Some peer meets it.
    Yes,
    No,
    Unknown(String),
}

struct Ctx<'a, 'e> {
    enc: &'a Encoder<'e>,
    solver: &'a verifier::Solver,
    flow: &'a verifier::SymFlow,
    /// Flows between a possible pod and each non-pod peer, both ways.
    edges: &'a [EdgeFlow],
}

impl Ctx<'_, '_> {
    /// Whether a condition on a flow holds for some pod pair or some pod
    /// with a non-pod peer; `cond` builds it for either.
    fn any_peer(
        &self,
        pods: &dyn Fn(&verifier::SymFlow) -> Bool,
        edge: &dyn Fn(&EdgeFlow) -> Bool,
    ) -> Sat {
        let mut unknown = None;
        let conds = std::iter::once((pods(self.flow), &self.flow.proto))
            .chain(self.edges.iter().map(|e| (edge(e), &e.proto)));
        for (c, proto) in conds {
            // Most rules cannot meet most kinds of peer (an ingress rule
            // and a flow the pod sends, a selector and an address): such a
            // condition simplifies to false and costs no check.
            let c = c.simplify();
            if c.as_bool() == Some(false) {
                continue;
            }
            self.solver.push();
            self.solver.assert(&c);
            self.solver.assert(self.enc.sendable(proto));
            let r = self.solver.check();
            if r == verifier::SatResult::Unknown {
                unknown = Some(
                    self.solver
                        .get_reason_unknown()
                        .unwrap_or_else(|| "unknown".into()),
                );
            }
            self.solver.pop(1);
            if r == verifier::SatResult::Sat {
                return Sat::Yes;
            }
        }
        match unknown {
            Some(why) => Sat::Unknown(why),
            None => Sat::No,
        }
    }
}

/// The peer rule's place in the sources: the `ingress[i]`/`egress[i]`
/// item the model's origin names, else the policy's name.
fn spans(input: &Input<'_>) -> HashMap<(String, u32, u32), Span> {
    let mut out = HashMap::new();
    for p in &input.set.policies {
        let file = input.sources.name(p.file).to_owned();
        let mut add = |s: Span| {
            out.entry((file.clone(), s.line, s.col)).or_insert(s);
        };
        for r in p.rules() {
            for (_, _, list) in r.peer_lists() {
                for peer in list.into_iter().flatten() {
                    add(peer.loc.0);
                }
            }
        }
        if let PolicyBody::Kubernetes(k) = &p.body {
            for r in k.ingress.iter().chain(&k.egress).flatten() {
                add(r.loc.0);
            }
        }
    }
    out
}

/// A peer selector that a pod of a new namespace without labels cannot
/// meet: it names the namespace, or asks for a namespace label.
fn needs_namespace(sel: &Sel) -> bool {
    sel.reqs.iter().any(|r| {
        (r.key == NAMESPACE_LABEL && r.op == Op::In)
            || (r.key.starts_with(NAMESPACE_LABELS_PREFIX) && matches!(r.op, Op::In | Op::Exists))
    })
}

/// Whether two selectors can select one pod: not when both ask a key
/// (of one source) for disjoint values, or one asks for a key the other
/// says is absent. A cheap filter before the solver, never a proof.
fn may_overlap(a: &Sel, b: &Sel) -> bool {
    !a.reqs.iter().any(|x| {
        b.reqs.iter().any(|y| {
            x.key == y.key
                && x.source == y.source
                && match (x.op, y.op) {
                    (Op::In, Op::In) => !x.values.iter().any(|v| y.values.contains(v)),
                    (Op::In | Op::Exists, Op::DoesNotExist)
                    | (Op::DoesNotExist, Op::In | Op::Exists) => true,
                    _ => false,
                }
        })
    })
}

fn admits_any_namespace(nr: &NRule) -> bool {
    match &nr.peers {
        Peers::Any(sels) => sels
            .iter()
            .any(|s| matches!(s, PeerSel::Endpoints(sel) if !needs_namespace(sel))),
        _ => false,
    }
}

/// Runs the solver rules into `out`; witnesses the ordinary compile did
/// not confirm (bugs of the symbolic semantics) go to `internal`.
pub(crate) fn run(
    input: &Input<'_>,
    s: &Solver<'_>,
    out: &mut Vec<Finding>,
    internal: &mut Vec<String>,
) {
    let empty = Inventory::default();
    let inv = input.inventory.unwrap_or(&empty);
    let model: Model =
        compiler::model::normalize(input.set, input.sources, &inv.services, &s.config.model);
    let enc = Encoder::new(&model, inv, s.config);
    let solver = verifier::solver(s.budget.into());
    let flow = enc.flow(&solver);
    let pod = enc.pod("pod", &solver);
    let edges: Vec<EdgeFlow> = enc
        .others()
        .into_iter()
        .flat_map(|o| [true, false].map(|src| enc.edge(&pod, o.clone(), src)))
        .collect();
    let ctx = Ctx {
        enc: &enc,
        solver: &solver,
        flow: &flow,
        edges: &edges,
    };
    let spans = spans(input);
    let span_of = |r: &NPolicyRule, nr: &NRule| {
        model
            .origins
            .get(nr.origin)
            .and_then(|o| spans.get(&(o.file.clone(), o.line, o.col)).copied())
            .unwrap_or(r.name_span)
    };
    // The rules with denies, per direction: the only ones SL122 asks.
    let deny_rules = [Direction::Ingress, Direction::Egress].map(|dir| {
        model
            .rules
            .iter()
            .filter(|x| !x.audit && x.rules.iter().any(|y| y.deny && y.dir == dir))
            .collect::<Vec<_>>()
    });
    let mut shadowed_spans = Vec::new();
    for r in model.rules.iter().filter(|r| !r.audit) {
        // Host policies select nodes, which possible pods are not.
        if !matches!(r.subject, Subject::Endpoints(_)) {
            continue;
        }
        for nr in &r.rules {
            let span = span_of(r, nr);
            let matches = |f: &verifier::SymFlow| enc.rule_matches(r, nr, f);
            let matches_edge = |e: &EdgeFlow| enc.rule_matches_edge(r, nr, e);
            if nr.deny {
                match ctx.any_peer(&matches, &matches_edge) {
                    Sat::Yes => {}
                    Sat::Unknown(why) => out.push(undecided(span, "deny-never-matches", &why)),
                    Sat::No => out.push(
                        Finding::new(
                            &DENY_NEVER_MATCHES,
                            span,
                            "no pod, address or entity that could exist meets this deny rule",
                        )
                        .label("never matches")
                        .help("check its selectors against the subject's (and `fromRequires`), the label filter, and its ports"),
                    ),
                }
                continue;
            }
            if admits_any_namespace(nr) {
                let res = new_namespace(&ctx, &model, input, s, r, nr, span);
                match res {
                    Ok(Some(f)) => out.push(f),
                    Ok(None) => {}
                    Err(e) => internal.push(e),
                }
            }
            // Only denies whose subjects can meet this rule's can shadow it
            // (most are in other namespaces): they alone are asked.
            let Subject::Endpoints(mine) = &r.subject else {
                continue;
            };
            let overlapping = |d: &NPolicyRule| match &d.subject {
                Subject::Endpoints(theirs) => may_overlap(mine, theirs),
                Subject::Nodes(_) => false,
            };
            let d = nr.dir;
            let some_deny = deny_rules[compiler::model::dir_index(d)]
                .iter()
                .any(|x| overlapping(x));
            if some_deny {
                let open = |f: &verifier::SymFlow| {
                    Bool::and(&[
                        enc.rule_matches(r, nr, f),
                        enc.denied(d, f, &overlapping).not(),
                    ])
                };
                let open_edge = |e: &EdgeFlow| {
                    let m = enc.rule_matches_edge(r, nr, e);
                    if m.simplify().as_bool() == Some(false) {
                        return m;
                    }
                    Bool::and(&[m, enc.denied_edge(e, &overlapping).not()])
                };
                match ctx.any_peer(&open, &open_edge) {
                    Sat::Yes => {}
                    Sat::Unknown(why) => {
                        out.push(undecided(span, "allow-shadowed-for-every-pod", &why))
                    }
                    // An allow that matches nothing at all is not shadowed.
                    Sat::No => {
                        if let Sat::Yes = ctx.any_peer(&matches, &matches_edge) {
                            shadowed_spans.push(span);
                            out.push(
                                Finding::new(
                                    &ALLOW_SHADOWED_FOR_EVERY_POD,
                                    span,
                                    "a deny drops every flow this allow rule could ever match, for every pod that could exist",
                                )
                                .label("dead allow, for any pod")
                                .help("remove the allow, or narrow the deny"),
                            );
                        }
                    }
                }
            }
        }
    }
    // The inventory's finding says less than the proof at the same place.
    out.retain(|f| !(f.code == ALLOW_SHADOWED_BY_DENY.code && shadowed_spans.contains(&f.span)));
}

/// SL120: a pod of a new, unlabelled namespace that the rule lets
/// through end to end, confirmed by compiling it in.
#[allow(clippy::too_many_arguments)]
fn new_namespace(
    ctx: &Ctx<'_, '_>,
    model: &Model,
    input: &Input<'_>,
    s: &Solver<'_>,
    r: &NPolicyRule,
    nr: &NRule,
    span: Span,
) -> Result<Option<Finding>, String> {
    let f = ctx.flow;
    let peer = match nr.dir {
        Direction::Ingress => &f.src,
        Direction::Egress => &f.dst,
    };
    // The end-to-end verdict, from the rules that can select the two
    // pods: the outsider is in a new namespace (no rule naming its
    // namespace selects it), the subject is selected by this rule (no rule
    // whose subject is disjoint from it selects it).
    let Subject::Endpoints(mine) = &r.subject else {
        return Ok(None);
    };
    let near = |x: &NPolicyRule| match &x.subject {
        Subject::Endpoints(theirs) => may_overlap(mine, theirs),
        Subject::Nodes(_) => false,
    };
    let anywhere = |x: &NPolicyRule| match &x.subject {
        Subject::Endpoints(theirs) => !needs_namespace(theirs),
        Subject::Nodes(_) => false,
    };
    let allowed = match nr.dir {
        Direction::Ingress => ctx.enc.allowed_among(f, &anywhere, &near),
        Direction::Egress => ctx.enc.allowed_among(f, &near, &anywhere),
    };
    ctx.solver.push();
    ctx.solver.assert(ctx.enc.rule_matches(r, nr, f));
    ctx.solver.assert(&allowed);
    ctx.solver.assert(ctx.enc.new_unlabelled_namespace(peer));
    ctx.solver.assert(ctx.enc.sendable(&f.proto));
    let answer = ctx.enc.witness(ctx.solver, f, true);
    ctx.solver.pop(1);
    let w = match answer {
        Answer::Holds => return Ok(None),
        Answer::Unknown(why) => {
            return Ok(Some(undecided(span, "allow-admits-new-namespaces", &why)))
        }
        Answer::Broken(w) => w,
    };
    let empty = Inventory::default();
    let inv = input.inventory.unwrap_or(&empty);
    // A witness the compiler does not confirm is a bug of the symbolic
    // semantics, never a finding about the policy.
    verifier::confirm(&w, model, inv, s.config)
        .map_err(|e| format!("{}: {e}", ALLOW_ADMITS_NEW_NAMESPACES.code))?;
    let (outsider, what) = match nr.dir {
        Direction::Ingress => (&w.src, "from"),
        Direction::Egress => (&w.dst, "to"),
    };
    Ok(Some(
        Finding::new(
            &ALLOW_ADMITS_NEW_NAMESPACES,
            span,
            format!(
                "this allow lets in traffic {what} pods of any namespace created later: {} → {} {}/{} would be allowed",
                w.src.summary(),
                w.dst.summary(),
                w.port,
                compiler::mapstate::proto_name(w.protocol)
            ),
        )
        .label("admits new namespaces")
        .help(format!(
            "name the namespaces (a `namespaceSelector` with labels, or `k8s:io.kubernetes.pod.namespace`); such a pod (sluice compiled it in and `simulate` agrees):\n{}",
            outsider.manifest("example")
        )),
    ))
}

fn undecided(span: Span, rule: &str, why: &str) -> Finding {
    Finding::new(
        &SOLVER_UNDECIDED,
        span,
        format!("the solver could not decide {rule} for this rule ({why})"),
    )
    .label("undecided")
    .help("raise --solver-timeout-ms (or --solver-steps)")
}
