//! Workloads as endpoints: what a repository holds before anything runs.
//!
//! A Deployment, StatefulSet, DaemonSet, ReplicaSet, Job or CronJob says
//! what its pods will look like (the pod template's labels, service
//! account, host networking and named ports), which is all that policy
//! sees of a pod but its address. Each workload becomes `--replicas`
//! endpoints (one by default) named `<workload>-<i>`, with addresses
//! allocated in [`ADDRESS_RANGE`] in order of namespace and name, so the
//! same manifests always give the same state. A workload whose pods the
//! inventory already holds (a real dump beside the manifests) is not
//! expanded: real pods win. A workload that another one in the inventory
//! controls (the ReplicaSets of a Deployment, the Jobs of a CronJob) is
//! not expanded either, and neither is one scaled to zero.

use crate::inventory::{
    bad, map_at, name_loc, pod_of_template, str_at, Inventory, Pod, WorkloadRef,
};
use policy_lang::diag::Diagnostic;
use policy_lang::yaml::{Node, Value};
use std::collections::{BTreeSet, HashSet};
use std::net::{IpAddr, Ipv4Addr};

/// The kinds read as workloads.
pub const KINDS: &[&str] = &[
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "Job",
    "CronJob",
];

/// Where addresses of endpoints made from templates come from.
pub const ADDRESS_RANGE: &str = "10.240.0.0/12";
const FIRST: u32 = u32::from_be_bytes([10, 240, 0, 1]);
const LAST: u32 = u32::from_be_bytes([10, 255, 255, 254]);

/// A workload read from a manifest.
#[derive(Clone, Debug)]
pub struct Workload {
    kind: String,
    name: String,
    namespace: String,
    /// `spec.replicas` when written.
    replicas: Option<i64>,
    /// The controller that owns this workload (`ownerReferences`).
    owner: Option<(String, String)>,
    template: Pod,
}

/// Reads a workload's pod template; a workload without one is an error.
pub(crate) fn read(
    kind: &str,
    name: String,
    namespace: String,
    node: &Node,
    diags: &mut Vec<Diagnostic>,
) -> Option<Workload> {
    let path: &[&str] = if kind == "CronJob" {
        &["spec", "jobTemplate", "spec", "template"]
    } else {
        &["spec", "template"]
    };
    let template = path.iter().try_fold(node, |n, k| n.get(k));
    let Some(template) = template else {
        bad(
            diags,
            node.span,
            format!(
                "{kind} {namespace}/{name} has no pod template (`{}`)",
                path.join(".")
            ),
        );
        return None;
    };
    let labels = map_at(template, &["metadata", "labels"], diags);
    let replicas = match node.get("spec").and_then(|s| s.get("replicas")) {
        Some(r) => match r.as_scalar().map(|s| s.resolve()) {
            Some(Value::Int(i)) if i >= 0 => Some(i),
            _ => {
                bad(
                    diags,
                    r.span,
                    format!("{kind} {namespace}/{name}: `replicas` is not a whole number"),
                );
                return None;
            }
        },
        None => None,
    };
    let template = pod_of_template(
        name.clone(),
        namespace.clone(),
        labels,
        template.get("spec"),
        name_loc(node),
        diags,
    );
    Some(Workload {
        kind: kind.to_owned(),
        name,
        namespace,
        replicas,
        owner: controller(node),
        template,
    })
}

/// An object's controlling owner (`ownerReferences` with `controller:
/// true`, or the first one).
fn controller(node: &Node) -> Option<(String, String)> {
    let refs = crate::inventory::seq_at(node, &["metadata", "ownerReferences"]);
    let is_controller = |r: &&Node| {
        r.get("controller")
            .and_then(|c| c.as_scalar())
            .is_some_and(|s| matches!(s.resolve(), Value::Bool(true)))
    };
    let r = refs.iter().find(is_controller).or(refs.first())?;
    Some((
        str_at(r, &["kind"])?.to_owned(),
        str_at(r, &["name"])?.to_owned(),
    ))
}

/// The workload a real pod belongs to. A Deployment's pods are owned by
/// a ReplicaSet named `<deployment>-<pod-template-hash>`, and the pod
/// carries that hash as a label, which names the Deployment exactly.
pub(crate) fn owner_of(node: &Node) -> Option<WorkloadRef> {
    let (kind, name) = controller(node)?;
    if !KINDS.contains(&kind.as_str()) {
        return None;
    }
    if kind == "ReplicaSet" {
        let hash = str_at(node, &["metadata", "labels", "pod-template-hash"]);
        if let Some(deployment) = hash.and_then(|h| name.strip_suffix(&format!("-{h}"))) {
            return Some(WorkloadRef {
                kind: "Deployment".into(),
                name: deployment.to_owned(),
                templated: false,
            });
        }
    }
    Some(WorkloadRef {
        kind,
        name,
        templated: false,
    })
}

