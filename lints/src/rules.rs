//! The rules: the registry (codes, names, severities, docs) and the checks.
//!
//! Checks come in two kinds. Policy-only checks read the IR and run on any
//! input. Inventory checks also read the compiled state: which endpoints a
//! rule selects (`Endpoint::selected_by`), which entries it produced
//! (`Entry::origins`), which allows a deny replaced
//! (`PolicyMap::overridden`). Every check is linear in the policies, pods
//! or entries it reads, so the whole run stays within a few seconds for
//! thousands of policies and tens of thousands of pods.

use crate::{Finding, Input, Rule, Severity};
use compiler::compile::Compiled;
use compiler::labels::NAMESPACE_LABELS_PREFIX;
use compiler::mapstate::{Entry, Key};
use policy_lang::ir::{
    Action, Cidr, Direction, Entity, KnpSpec, PeerRule, Policy, PolicyBody, PolicyKind, PolicyType,
    Port, Rule as IrRule, Selector,
};
use policy_lang::source::{Span, Spanned};
use policy_lang::suggest::did_you_mean;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;

macro_rules! rules {
    ($($id:ident = $code:literal, $name:literal, $sev:ident, $inv:literal,
       $(solver = $solver:literal,)? $summary:literal, $why:literal;)*) => {
        $(pub static $id: Rule = Rule {
            code: $code,
            name: $name,
            severity: Severity::$sev,
            needs_inventory: $inv,
            solver: false $(|| $solver)?,
            summary: $summary,
            why: $why,
        };)*
        /// Every rule, in code order.
        pub static REGISTRY: &[&Rule] = &[$(&$id,)*];
    };
}

