//! `--from-cluster`: the inventory read from a live cluster through the
//! kubeconfig (or in-cluster config), with the kube crate.
//!
//! The four lists are fetched as raw JSON and handed to the same inventory
//! reader as `kubectl get -o yaml` output, so both paths mean the same thing.
//! Items of a list response carry no `kind`; it is filled in from the list.

use kube::Client;

const LISTS: &[(&str, &str)] = &[
    ("/api/v1/namespaces", "Namespace"),
    ("/api/v1/nodes", "Node"),
    ("/api/v1/pods", "Pod"),
    ("/api/v1/services", "Service"),
];

/// Policy kinds read with `--cluster-policies`. The Cilium CRDs may not be
/// installed (a 404 then means "none of that kind"); NetworkPolicy always is.
const POLICY_LISTS: &[(&str, &str, &str, bool)] = &[
    (
        "/apis/cilium.io/v2/ciliumnetworkpolicies",
        "CiliumNetworkPolicy",
        "cilium.io/v2",
        true,
    ),
    (
        "/apis/cilium.io/v2/ciliumclusterwidenetworkpolicies",
        "CiliumClusterwideNetworkPolicy",
        "cilium.io/v2",
        true,
    ),
    (
        "/apis/networking.k8s.io/v1/networkpolicies",
        "NetworkPolicy",
        "networking.k8s.io/v1",
        false,
    ),
];

/// Fetches namespaces, nodes, pods and services as one `kind: List` JSON
/// document.
pub fn fetch_inventory() -> Result<String, String> {
    let lists: Vec<(&str, &str, &str, bool)> = LISTS
        .iter()
        .map(|(path, kind)| (*path, *kind, "v1", false))
        .collect();
    fetch_lists(&lists)
}

/// Fetches the cluster's CiliumNetworkPolicies, CiliumClusterwideNetworkPolicies
/// and NetworkPolicies as one `kind: List` JSON document. Server-side
/// bookkeeping (`status`, managed fields) is dropped: it is not policy.
pub fn fetch_policies() -> Result<String, String> {
    fetch_lists(POLICY_LISTS)
}

/// GETs each (path, kind, apiVersion, may-be-missing) list and joins the
/// items, with `kind` and `apiVersion` filled in, into one `kind: List`.
fn fetch_lists(lists: &[(&str, &str, &str, bool)]) -> Result<String, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    rt.block_on(async {
        let config = kube::Config::infer()
            .await
            .map_err(|e| format!("no usable kubeconfig or in-cluster config: {e}"))?;
        let server = config.cluster_url.to_string();
        let client = Client::try_from(config)
            .map_err(|e| format!("cannot build a client for {server}: {e}"))?;
        let mut items = Vec::new();
        for &(path, kind, api_version, optional) in lists {
            let req = http::Request::get(path)
                .body(Vec::new())
                .map_err(|e| format!("bad request {path}: {e}"))?;
            let text = match client.request_text(req).await {
                Ok(t) => t,
                Err(kube::Error::Api(e)) if optional && e.code == 404 => continue,
                Err(e) => {
                    return Err(format!(
                        "GET {server}{} failed: {e}",
                        path.trim_start_matches('/')
                    ))
                }
            };
            let list: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| format!("GET {path}: not JSON: {e}"))?;
            let Some(list_items) = list.get("items").and_then(|i| i.as_array()) else {
                return Err(format!("GET {path}: the response has no `items` list"));
            };
            for item in list_items {
                let mut item = item.clone();
                if let Some(obj) = item.as_object_mut() {
                    obj.insert("kind".into(), serde_json::Value::String(kind.into()));
                    obj.entry("apiVersion")
                        .or_insert_with(|| api_version.into());
                    // A policy's status is bookkeeping; a pod's or a
                    // node's holds its addresses.
                    if !matches!(kind, "Pod" | "Node" | "Service" | "Namespace") {
                        obj.remove("status");
                    }
                    if let Some(meta) = obj.get_mut("metadata").and_then(|m| m.as_object_mut()) {
                        meta.remove("managedFields");
                    }
                }
                items.push(item);
            }
        }
        let doc = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items});
        serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())
    })
}