/// Whether Job `job` was made by CronJob `cron` (`<cronjob>-<time>`).
fn job_of_cronjob(job: &str, cron: &str) -> bool {
    job.strip_prefix(cron)
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
}

/// Turns the inventory's workloads into endpoints (see the module's
/// documentation for which ones, and how they are named and addressed).
pub(crate) fn expand(
    inv: &mut Inventory,
    opts: &crate::inventory::Options,
    diags: &mut Vec<Diagnostic>,
) {
    let workloads = std::mem::take(&mut inv.workloads);
    let present: HashSet<(&str, &str, &str)> = workloads
        .iter()
        .map(|w| (w.namespace.as_str(), w.kind.as_str(), w.name.as_str()))
        .collect();
    // A real pod of a CronJob's Job belongs to the CronJob.
    for p in &mut inv.pods {
        if let Some(w) = &mut p.workload {
            if w.kind == "Job" {
                let cron = workloads.iter().find(|c| {
                    c.kind == "CronJob"
                        && c.namespace == p.namespace
                        && job_of_cronjob(&w.name, &c.name)
                });
                if let Some(c) = cron {
                    w.kind = "CronJob".into();
                    w.name = c.name.clone();
                }
            }
        }
    }
    let real: HashSet<(String, String, String)> = inv
        .pods
        .iter()
        .filter_map(|p| {
            let w = p.workload.as_ref()?;
            Some((p.namespace.clone(), w.kind.clone(), w.name.clone()))
        })
        .collect();
    let mut names: HashSet<(String, String)> = inv
        .pods
        .iter()
        .map(|p| (p.namespace.clone(), p.name.clone()))
        .collect();
    let mut made = Vec::new();
    for w in &workloads {
        let controlled = w.owner.as_ref().is_some_and(|(k, n)| {
            present.contains(&(w.namespace.as_str(), k.as_str(), n.as_str()))
        });
        let has_real = real.contains(&(w.namespace.clone(), w.kind.clone(), w.name.clone()));
        if controlled || has_real || w.replicas == Some(0) {
            continue;
        }
        for i in 0..opts.replicas {
            let mut name = format!("{}-{i}", w.name);
            if names.contains(&(w.namespace.clone(), name.clone())) {
                name = format!("{}-{}-{i}", w.name, w.kind.to_ascii_lowercase());
            }
            names.insert((w.namespace.clone(), name.clone()));
            let mut pod = w.template.clone();
            pod.name = name;
            pod.workload = Some(WorkloadRef {
                kind: w.kind.clone(),
                name: w.name.clone(),
                templated: true,
            });
            made.push(pod);
        }
    }
    made.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    let mut used: BTreeSet<IpAddr> = inv
        .pods
        .iter()
        .flat_map(|p| p.ips.iter().copied())
        .chain(inv.nodes.iter().flat_map(|n| n.ips.iter().copied()))
        .collect();
    let mut next = FIRST;
    for pod in &mut made {
        if pod.host_network {
            continue;
        }
        while next <= LAST && used.contains(&IpAddr::V4(Ipv4Addr::from(next))) {
            next += 1;
        }
        if next > LAST {
            bad(
                diags,
                pod.loc.0,
                format!(
                    "no address left in {ADDRESS_RANGE} for {}",
                    pod.qualified_name()
                ),
            );
            break;
        }
        let ip = IpAddr::V4(Ipv4Addr::from(next));
        used.insert(ip);
        pod.ips = vec![ip];
        pod.ip_locs = vec![pod.loc];
    }
    // Namespaces that only workloads name get Kubernetes' default label.
    for pod in &made {
        if !inv.namespaces.contains_key(&pod.namespace) {
            let ns = inv.namespace(&pod.namespace);
            inv.namespaces.insert(pod.namespace.clone(), ns);
        }
    }
    inv.pods.extend(made);
}

#[cfg(test)]
mod tests {
    use super::*;
    use policy_lang::source::SourceMap;

    fn load(text: &str, replicas: u32) -> (Inventory, Vec<Diagnostic>) {
        let mut sources = SourceMap::new();
        let mut diags = Vec::new();
        let inv = crate::inventory::load_all(
            &[],
            vec![("inv.yaml".into(), text.into())],
            1 << 20,
            crate::inventory::Options {
                replicas,
                ..Default::default()
            },
            &mut sources,
            &mut diags,
        );
        (inv, diags)
    }