rules! {
    SELECTS_NOTHING = "SL001", "policy-selects-nothing", Warning, true,
        "a policy rule whose subject selector matches no endpoint of the inventory",
        "A policy that selects nothing enforces nothing. Usually a label was misspelled, or the policy lives in another namespace than the pods it was written for; the intended pods stay open (or closed) without anyone noticing.";
    UNKNOWN_LABEL_KEY = "SL002", "unknown-label-key", Warning, true,
        "a selector constrains a label key that no pod (or node) carries",
        "A `matchLabels` key no pod has can never match, so the selector matches nothing: almost always a typo (`ap: web` for `app: web`). The finding suggests the closest existing key.";
    UNKNOWN_LABEL_VALUE = "SL003", "unknown-label-value", Warning, true,
        "a selector requires a label value that no pod with that key carries",
        "The key exists, but no pod has this value for it: a typo in the value (`app: fronted`), or pods that were renamed. The finding suggests the closest existing value.";
    PEER_SELECTS_NOTHING = "SL004", "peer-selects-nothing", Warning, true,
        "`fromEndpoints`/`toEndpoints` of a rule whose subject is selected, matching no endpoint",
        "The rule is in force for its subject, but its peer set is empty, so it allows (or denies) nothing. Selectors in a CiliumNetworkPolicy are confined to the policy's namespace unless they name one: a peer in another namespace needs `k8s:io.kubernetes.pod.namespace`.";
    SUBJECT_NAMESPACE_REPLACED = "SL005", "subject-namespace-replaced", Warning, false,
        "a namespaced policy whose `endpointSelector` names another namespace",
        "A CiliumNetworkPolicy applies only in its own namespace: Cilium replaces a `k8s:io.kubernetes.pod.namespace` match in its `endpointSelector` with the policy's namespace (and only logs it). The policy then selects pods of its own namespace, usually not the ones its author had in mind.";
    DUPLICATE_RULE = "SL010", "duplicate-rule", Warning, false,
        "two peer rules with the same subject, direction and content",
        "Duplicates are harmless to the datapath but not to people: one copy gets edited, the other keeps the old meaning, and the policy no longer says what its author believes.";
    REDUNDANT_RULE = "SL011", "redundant-rule", Note, true,
        "an allow rule whose every entry is also granted by broader or other allows",
        "Removing the rule would change no verdict: every endpoint, peer and port it allows is already allowed by another rule. Redundant rules make policies harder to review and to shrink safely.";
    ALLOW_SHADOWED_BY_DENY = "SL012", "allow-shadowed-by-deny", Warning, true,
        "an allow rule all of whose traffic a deny rule drops",
        "Deny wins over allow in Cilium whatever the specificity, so an allow that a deny fully covers is dead: the traffic its author meant to open stays closed.";
    DENY_ONLY_ISOLATES = "SL013", "deny-only-isolates", Warning, false,
        "a rule with `ingressDeny`/`egressDeny` but no allows for that direction, with default deny on",
        "A rule that has rules for a direction puts its endpoints into default deny for that direction, deny rules included. A policy meant to block one peer then blocks everyone. Add the allows, or set `enableDefaultDeny` to false for that direction.";
    WORLD_ALL_PORTS = "SL020", "ingress-from-world-all-ports", Warning, false,
        "ingress from `world`, `all` or 0.0.0.0/0 (::/0) on every port",
        "Every port of the selected endpoints is reachable from the Internet (or from anything). Exposures should name their ports.";
    EGRESS_ANYWHERE = "SL021", "egress-to-anywhere", Warning, false,
        "egress to 0.0.0.0/0 or ::/0, or to `world`/`all` on every port",
        "Unrestricted egress is what data exfiltration and command-and-control traffic need. Name the destinations (CIDRs, FQDNs, services) and ports.";
    CLUSTERWIDE_ALL_NAMESPACES = "SL022", "clusterwide-all-namespaces", Warning, false,
        "`fromEndpoints: [{}]` or `toEndpoints: [{}]` in a CiliumClusterwideNetworkPolicy",
        "In a namespaced policy `{}` means every endpoint of that namespace; in a clusterwide policy it means every endpoint of every namespace, kube-system included.";
    KNP_ALLOW_ALL_RULE = "SL023", "knp-allow-all-rule", Warning, false,
        "a NetworkPolicy rule with neither peers nor ports (`- {}`): allows everything",
        "In a NetworkPolicy an empty rule matches all sources (or destinations) on all ports, the opposite of what an empty rule means in a CiliumNetworkPolicy.";
    FQDN_WITHOUT_DNS = "SL030", "fqdn-without-dns-visibility", Warning, false,
        "`toFQDNs` for endpoints that no rule lets resolve names through the DNS proxy",
        "Cilium learns the IPs behind `toFQDNs` names only from DNS answers its proxy sees. Without an egress rule to the DNS server whose port carries `rules: dns`, the FQDN rule never matches anything and the traffic is dropped.";
    FQDN_MATCH_ALL = "SL031", "fqdn-match-all", Warning, false,
        "`toFQDNs` with `matchPattern: \"*\"`",
        "A pattern of `*` allows egress to every address any DNS answer names: all of the Internet, in practice.";
    CIDR_COVERS_PODS = "SL040", "cidr-covers-pods", Warning, true,
        "a CIDR rule whose prefix contains pod addresses",
        "CIDR rules in Cilium select only addresses outside the cluster: pods keep their own identities and are not matched by `fromCIDR`/`toCIDR`. A CIDR written to reach pods does nothing for them; use endpoint selectors.";
    CIDR_COVERS_NODES = "SL041", "cidr-covers-nodes", Warning, true,
        "a CIDR rule whose prefix contains node addresses",
        "Nodes have the `host` and `remote-node` identities, which CIDR rules do not select. Use the `host`/`remote-node` entities or `fromNodes`/`toNodes`.";
    NAMED_PORT_UNDEFINED = "SL050", "named-port-undefined", Warning, true,
        "a named port that no pod of the inventory declares",
        "A named port is resolved per endpoint from its containers' ports; a name no pod declares resolves to nothing and the rule allows nothing.";
    NAMED_PORT_AMBIGUOUS = "SL052", "named-port-ambiguous", Warning, true,
        "an egress rule's named port that pods of the cluster define with different numbers",
        "Cilium resolves named ports in egress rules over every endpoint of the cluster (its named-port multimap): when two pods give the name different numbers for the protocol, the name resolves to nothing and the rule allows nothing, for every destination.";
    PORT_READ_DIFFERENTLY = "SL053", "port-read-differently", Error, false,
        "a port string Cilium reads as another port: octal digits, or text in a deny rule that it does not check",
        "Cilium parses ports with Go's number syntax (`\"010\"` is port 8) and never sanitizes deny rules: an upper-case name there matches no container port and denies nothing, and text that is not a number (`\"80-90\"`) is read as port 0, every port of the protocol.";
    L7_ON_UNSERVED_PORT = "SL051", "l7-on-unserved-port", Warning, true,
        "ingress L7 rules on a port that none of the selected pods declares",
        "The L7 rules can only apply to traffic a pod accepts on that port. A port number that does not match the container is a common copy-paste mistake (the Service port instead of the targetPort).";
    HTTP_PATH_PREFIX = "SL060", "http-path-looks-like-prefix", Warning, false,
        "an HTTP `path` that reads like a prefix (`/api`, `/v1/`) but is matched as a whole",
        "Cilium matches `path` as a regular expression against the whole path: `/api` allows exactly `/api`, not `/api/users`. Write `/api/.*` (or `/api(/.*)?`) for a prefix.";
    HTTP_UNESCAPED_DOT = "SL061", "http-unescaped-dot", Warning, false,
        "an unescaped `.` in an HTTP path or host regex",
        "`.` matches any character: `api.example.com` also matches `apixexample.com`, which anyone can register. Escape it: `api\\.example\\.com`.";
    HTTP_UNKNOWN_METHOD = "SL062", "http-unknown-method", Error, false,
        "an HTTP `method` that matches none of HTTP's methods",
        "`method` is a case-sensitive regular expression matched against the request method; `get` or `POSTT` match no request, so the rule denies all traffic it was meant to allow.";
    HTTP_PATH_NO_SLASH = "SL063", "http-path-without-leading-slash", Warning, false,
        "an HTTP `path` that cannot match a path starting with `/`",
        "Request paths always start with `/`; a path regex that starts with another literal character (`api/v1`) matches no request.";
    DEPRECATED_REQUIRES = "SL070", "deprecated-requires", Warning, false,
        "`fromRequires` / `toRequires`",
        "Cilium deprecated `fromRequires` and `toRequires` (removed in 1.17): they apply to every rule of every policy selecting the endpoint, which surprises readers. Express the constraint in each rule's selectors.";
    TO_GROUPS = "SL071", "to-groups-unsupported", Warning, false,
        "`toGroups` / `fromGroups` (cloud-provider groups)",
        "Groups are resolved by a cloud-provider integration (AWS only) at run time; they resolve to nothing elsewhere and offline, so sluice cannot check what they allow.";
    ENDPOINT_LEFT_OPEN = "SL080", "endpoint-left-open", Warning, true,
        "the one endpoint of a namespace left default-allow at ingress when all others are isolated",
        "When every other pod of a namespace is isolated, the one left open is most likely a pod whose labels the policies do not match, not a deliberate exception.";
    NAMESPACE_WITHOUT_POLICY = "SL081", "namespace-without-policy", Warning, true,
        "a namespace with pods and no policy at all while other namespaces are isolated",
        "Default deny somewhere and nothing here usually means a namespace was forgotten when the baseline policy was rolled out.";
    EXPOSED_TO_WORLD = "SL082", "exposed-to-world", Note, true,
        "an isolated endpoint that traffic from outside the cluster may reach",
        "An inventory of what is reachable from `world`, from the connectivity graph: worth a look in every review, harmless when intended.";
    KNP_EGRESS_IGNORED = "SL090", "knp-egress-rules-ignored", Error, false,
        "NetworkPolicy `egress` rules with a `policyTypes` list that lacks `Egress`",
        "Kubernetes says the egress rules are ignored, but Cilium converts them anyway (cilium/cilium#48703, open): under Cilium the selected pods become egress-isolated and only these rules allow. sluice models Cilium (`--knp-policy-types kubernetes` for clusters with the fix). Either way the policy does not mean what one reader of it thinks.";
    KNP_DENY_ALL = "SL091", "knp-deny-all-direction", Note, false,
        "a NetworkPolicy direction in `policyTypes` with no rules: denies all of it",
        "Listing a direction with no rules denies all traffic in that direction for the selected pods: a standard default-deny, or a policy whose rules were lost.";
    KNP_INGRESS_IGNORED = "SL092", "knp-ingress-rules-ignored", Error, false,
        "NetworkPolicy `ingress` rules with a `policyTypes` list that lacks `Ingress`",
        "Kubernetes says the ingress rules are ignored, but Cilium converts them anyway (cilium/cilium#48703, open): under Cilium the selected pods become ingress-isolated and only these rules allow. sluice models Cilium (`--knp-policy-types kubernetes` for clusters with the fix). Either way the policy does not mean what one reader of it thinks.";
    MAP_NEAR_CAPACITY = "SL100", "policy-map-near-capacity", Warning, true,
        "an endpoint whose compiled policy map is at 80% of its capacity or more",
        "When an endpoint's map overflows, Cilium cannot regenerate it and the endpoint keeps stale policy. Growth in selectors or ports pushes near-full maps over.";
    ALLOW_ADMITS_NEW_NAMESPACES = "SL120", "allow-admits-new-namespaces", Warning, false, solver = true,
        "an allow rule that lets in pods of a namespace created later, whatever its labels",
        "Policies outlive the namespaces they were written for. A peer such as `namespaceSelector: {}`, a clusterwide `{}` or `NotIn`/`DoesNotExist` expressions admits every namespace anyone creates tomorrow, without a label that someone has to grant. The finding comes with a pod in such a namespace that the policies would let through (checked by compiling it in).";
    DENY_NEVER_MATCHES = "SL121", "deny-never-matches", Warning, false, solver = true,
        "a deny rule that no pod, address or entity that could exist ever matches",
        "A deny that can never match protects nothing while it reads as protection: contradictory expressions, a label the cluster's label filter drops from identities, a named port no pod can resolve, or a peer the subject's `fromRequires` rules out. The solver proves that no possible endpoint meets it.";
    ALLOW_SHADOWED_FOR_EVERY_POD = "SL122", "allow-shadowed-for-every-pod", Warning, false, solver = true,
        "an allow rule that a deny overrides for every pod, address and port that could exist",
        "Deny wins in Cilium whatever the specificity. When every flow an allow could ever match is also denied, the allow is dead for tomorrow's pods as well as today's: the traffic its author meant to open never flows. (SL012 says the same for the inventory's pods; this one is proven for all.)";
    SOLVER_UNDECIDED = "SL123", "solver-undecided", Note, false, solver = true,
        "with --any-pod, the solver could not decide a solver rule for a policy rule within its budget",
        "A rule the solver gave up on is reported as undecided, never as clean or as a finding. Raise --solver-timeout-ms, or --solver-steps when a step budget is set (steps decide the same way on every machine; time does not).";
    UNUSED_SUPPRESSION = "SL110", "unused-suppression", Warning, false,
        "a `lint.sluice.dev/ignore` entry that silences nothing",
        "Suppressions outlive the problems they excused; an unused one hides the next real finding of that rule in the policy.";
    SUPPRESSION_WITHOUT_REASON = "SL111", "suppression-without-reason", Warning, false,
        "a `lint.sluice.dev/ignore` entry without a reason",
        "A suppression is a decision; the reason is what lets the next reviewer check it still holds.";
}

