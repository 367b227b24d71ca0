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

/// Fetches namespaces, nodes, pods and services as one `kind: List` JSON
/// document.
pub fn fetch_inventory() -> Result<String, String> {
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
        for (path, kind) in LISTS {
            let req = http::Request::get(*path)
                .body(Vec::new())
                .map_err(|e| format!("bad request {path}: {e}"))?;
            let text = client
                .request_text(req)
                .await
                .map_err(|e| format!("GET {server}{} failed: {e}", path.trim_start_matches('/')))?;
            let list: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| format!("GET {path}: not JSON: {e}"))?;
            let Some(list_items) = list.get("items").and_then(|i| i.as_array()) else {
                return Err(format!("GET {path}: the response has no `items` list"));
            };
            for item in list_items {
                let mut item = item.clone();
                if let Some(obj) = item.as_object_mut() {
                    obj.insert("kind".into(), serde_json::Value::String((*kind).into()));
                    obj.entry("apiVersion").or_insert_with(|| "v1".into());
                }
                items.push(item);
            }
        }
        let doc = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items});
        serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())
    })
}