    const DEPLOY: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: shop}\nspec:\n  replicas: 3\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      serviceAccountName: web-sa\n      containers:\n      - name: c\n        ports: [{name: HTTP, containerPort: 8080}]\n";

    #[test]
    fn a_deployment_is_one_endpoint_with_its_templates_labels_and_ports() {
        let (inv, diags) = load(DEPLOY, 1);
        assert!(diags.is_empty(), "{diags:?}");
        assert_eq!(inv.pods.len(), 1);
        let p = &inv.pods[0];
        assert_eq!(p.qualified_name(), "shop/web-0");
        assert_eq!(p.labels.get("app").map(String::as_str), Some("web"));
        assert_eq!(p.service_account, "web-sa");
        assert_eq!(p.ports[0].name.as_deref(), Some("http"));
        assert_eq!(p.ips, vec!["10.240.0.1".parse::<IpAddr>().expect("ip")]);
        assert_eq!(
            inv.namespaces["shop"]
                .labels
                .get("kubernetes.io/metadata.name")
                .map(String::as_str),
            Some("shop")
        );
        let (inv, _) = load(DEPLOY, 3);
        let names: Vec<String> = inv.pods.iter().map(Pod::qualified_name).collect();
        assert_eq!(names, ["shop/web-0", "shop/web-1", "shop/web-2"]);
    }

    #[test]
    fn real_pods_win_over_templates_and_controlled_workloads_are_not_doubled() {
        let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web-7d9f8-abcde\n  namespace: shop\n  labels: {app: web, pod-template-hash: 7d9f8}\n  ownerReferences: [{kind: ReplicaSet, name: web-7d9f8, controller: true}]\nspec: {containers: [{name: c}]}\nstatus: {podIP: 10.240.0.1}\n";
        let rs = "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata:\n  name: web-7d9f8\n  namespace: shop\n  ownerReferences: [{kind: Deployment, name: web, controller: true}]\nspec:\n  replicas: 1\n  template: {metadata: {labels: {app: web}}, spec: {containers: [{name: c}]}}\n";
        let (inv, diags) = load(&format!("{DEPLOY}---\n{pod}---\n{rs}"), 1);
        assert!(diags.is_empty(), "{diags:?}");
        let names: Vec<String> = inv.pods.iter().map(Pod::qualified_name).collect();
        assert_eq!(names, ["shop/web-7d9f8-abcde"]);
        let w = inv.pods[0].workload.as_ref().expect("owner");
        assert_eq!(
            (w.kind.as_str(), w.name.as_str(), w.templated),
            ("Deployment", "web", false)
        );
        // Without the real pod, the Deployment makes one endpoint, and its
        // ReplicaSet none; the templated address avoids real ones.
        let (inv, _) = load(&format!("{DEPLOY}---\n{rs}"), 1);
        let names: Vec<String> = inv.pods.iter().map(Pod::qualified_name).collect();
        assert_eq!(names, ["shop/web-0"]);
    }

    #[test]
    fn cronjobs_scaled_down_workloads_and_taken_addresses() {
        let cron = "apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: backup, namespace: ops}\nspec:\n  schedule: '@daily'\n  jobTemplate:\n    spec:\n      template:\n        metadata: {labels: {app: backup}}\n        spec: {containers: [{name: c}]}\n";
        let old = "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {name: old, namespace: ops}\nspec: {replicas: 0, template: {metadata: {labels: {app: old}}, spec: {containers: [{name: c}]}}}\n";
        let taken = "apiVersion: v1\nkind: Pod\nmetadata: {name: x, namespace: ops}\nspec: {containers: [{name: c}]}\nstatus: {podIP: 10.240.0.1}\n";
        let (inv, diags) = load(&format!("{cron}---\n{old}---\n{taken}"), 1);
        assert!(diags.is_empty(), "{diags:?}");
        let backup = inv.pod("ops", "backup-0").expect("the CronJob's endpoint");
        assert_eq!(
            backup.ips,
            vec!["10.240.0.2".parse::<IpAddr>().expect("ip")]
        );
        assert!(
            inv.pod("ops", "old-0").is_none(),
            "replicas: 0 makes no endpoint"
        );
        // A finished run of the CronJob is left out, and its address is free.
        let done = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: backup-28000000-q\n  namespace: ops\n  ownerReferences: [{kind: Job, name: backup-28000000}]\nspec: {containers: [{name: c}]}\nstatus: {phase: Succeeded, podIP: 10.240.0.1}\n";
        let (inv, diags) = load(&format!("{cron}---\n{done}---\n{taken}"), 1);
        assert!(diags.is_empty(), "{diags:?}");
        assert_eq!(inv.left_out.len(), 1);
        assert!(inv.pod("ops", "backup-0").is_some());
    }

    #[test]
    fn a_workload_without_a_template_is_an_error() {
        let (_, diags) = load(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: w}\nspec: {}\n",
            1,
        );
        assert!(
            diags
                .iter()
                .any(|d| d.is_error() && d.message.contains("has no pod template")),
            "{diags:?}"
        );
    }
}