/// The findings, and internal errors of the solver rules (bugs, never
/// findings).
pub fn run(input: &Input<'_>) -> (Vec<Finding>, Vec<String>) {
    // The policy-only checks and the inventory checks read disjoint things:
    // one thread each.
    std::thread::scope(|scope| {
        let policy_only = scope.spawn(|| {
            let mut out = Vec::new();
            for p in &input.set.policies {
                policy_checks(p, &mut out);
            }
            duplicates(input, &mut out);
            fqdn_visibility(input, &mut out);
            from_validation(input, &mut out);
            out
        });
        let mut out = Vec::new();
        if let (Some(_), Some(c)) = (input.inventory, input.compiled) {
            let ctx = InvCtx::new(input, c);
            ctx.selection(&mut out);
            ctx.labels(&mut out);
            ctx.cidrs(&mut out);
            ctx.ports(&mut out);
            ctx.entries(&mut out);
            ctx.coverage(&mut out);
            ctx.capacity(&mut out);
            ctx.exposure(&mut out);
        }
        match policy_only.join() {
            Ok(mut v) => {
                v.append(&mut out);
                let internal = solver_rules(input, &mut v);
                (v, internal)
            }
            // A check that panicked is a bug; re-raise it rather than
            // report a partial, seemingly clean result.
            Err(e) => std::panic::resume_unwind(e),
        }
    })
}

/// The solver rules, with `--any-pod` in a build with `exposure`; their
/// internal errors.
fn solver_rules(input: &Input<'_>, out: &mut Vec<Finding>) -> Vec<String> {
    let mut internal = Vec::new();
    #[cfg(feature = "exposure")]
    if let Some(s) = &input.solver {
        crate::symbolic::run(input, s, out, &mut internal);
    }
    #[cfg(not(feature = "exposure"))]
    let _ = (input, out, &mut internal);
    internal
}

// ---------------------------------------------------------------- policy-only

/// Validation warnings about what Cilium enforces in place of what is
/// written, as findings: CI gates on lint, and these are accepted by Cilium.
fn from_validation(input: &Input<'_>, out: &mut Vec<Finding>) {
    use policy_lang::diag::Code;
    for d in input.diagnostics {
        let rule = match d.code {
            Code::PortReading => &PORT_READ_DIFFERENTLY,
            Code::ForeignNamespace => &SUBJECT_NAMESPACE_REPLACED,
            _ => continue,
        };
        let Some(span) = d.span else { continue };
        let mut f = Finding::new(rule, span, d.message.clone());
        f.label = d.label.clone();
        f.help = d.help.clone();
        out.push(f);
    }
}

fn policy_checks(p: &Policy, out: &mut Vec<Finding>) {
    match &p.body {
        PolicyBody::Kubernetes(k) => knp_checks(p, k, out),
        PolicyBody::Cilium(_) => {
            for r in p.rules() {
                rule_checks(p, r, out);
            }
        }
    }
}

fn is_world_entity(e: Entity) -> bool {
    matches!(
        e,
        Entity::World | Entity::WorldIpv4 | Entity::WorldIpv6 | Entity::All
    )
}

fn is_zero_prefix(c: &Cidr) -> bool {
    c.prefix_len == 0
}

/// The CIDRs a peer rule names directly (`CIDR` and `CIDRSet.cidr`).
fn peer_cidrs(peer: &PeerRule) -> Vec<&Spanned<Cidr>> {
    let mut v: Vec<&Spanned<Cidr>> = peer.cidr.iter().flatten().collect();
    v.extend(
        peer.cidr_set
            .iter()
            .flatten()
            .filter_map(|c| c.cidr.as_ref()),
    );
    v
}

fn rule_checks(p: &Policy, r: &IrRule, out: &mut Vec<Finding>) {
    // Deny-only directions that are default deny.
    for (dir, allows, denies) in [
        (Direction::Ingress, &r.ingress, &r.ingress_deny),
        (Direction::Egress, &r.egress, &r.egress_deny),
    ] {
        let explicit_off = r.enable_default_deny.as_ref().is_some_and(|d| {
            let set = match dir {
                Direction::Ingress => d.ingress,
                Direction::Egress => d.egress,
            };
            set == Some(false)
        });
        if let (None, Some(d)) = (allows, denies) {
            if !d.is_empty() && !explicit_off {
                let list = dir.list_name(Action::Deny);
                out.push(
                    Finding::new(
                        &DENY_ONLY_ISOLATES,
                        d[0].loc.0,
                        format!("`{list}` without `{}` also denies every other {} traffic of the selected endpoints", dir.list_name(Action::Allow), dir.list_name(Action::Allow)),
                    )
                    .label("the only rules for this direction")
                    .help(format!(
                        "add the allows this direction needs, or `enableDefaultDeny: {{{}: false}}` to deny only these peers",
                        dir.list_name(Action::Allow)
                    )),
                );
            }
        }
    }
    for (dir, action, list) in r.peer_lists() {
        for peer in list.into_iter().flatten() {
            peer_checks(p, dir, action, peer, out);
        }
    }
}

fn peer_checks(
    p: &Policy,
    dir: Direction,
    action: Action,
    peer: &PeerRule,
    out: &mut Vec<Finding>,
) {
    let all_ports = peer.to_ports.as_ref().is_none_or(|v| v.is_empty())
        && peer.icmps.as_ref().is_none_or(|v| v.is_empty());
    if action == Action::Allow {
        let world_entity = peer
            .entities
            .iter()
            .flatten()
            .find(|e| is_world_entity(e.value));
        let zero = peer_cidrs(peer)
            .into_iter()
            .find(|c| is_zero_prefix(&c.value));
        match dir {
            Direction::Ingress if all_ports => {
                let at = world_entity
                    .map(|e| (e.span(), e.value.to_string()))
                    .or_else(|| zero.map(|c| (c.span(), c.value.to_string())));
                if let Some((span, what)) = at {
                    out.push(
                        Finding::new(
                            &WORLD_ALL_PORTS,
                            span,
                            format!("ingress from `{what}` on every port"),
                        )
                        .label("any source, no `toPorts`")
                        .help("list the ports that must be reachable in `toPorts`"),
                    );
                }
            }
            Direction::Egress => {
                if let Some(c) = zero {
                    out.push(
                        Finding::new(
                            &EGRESS_ANYWHERE,
                            c.span(),
                            format!("egress to `{}`: any address", c.value),
                        )
                        .label("every destination")
                        .help("name the destinations: narrower CIDRs, `toFQDNs` or `toServices`"),
                    );
                } else if let Some(e) = world_entity.filter(|_| all_ports) {
                    out.push(
                        Finding::new(
                            &EGRESS_ANYWHERE,
                            e.span(),
                            format!("egress to `{}` on every port", e.value),
                        )
                        .label("any destination, no `toPorts`")
                        .help("name the destinations and ports"),
                    );
                }
            }
            _ => {}
        }
    }
    if p.kind == PolicyKind::CiliumClusterwideNetworkPolicy {
        for s in peer.endpoints.iter().flatten().filter(|s| s.is_empty()) {
            out.push(
                Finding::new(
                    &CLUSTERWIDE_ALL_NAMESPACES,
                    s.loc.0,
                    format!(
                        "`{}: [{{}}]` in a clusterwide policy selects every endpoint of every namespace",
                        policy_lang::ir::L3Kind::Endpoints.field(dir)
                    ),
                )
                .label("all namespaces, kube-system included")
                .help("constrain the namespace (`k8s:io.kubernetes.pod.namespace`) or the labels"),
            );
        }
    }
    for s in peer.requires.iter().flatten() {
        out.push(
            Finding::new(
                &DEPRECATED_REQUIRES,
                s.loc.0,
                format!(
                    "`{}Requires` is deprecated and removed in Cilium 1.17",
                    dir.peer_prefix()
                ),
            )
            .label("applies to every rule selecting these endpoints")
            .help("add the requirement to each rule's endpoint selectors instead"),
        );
    }
    for g in peer.groups.iter().flatten() {
        out.push(
            Finding::new(
                &TO_GROUPS,
                g.loc.0,
                format!(
                    "`{}Groups` needs a cloud-provider integration and resolves to nothing offline",
                    dir.peer_prefix()
                ),
            )
            .label("resolved at run time by the AWS integration only"),
        );
    }
    for f in peer.fqdns.iter().flatten() {
        if let Some(pat) = f.match_pattern.as_ref().filter(|m| m.value.trim() == "*") {
            out.push(
                Finding::new(
                    &FQDN_MATCH_ALL,
                    pat.span(),
                    "`matchPattern: \"*\"` allows every name",
                )
                .label("any DNS name")
                .help("list the domains (`*.example.com`)"),
            );
        }
    }
    for pr in peer.to_ports.iter().flatten() {
        let Some(l7) = &pr.rules else { continue };
        for h in l7.http.iter().flatten() {
            if let Some(m) = &h.method {
                http_method(m, out);
            }
            if let Some(path) = &h.path {
                http_path(path, out);
                unescaped_dot(path, "path", out);
            }
            if let Some(host) = &h.host {
                unescaped_dot(host, "host", out);
            }
        }
    }
}

const HTTP_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

fn http_method(m: &Spanned<String>, out: &mut Vec<Finding>) {
    // Validation already rejected regexes that do not compile.
    let Ok(re) = regex::Regex::new(&format!("^(?:{})$", m.value)) else {
        return;
    };
    if HTTP_METHODS.iter().any(|x| re.is_match(x)) {
        return;
    }
    let upper = m.value.to_uppercase();
    let help = match did_you_mean(&upper, HTTP_METHODS) {
        Some(s) => format!("methods are matched case-sensitively; did you mean `{s}`?"),
        None => format!("HTTP methods are {}", HTTP_METHODS.join(", ")),
    };
    out.push(
        Finding::new(
            &HTTP_UNKNOWN_METHOD,
            m.span(),
            format!(
                "method `{}` matches no HTTP method: the rule allows no request",
                m.value
            ),
        )
        .label("never matches")
        .help(help),
    );
}

/// Characters that make a regex more than one literal string.
const REGEX_META: &[char] = &[
    '*', '+', '?', '[', ']', '(', ')', '{', '}', '|', '^', '$', '\\',
];

fn http_path(path: &Spanned<String>, out: &mut Vec<Finding>) {
    let p = path.value.as_str();
    if let Some(first) = p.chars().next() {
        if !matches!(first, '/' | '.' | '(' | '[' | '^' | '\\') {
            out.push(
                Finding::new(
                    &HTTP_PATH_NO_SLASH,
                    path.span(),
                    format!("path `{p}` cannot match a request path, which always starts with `/`"),
                )
                .label("no leading `/`")
                .help(format!("write `/{p}`")),
            );
            return;
        }
    }
    if p.contains(REGEX_META) || p.len() < 2 {
        return;
    }
    let segments = p.trim_matches('/').split('/').count();
    if p.ends_with('/') || (segments == 1 && !p.contains('.')) {
        out.push(
            Finding::new(
                &HTTP_PATH_PREFIX,
                path.span(),
                format!("path `{p}` matches only `{p}` itself, not the paths under it"),
            )
            .label("the whole path must match")
            .help(format!(
                "for everything under it write `{}/.*`",
                p.trim_end_matches('/')
            )),
        );
    }
}

fn unescaped_dot(s: &Spanned<String>, what: &str, out: &mut Vec<Finding>) {
    let b = s.value.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'.' => {
                let next = b.get(i + 1).copied();
                let prev = i.checked_sub(1).map(|j| b[j]);
                let quantified = matches!(next, Some(b'*' | b'+' | b'?' | b'{'));
                let between_words = prev.is_some_and(|c| c.is_ascii_alphanumeric())
                    && next.is_some_and(|c| c.is_ascii_alphanumeric());
                if !quantified && between_words {
                    let at = Span {
                        start: s.span().start + 1 + i as u32,
                        end: s.span().start + 2 + i as u32,
                        col: s.span().col + 1 + i as u32,
                        ..s.span()
                    };
                    // The value may be written without quotes: point at
                    // the whole value then.
                    let at = if s.span().len() == s.value.len() + 2 {
                        at
                    } else {
                        s.span()
                    };
                    out.push(
                        Finding::new(
                            &HTTP_UNESCAPED_DOT,
                            at,
                            format!("`.` in {what} `{}` matches any character", s.value),
                        )
                        .label("matches any character")
                        .help(format!("escape it: `{}`", escape_dots(&s.value))),
                    );
                    return;
                }
                i += 1;
            }
            _ => i += 1,
        }
    }
}

fn escape_dots(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'\\' {
            out.push_str(&s[i..(i + 2).min(b.len())]);
            i += 2;
            continue;
        }
        let next = b.get(i + 1).copied();
        if c == b'.' && !matches!(next, Some(b'*' | b'+' | b'?' | b'{')) {
            out.push_str("\\.");
        } else {
            out.push(c as char);
        }
        i += 1;
    }
    out
}

fn knp_checks(p: &Policy, k: &KnpSpec, out: &mut Vec<Finding>) {
    let types: Option<Vec<PolicyType>> = k
        .policy_types
        .as_ref()
        .map(|t| t.iter().map(|x| x.value).collect());
    let types_span = k
        .policy_types
        .as_ref()
        .and_then(|t| t.first().map(|x| x.span()))
        .unwrap_or(p.name.span());
    for (dir, rules, rule, pt) in [
        (
            Direction::Ingress,
            &k.ingress,
            &KNP_INGRESS_IGNORED,
            PolicyType::Ingress,
        ),
        (
            Direction::Egress,
            &k.egress,
            &KNP_EGRESS_IGNORED,
            PolicyType::Egress,
        ),
    ] {
        let name = dir.list_name(Action::Allow);
        let listed = types.as_ref().is_some_and(|t| t.contains(&pt));
        if let (Some(_), Some(rs)) = (&types, rules) {
            if !listed && !rs.is_empty() {
                out.push(
                    Finding::new(
                        rule,
                        rs[0].loc.0,
                        format!("`policyTypes` does not list `{pt}`: Kubernetes ignores these `{name}` rules, Cilium enforces them (cilium/cilium#48703)"),
                    )
                    .label("enforced by Cilium, ignored by the Kubernetes spec")
                    .related(types_span, "policyTypes")
                    .help(format!(
                        "add `{pt}` to `policyTypes`, or remove these rules"
                    )),
                );
            }
        }
        if listed && rules.as_ref().is_none_or(|r| r.is_empty()) {
            out.push(
                Finding::new(
                    &KNP_DENY_ALL,
                    types_span,
                    format!("`{pt}` with no `{name}` rules denies all {name} of the selected pods"),
                )
                .label("deny all")
                .help("intended for a default deny; otherwise add the rules"),
            );
        }
        for r in rules.iter().flatten() {
            if r.peers.is_none() && r.ports.is_none() {
                out.push(
                    Finding::new(
                        &KNP_ALLOW_ALL_RULE,
                        r.loc.0,
                        format!("an empty `{name}` rule allows all {name} on every port"),
                    )
                    .label("matches everything")
                    .help("name the peers (`from`/`to`) or `ports` this rule is for"),
                );
            }
        }
    }
}

/// A stable text of a value for equality, ignoring where it was written
/// (`loc` fields).
fn signature<T: serde::Serialize>(v: &T) -> String {
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                m.remove("loc");
                m.values_mut().for_each(strip);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut value = serde_json::to_value(v).unwrap_or_default();
    strip(&mut value);
    value.to_string()
}

fn duplicates(input: &Input<'_>, out: &mut Vec<Finding>) {
    // (namespace, subject, direction, action, peer rule) → first occurrence.
    let mut seen: HashMap<(Option<String>, String, Direction, Action, String), Span> =
        HashMap::new();
    for p in &input.set.policies {
        let ns = p.namespace().map(str::to_owned);
        match &p.body {
            PolicyBody::Cilium(_) => {
                for r in p.rules() {
                    let subject = signature(&(&r.endpoint_selector, &r.node_selector));
                    for (dir, action, list) in r.peer_lists() {
                        for peer in list.into_iter().flatten() {
                            let key = (ns.clone(), subject.clone(), dir, action, signature(peer));
                            dup(&mut seen, key, peer.loc.0, out);
                        }
                    }
                }
            }
            PolicyBody::Kubernetes(k) => {
                let subject = signature(&k.pod_selector);
                for (dir, rules) in [
                    (Direction::Ingress, &k.ingress),
                    (Direction::Egress, &k.egress),
                ] {
                    for r in rules.iter().flatten() {
                        let key = (
                            ns.clone(),
                            format!("knp {subject}"),
                            dir,
                            Action::Allow,
                            signature(r),
                        );
                        dup(&mut seen, key, r.loc.0, out);
                    }
                }
            }
        }
    }
}

fn dup<K: std::hash::Hash + Eq>(
    seen: &mut HashMap<K, Span>,
    key: K,
    at: Span,
    out: &mut Vec<Finding>,
) {
    match seen.get(&key) {
        Some(&first) => out.push(
            Finding::new(
                &DUPLICATE_RULE,
                at,
                "this rule repeats another with the same subject, direction and peers",
            )
            .label("duplicate")
            .related(first, "the same rule")
            .help("keep one copy"),
        ),
        None => {
            seen.insert(key, at);
        }
    }
}

/// Whether a Cilium rule lets its endpoints' DNS lookups through the proxy.
fn has_dns_rule(r: &IrRule) -> bool {
    r.egress.iter().flatten().any(|peer| {
        peer.to_ports.iter().flatten().any(|pr| {
            pr.rules
                .as_ref()
                .is_some_and(|l7| l7.dns.as_ref().is_some_and(|d| !d.is_empty()))
        })
    })
}

fn fqdn_visibility(input: &Input<'_>, out: &mut Vec<Finding>) {
    // Rules with a DNS rule, by (namespace, subject selector); clusterwide
    // ones under `None` apply to every namespace.
    let mut dns: HashSet<(Option<String>, String)> = HashSet::new();
    let mut dns_everywhere: HashSet<String> = HashSet::new();
    for p in &input.set.policies {
        for r in p.rules().filter(|r| has_dns_rule(r)) {
            let subject = signature(&r.endpoint_selector);
            match p.namespace() {
                Some(ns) => {
                    dns.insert((Some(ns.to_owned()), subject));
                }
                None => {
                    dns_everywhere.insert(subject);
                }
            }
        }
    }
    let empty = signature(&Some(Selector::default()));
    for p in &input.set.policies {
        for r in p.rules() {
            let subject = signature(&r.endpoint_selector);
            let covered = has_dns_rule(r)
                || dns_everywhere.contains(&subject)
                || dns_everywhere.contains(&empty)
                || p.namespace().is_some_and(|ns| {
                    dns.contains(&(Some(ns.to_owned()), subject.clone()))
                        || dns.contains(&(Some(ns.to_owned()), empty.clone()))
                });
            if covered {
                continue;
            }
            for peer in r.egress.iter().flatten() {
                if let Some(f) = peer.fqdns.as_ref().and_then(|f| f.first()) {
                    out.push(
                        Finding::new(
                            &FQDN_WITHOUT_DNS,
                            f.loc.0,
                            "no rule for these endpoints lets the DNS proxy see their lookups: this `toFQDNs` never matches",
                        )
                        .label("learns no addresses")
                        .help("add an egress rule to the DNS server on port 53 with `rules: {dns: [{matchPattern: \"*\"}]}` for the same endpoints"),
                    );
                }
            }
        }
    }
}

// ---------------------------------------------------------------- inventory

/// Shared lookups for the inventory rules.
struct InvCtx<'a> {
    input: &'a Input<'a>,
    c: &'a Compiled,
    /// Origin index by where its rule is written.
    origin_at: HashMap<(&'a str, u32, u32), u32>,
    /// Origins that select at least one endpoint.
    selected: HashSet<u32>,
    /// Endpoint indexes selected by each origin.
    endpoints_of: HashMap<u32, Vec<usize>>,
    /// Pods by `namespace/name`.
    pods: HashMap<String, &'a compiler::inventory::Pod>,
}

impl<'a> InvCtx<'a> {
    fn new(input: &'a Input<'a>, c: &'a Compiled) -> InvCtx<'a> {
        let origin_at = c
            .origins
            .iter()
            .enumerate()
            .map(|(i, o)| ((o.file.as_str(), o.line, o.col), i as u32))
            .collect();
        let mut endpoints_of: HashMap<u32, Vec<usize>> = HashMap::new();
        for (i, e) in c.endpoints.iter().enumerate() {
            for &o in &e.selected_by {
                endpoints_of.entry(o).or_default().push(i);
            }
        }
        let selected = endpoints_of.keys().copied().collect();
        let pods = input
            .inventory
            .iter()
            .flat_map(|inv| inv.pods.iter())
            .map(|p| (format!("{}/{}", p.namespace, p.name), p))
            .collect();
        InvCtx {
            input,
            c,
            origin_at,
            selected,
            endpoints_of,
            pods,
        }
    }

    fn origin(&self, s: Span) -> Option<u32> {
        let name = self.input.sources.name(s.file);
        self.origin_at.get(&(name, s.line, s.col)).copied()
    }

    fn inventory(&self) -> &'a compiler::inventory::Inventory {
        self.input
            .inventory
            .unwrap_or_else(|| unreachable!("inventory rules run with one"))
    }

    /// Subjects: (policy, the span of the rule or NetworkPolicy spec, the span to report at).
    fn subjects(&self) -> Vec<(&'a Policy, Span, Span)> {
        let mut v = Vec::new();
        for p in &self.input.set.policies {
            match &p.body {
                PolicyBody::Cilium(_) => {
                    for r in p.rules() {
                        let at = r
                            .endpoint_selector
                            .as_ref()
                            .or(r.node_selector.as_ref())
                            .map_or(r.loc.0, |s| s.loc.0);
                        v.push((p, r.loc.0, at));
                    }
                }
                PolicyBody::Kubernetes(k) => v.push((p, k.loc.0, k.pod_selector.loc.0)),
            }
        }
        v
    }

    fn selection(&self, out: &mut Vec<Finding>) {
        for (p, rule_span, at) in self.subjects() {
            let Some(o) = self.origin(rule_span) else {
                continue;
            };
            if !self.selected.contains(&o) {
                out.push(
                    Finding::new(
                        &SELECTS_NOTHING,
                        at,
                        format!("{} {} selects no endpoint of the inventory", p.kind, p.qualified_name()),
                    )
                    .label("matches no pod")
                    .help("check the labels against the pods' (`kubectl get pods --show-labels`) and the policy's namespace"),
                );
            }
        }
        // Peer selectors that resolved to nothing: the rule is in force but
        // produced no entry and no deny replaced one.
        let mut produced: HashSet<u32> = HashSet::new();
        for m in &self.c.maps {
            for e in m.entries.values() {
                produced.extend(e.origins.iter().copied());
            }
            produced.extend(m.overridden.iter().map(|(a, _)| *a));
        }
        for p in &self.input.set.policies {
            for r in p.rules() {
                let Some(parent) = self.origin(r.loc.0) else {
                    continue;
                };
                if !self.selected.contains(&parent) {
                    continue;
                }
                for (dir, _, list) in r.peer_lists() {
                    for peer in list.into_iter().flatten() {
                        let Some(sels) = peer.endpoints.as_ref().filter(|s| !s.is_empty()) else {
                            continue;
                        };
                        let Some(o) = self.origin(peer.loc.0) else {
                            continue;
                        };
                        if !produced.contains(&o) {
                            out.push(
                                Finding::new(
                                    &PEER_SELECTS_NOTHING,
                                    sels[0].loc.0,
                                    format!("`{}` matches no endpoint: the rule allows nothing", policy_lang::ir::L3Kind::Endpoints.field(dir)),
                                )
                                .label("no endpoint has these labels here")
                                .help("peers are looked up in the policy's namespace unless the selector names one (`k8s:io.kubernetes.pod.namespace`)"),
                            );
                        }
                    }
                }
            }
        }
    }

    fn labels(&self, out: &mut Vec<Finding>) {
        let inv = self.inventory();
        // The pods' identity labels, as compiled: labels Cilium's filter
        // drops are not among them, and selectors on them match nothing.
        let mut pods: HashMap<String, BTreeSet<String>> = HashMap::new();
        for id in self
            .c
            .identities
            .iter()
            .filter(|i| i.kind == compiler::identity::IdKind::Endpoint)
        {
            for l in id.labels.iter() {
                pods.entry(l.key.clone())
                    .or_default()
                    .insert(l.value.clone());
            }
        }
        let mut namespaces: HashMap<String, BTreeSet<String>> = HashMap::new();
        for ns in inv.namespaces.values() {
            for (k, v) in &ns.labels {
                namespaces.entry(k.clone()).or_default().insert(v.clone());
            }
            namespaces
                .entry("kubernetes.io/metadata.name".into())
                .or_default()
                .insert(ns.name.clone());
        }
        let mut nodes: HashMap<String, BTreeSet<String>> = HashMap::new();
        for n in &inv.nodes {
            for (k, v) in &n.labels {
                nodes.entry(k.clone()).or_default().insert(v.clone());
            }
        }
        let check = |sel: &Selector,
                     universe: &HashMap<String, BTreeSet<String>>,
                     what: &str,
                     out: &mut Vec<Finding>| {
            if universe.is_empty() {
                return;
            }
            for (k, v) in &sel.match_labels {
                if k.value.source.as_deref() == Some("reserved") {
                    continue;
                }
                self.label_pair(&k.value.key, k.span(), Some(v), universe, what, out);
            }
            for req in &sel.match_expressions {
                if req.key.value.source.as_deref() == Some("reserved") {
                    continue;
                }
                let first = match req.operator.value {
                    policy_lang::ir::Operator::In => req.values.first(),
                    _ => None,
                };
                self.label_pair(
                    &req.key.value.key,
                    req.key.span(),
                    first,
                    universe,
                    what,
                    out,
                );
            }
        };
        for p in &self.input.set.policies {
            match &p.body {
                PolicyBody::Kubernetes(k) => {
                    check(&k.pod_selector, &pods, "pod", out);
                    for r in k.ingress.iter().chain(k.egress.iter()).flatten() {
                        for peer in r.peers.iter().flatten() {
                            if let Some(s) = &peer.pod_selector {
                                check(s, &pods, "pod", out);
                            }
                            if let Some(s) = &peer.namespace_selector {
                                check(s, &namespaces, "namespace", out);
                            }
                        }
                    }
                }
                PolicyBody::Cilium(_) => {
                    for r in p.rules() {
                        if let Some(s) = &r.endpoint_selector {
                            check(s, &pods, "pod", out);
                        }
                        if let Some(s) = &r.node_selector {
                            check(s, &nodes, "node", out);
                        }
                        for (_, _, list) in r.peer_lists() {
                            for peer in list.into_iter().flatten() {
                                for s in peer.endpoints.iter().flatten() {
                                    check(s, &pods, "pod", out);
                                }
                                for s in peer.nodes.iter().flatten() {
                                    check(s, &nodes, "node", out);
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    fn label_pair(
        &self,
        key: &str,
        key_span: Span,
        value: Option<&Spanned<String>>,
        universe: &HashMap<String, BTreeSet<String>>,
        what: &str,
        out: &mut Vec<Finding>,
    ) {
        match universe.get(key) {
            None => {
                // Namespace labels as Cilium sees them on pods.
                if key.starts_with(NAMESPACE_LABELS_PREFIX)
                    && what == "pod"
                    && universe
                        .keys()
                        .all(|k| !k.starts_with(NAMESPACE_LABELS_PREFIX))
                {
                    return;
                }
                let keys: Vec<&str> = universe.keys().map(String::as_str).collect();
                let mut f = Finding::new(
                    &UNKNOWN_LABEL_KEY,
                    key_span,
                    format!("no {what} of the inventory has a label `{key}`"),
                )
                .label("unknown label key");
                if let Some(s) = did_you_mean(key, &keys) {
                    f = f.help(format!("did you mean `{s}`?"));
                }
                out.push(f);
            }
            Some(values) => {
                let Some(v) = value else { return };
                if values.contains(&v.value) {
                    return;
                }
                let vals: Vec<&str> = values.iter().map(String::as_str).collect();
                let mut f = Finding::new(
                    &UNKNOWN_LABEL_VALUE,
                    v.span(),
                    format!("no {what} has `{key}={}`", v.value),
                )
                .label("unknown value");
                f = match did_you_mean(&v.value, &vals) {
                    Some(s) => f.help(format!("did you mean `{s}`?")),
                    None if vals.len() <= 8 => {
                        f.help(format!("`{key}` has the values {}", vals.join(", ")))
                    }
                    None => f,
                };
                out.push(f);
            }
        }
    }

    fn cidrs(&self, out: &mut Vec<Finding>) {
        let inv = self.inventory();
        let mut pods: Vec<(IpAddr, String)> = inv
            .pods
            .iter()
            .filter(|p| !p.host_network)
            .flat_map(|p| {
                p.ips
                    .iter()
                    .map(move |ip| (*ip, format!("{}/{}", p.namespace, p.name)))
            })
            .collect();
        pods.sort();
        let mut nodes: Vec<(IpAddr, String)> = inv
            .nodes
            .iter()
            .flat_map(|n| n.ips.iter().map(move |ip| (*ip, n.name.clone())))
            .collect();
        nodes.sort();
        let check = |c: &Spanned<Cidr>, out: &mut Vec<Finding>| {
            if c.value.prefix_len == 0 {
                return; // the world; other rules speak about it
            }
            for (list, rule, what) in [
                (&pods, &CIDR_COVERS_PODS, "pod"),
                (&nodes, &CIDR_COVERS_NODES, "node"),
            ] {
                // Addresses sort by family then value, so a prefix's
                // addresses are one contiguous run of the sorted list.
                let (lo, hi) = bounds(&c.value);
                let from = list.partition_point(|(ip, _)| *ip < lo);
                let to = list.partition_point(|(ip, _)| *ip <= hi);
                let inside = &list[from..to];
                if let Some((ip, name)) = inside.first() {
                    let more = if inside.len() > 1 {
                        format!(" and {} more", inside.len() - 1)
                    } else {
                        String::new()
                    };
                    out.push(
                        Finding::new(rule, c.span(), format!("`{}` contains {what} addresses ({name} at {ip}{more}), which CIDR rules do not select", c.value))
                            .label(format!("covers {what}s"))
                            .help(if what == "pod" {
                                "select pods with `fromEndpoints`/`toEndpoints`".to_owned()
                            } else {
                                "use the `host`/`remote-node` entities or `fromNodes`/`toNodes`".to_owned()
                            }),
                    );
                }
            }
        };
        for p in &self.input.set.policies {
            match &p.body {
                PolicyBody::Cilium(_) => {
                    for r in p.rules() {
                        for (_, _, list) in r.peer_lists() {
                            for peer in list.into_iter().flatten() {
                                for c in peer_cidrs(peer) {
                                    check(c, out);
                                }
                            }
                        }
                    }
                }
                PolicyBody::Kubernetes(k) => {
                    for r in k.ingress.iter().chain(k.egress.iter()).flatten() {
                        for peer in r.peers.iter().flatten() {
                            if let Some(b) = &peer.ip_block {
                                check(&b.cidr, out);
                            }
                        }
                    }
                }
            }
        }
    }

    fn ports(&self, out: &mut Vec<Finding>) {
        let inv = self.inventory();
        let names: BTreeSet<&str> = inv
            .pods
            .iter()
            .flat_map(|p| p.ports.iter().filter_map(|c| c.name.as_deref()))
            .collect();
        let named = |port: &Spanned<Port>, out: &mut Vec<Finding>| {
            if let Port::Named(n) = &port.value {
                if !names.contains(n.as_str()) {
                    let known: Vec<&str> = names.iter().copied().collect();
                    let mut f = Finding::new(
                        &NAMED_PORT_UNDEFINED,
                        port.span(),
                        format!("no pod declares a port named `{n}`"),
                    )
                    .label("resolves to no port");
                    if let Some(s) = did_you_mean(n, &known) {
                        f = f.help(format!("did you mean `{s}`?"));
                    }
                    out.push(f);
                }
            }
        };
        // Egress names resolve cluster-wide, per protocol: a name with two
        // numbers resolves to none.
        let mut numbers: HashMap<(&str, u8), BTreeSet<u16>> = HashMap::new();
        for c in inv
            .pods
            .iter()
            .filter(|p| !p.host_network)
            .flat_map(|p| &p.ports)
        {
            if let Some(n) = c.name.as_deref() {
                numbers.entry((n, c.protocol)).or_default().insert(c.port);
            }
        }
        let ambiguous = |port: &Spanned<Port>, protos: &[u8], out: &mut Vec<Finding>| {
            let Port::Named(n) = &port.value else { return };
            for pr in protos {
                let Some(set) = numbers.get(&(n.as_str(), *pr)).filter(|s| s.len() > 1) else {
                    continue;
                };
                let list: Vec<String> = set.iter().map(u16::to_string).collect();
                out.push(
                    Finding::new(
                        &NAMED_PORT_AMBIGUOUS,
                        port.span(),
                        format!(
                            "pods define `{n}` as {}: Cilium resolves it to no port in egress rules, so this rule allows nothing",
                            list.join(" and ")
                        ),
                    )
                    .label("resolves to no port")
                    .help("use the port number, or give the port the same number (or different names) in every pod"),
                );
                return;
            }
        };
        let protos_of =
            |p: Option<&Spanned<policy_lang::ir::Protocol>>, default_tcp: bool| -> Vec<u8> {
                match p
                    .map(|x| x.value)
                    .and_then(policy_lang::ir::Protocol::number)
                {
                    Some(n) => vec![n],
                    None if default_tcp => vec![6],
                    None => vec![6, 17, 132],
                }
            };
        for p in &self.input.set.policies {
            match &p.body {
                PolicyBody::Kubernetes(k) => {
                    for r in k.ingress.iter().chain(k.egress.iter()).flatten() {
                        for kp in r.ports.iter().flatten() {
                            if let Some(port) = &kp.port {
                                named(port, out);
                            }
                        }
                    }
                    for r in k.egress.iter().flatten() {
                        for kp in r.ports.iter().flatten() {
                            if let Some(port) = &kp.port {
                                ambiguous(port, &protos_of(kp.protocol.as_ref(), true), out);
                            }
                        }
                    }
                }
                PolicyBody::Cilium(_) => {
                    for r in p.rules() {
                        let served: Option<BTreeSet<u16>> = self.origin(r.loc.0).map(|o| {
                            self.endpoints_of
                                .get(&o)
                                .into_iter()
                                .flatten()
                                .filter_map(|&i| self.pod_of(i))
                                .flat_map(|pod| pod.ports.iter().map(|c| c.port))
                                .collect()
                        });
                        for (dir, _, list) in r.peer_lists() {
                            for peer in list.into_iter().flatten() {
                                for pr in peer.to_ports.iter().flatten() {
                                    for pp in pr.ports.iter().flatten() {
                                        let Some(port) = &pp.port else { continue };
                                        named(port, out);
                                        if dir == Direction::Egress {
                                            ambiguous(
                                                port,
                                                &protos_of(pp.protocol.as_ref(), false),
                                                out,
                                            );
                                        }
                                        let has_l7 = pr.rules.as_ref().is_some_and(|l| {
                                            l.http.as_ref().is_some_and(|h| !h.is_empty())
                                                || l.kafka.as_ref().is_some_and(|k| !k.is_empty())
                                        });
                                        if dir != Direction::Ingress || !has_l7 {
                                            continue;
                                        }
                                        let (Port::Number(n), Some(served)) =
                                            (&port.value, &served)
                                        else {
                                            continue;
                                        };
                                        if *n != 0 && !served.is_empty() && !served.contains(n) {
                                            let list: Vec<String> =
                                                served.iter().map(u16::to_string).collect();
                                            out.push(
                                                Finding::new(&L7_ON_UNSERVED_PORT, port.span(), format!("L7 rules on port {n}, which none of the selected pods declares"))
                                                    .label("not a container port")
                                                    .help(format!("the selected pods declare {}", list.join(", "))),
                                            );
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    fn pod_of(&self, endpoint: usize) -> Option<&'a compiler::inventory::Pod> {
        let e = &self.c.endpoints[endpoint];
        if e.host {
            return None;
        }
        self.pods.get(&e.name).copied()
    }

    /// Redundant allows and allows a deny kills, from the entries'
    /// provenance.
    fn entries(&self, out: &mut Vec<Finding>) {
        // For each allow origin: (entries, entries that are dead at their
        // first port, entries also granted by others).
        #[derive(Default)]
        struct Tally {
            total: usize,
            dead: usize,
            covered: usize,
            killer: Option<u32>,
        }
        let mut tally: HashMap<u32, Tally> = HashMap::new();
        for m in &self.c.maps {
            let has_deny = m.entries.values().any(|e| e.deny);
            for (k, e) in &m.entries {
                if e.deny {
                    continue;
                }
                // An origin with one entry that is live and its own decides
                // nothing more: skip the lookups when every origin is such.
                let settled = e
                    .origins
                    .iter()
                    .all(|o| tally.get(o).is_some_and(|t| t.total > t.dead + t.covered));
                if settled {
                    for &o in &e.origins {
                        if let Some(t) = tally.get_mut(&o) {
                            t.total += 1;
                        }
                    }
                    continue;
                }
                let dead = if has_deny {
                    m.lookup(k.identity, k.egress, k.proto, k.dport)
                        .filter(|h| h.entry.deny)
                } else {
                    None
                };
                let also = e.origins.len() > 1 || (!e.redirect && broader_allow(m, k, e));
                for &o in &e.origins {
                    let t = tally.entry(o).or_default();
                    t.total += 1;
                    if let Some(h) = dead {
                        t.dead += 1;
                        t.killer = h.entry.origins.first().copied();
                    } else if also {
                        t.covered += 1;
                    }
                }
            }
            for &(allow, deny) in &m.overridden {
                let t = tally.entry(allow).or_default();
                t.total += 1;
                t.dead += 1;
                t.killer = Some(deny);
            }
        }
        for p in &self.input.set.policies {
            for r in p.rules() {
                for peer in r.ingress.iter().chain(r.egress.iter()).flatten() {
                    let Some(o) = self.origin(peer.loc.0) else {
                        continue;
                    };
                    let Some(t) = tally.get(&o) else { continue };
                    if t.total == 0 {
                        continue;
                    }
                    if t.dead == t.total {
                        let mut f = Finding::new(
                            &ALLOW_SHADOWED_BY_DENY,
                            peer.loc.0,
                            "a deny drops all the traffic this allow rule grants",
                        )
                        .label("dead allow")
                        .help("remove the allow, or narrow the deny");
                        if let Some(span) = t.killer.and_then(|d| self.origin_span(d)) {
                            f = f.related(span, "the deny");
                        }
                        out.push(f);
                    } else if t.covered + t.dead == t.total && t.covered > 0 {
                        out.push(
                            Finding::new(&REDUNDANT_RULE, peer.loc.0, "every endpoint, peer and port this rule allows is also allowed by other rules")
                                .label("changes no verdict")
                                .help("remove it, or narrow the broader rule if this one is the intended one"),
                        );
                    }
                }
            }
        }
    }

    fn origin_span(&self, o: u32) -> Option<Span> {
        let origin = self.c.origins.get(o as usize)?;
        // Find the peer rule written there.
        for p in &self.input.set.policies {
            if self.input.sources.name(p.file) != origin.file {
                continue;
            }
            for r in p.rules() {
                for (_, _, list) in r.peer_lists() {
                    for peer in list.into_iter().flatten() {
                        if peer.loc.0.line == origin.line && peer.loc.0.col == origin.col {
                            return Some(peer.loc.0);
                        }
                    }
                }
            }
        }
        None
    }

    fn coverage(&self, out: &mut Vec<Finding>) {
        // Per namespace: (endpoint, ingress enforced, any direction enforced).
        let mut by_ns: std::collections::BTreeMap<&str, Vec<(usize, bool, bool)>> =
            Default::default();
        for (i, e) in self.c.endpoints.iter().enumerate() {
            if e.host {
                continue;
            }
            let Some((ns, _)) = e.name.split_once('/') else {
                continue;
            };
            by_ns
                .entry(ns)
                .or_default()
                .push((i, e.enforced[0], e.enforced[0] || e.enforced[1]));
        }
        let isolated_ns: Vec<&str> = by_ns
            .iter()
            .filter(|(_, eps)| eps.iter().all(|(_, ing, _)| *ing))
            .map(|(ns, _)| *ns)
            .collect();
        for (ns, eps) in &by_ns {
            let open: Vec<usize> = eps
                .iter()
                .filter(|(_, ing, _)| !ing)
                .map(|(i, _, _)| *i)
                .collect();
            if eps.len() >= 2 && open.len() == 1 {
                if let Some(pod) = self.pod_of(open[0]) {
                    out.push(
                        Finding::new(&ENDPOINT_LEFT_OPEN, pod.loc.0, format!("{} accepts any ingress; every other pod of namespace {ns} is isolated", self.c.endpoints[open[0]].name))
                            .label("default allow")
                            .help("check its labels against the namespace's policies"),
                    );
                }
            }
            let no_policy = eps.iter().all(|(_, _, any)| !any);
            if no_policy {
                if let Some(other) = isolated_ns.iter().find(|o| *o != ns) {
                    if let Some(pod) = eps.first().and_then(|(i, _, _)| self.pod_of(*i)) {
                        out.push(
                            Finding::new(&NAMESPACE_WITHOUT_POLICY, pod.loc.0, format!("namespace {ns} has {} and no policy, while namespace {other} is isolated", if eps.len() == 1 { "1 pod".to_owned() } else { format!("{} pods", eps.len()) }))
                                .label("first pod of the namespace")
                                .help("roll the baseline policy out to this namespace too, or document why it stays open"),
                        );
                    }
                }
            }
        }
    }

    fn capacity(&self, out: &mut Vec<Finding>) {
        let cap = self.input.map_capacity.max(1);
        for (i, e) in self.c.endpoints.iter().enumerate() {
            let n = self.c.maps[e.map].len();
            if n * 5 >= cap * 4 && n <= cap {
                if let Some(pod) = self.pod_of(i) {
                    out.push(
                        Finding::new(&MAP_NEAR_CAPACITY, pod.loc.0, format!("{} needs {n} policy-map entries, {}% of the {cap} the map holds", e.name, n * 100 / cap))
                            .label("near the limit")
                            .help("merge rules that differ only by port or peer, or raise --map-capacity (Cilium's --bpf-policy-map-max)"),
                    );
                }
            }
        }
    }

    fn exposure(&self, out: &mut Vec<Finding>) {
        // Endpoints that share a map share the answer.
        let mut by_map: HashMap<usize, Vec<String>> = HashMap::new();
        for (i, e) in self.c.endpoints.iter().enumerate() {
            if e.host || !e.enforced[0] {
                continue;
            }
            let ports = by_map
                .entry(e.map)
                .or_insert_with(|| crate::graph::world_ports(&self.c.maps[e.map]))
                .clone();
            if ports.is_empty() {
                continue;
            }
            if let Some(pod) = self.pod_of(i) {
                out.push(
                    Finding::new(
                        &EXPOSED_TO_WORLD,
                        pod.loc.0,
                        format!(
                            "{} is reachable from outside the cluster on {}",
                            e.name,
                            ports.join(", ")
                        ),
                    )
                    .label("reachable from world"),
                );
            }
        }
    }
}

/// The first and last address of a prefix.
fn bounds(c: &Cidr) -> (IpAddr, IpAddr) {
    match c.addr {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let mask = if c.prefix_len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(c.prefix_len))
            };
            (
                IpAddr::V4((bits & mask).into()),
                IpAddr::V4((bits | !mask).into()),
            )
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let mask = if c.prefix_len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(c.prefix_len))
            };
            (
                IpAddr::V6((bits & mask).into()),
                IpAddr::V6((bits | !mask).into()),
            )
        }
    }
}

/// Whether an allow of other origins covers `k` (the same identity with a
/// shorter prefix, or the wildcard identity with the same or a shorter
/// one) with the same flags: without `e`, the lookup would still allow.
fn broader_allow(m: &compiler::mapstate::PolicyMap, k: &Key, e: &Entry) -> bool {
    let other_allow = |bk: Key| {
        m.entries.get(&bk).is_some_and(|b| {
            !b.deny
                && !b.redirect
                && b.auth == e.auth
                && b.origins.iter().all(|o| !e.origins.contains(o))
        })
    };
    m.prefix_lens().iter().any(|&plen| {
        (plen < k.plen && other_allow(Key::new(k.identity, k.egress, k.proto, k.dport, plen)))
            || (k.identity != 0
                && plen <= k.plen
                && other_allow(Key::new(0, k.egress, k.proto, k.dport, plen)))
    })
}
