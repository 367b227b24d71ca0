//! `--from-cluster` against a fake Kubernetes API server on loopback: no
//! real cluster is reachable here, so this checks everything up to the API
//! server: kubeconfig loading, the list requests, and reading the responses
//! as an inventory.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const SLUICE: &str = env!("CARGO_BIN_EXE_sluice");

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn pod(name: &str, ip: &str, labels: &str) -> String {
    format!(
        r#"{{"metadata":{{"name":"{name}","namespace":"default","labels":{labels}}},"spec":{{"nodeName":"node-1","containers":[{{"name":"c"}}]}},"status":{{"podIP":"{ip}","podIPs":[{{"ip":"{ip}"}}]}}}}"#
    )
}

/// The answer to a GET of `path`, as the API server sends it.
fn body(path: &str) -> Option<String> {
    let items = match path {
        "/api/v1/namespaces" => vec![r#"{"metadata":{"name":"default","labels":{"kubernetes.io/metadata.name":"default"}}}"#.to_owned()],
        "/api/v1/nodes" => vec![r#"{"metadata":{"name":"node-1"},"status":{"addresses":[{"type":"InternalIP","address":"192.168.49.2"}]}}"#.to_owned()],
        "/api/v1/pods" => vec![
            pod("deathstar-6fb5694d48-5hmds", "10.0.0.10", r#"{"org":"empire","class":"deathstar"}"#),
            pod("tiefighter", "10.0.0.11", r#"{"org":"empire","class":"tiefighter"}"#),
            pod("xwing", "10.0.0.12", r#"{"org":"alliance","class":"xwing"}"#),
        ],
        "/api/v1/services" => vec![],
        // The example's two policies as the API server returns them, with
        // server-side fields sluice must ignore; no clusterwide CRD (404).
        "/apis/cilium.io/v2/ciliumnetworkpolicies" => vec![r#"{"apiVersion":"cilium.io/v2","metadata":{"name":"rule1","namespace":"default","uid":"0b4c","resourceVersion":"812","generation":1,"creationTimestamp":"2026-11-25T10:00:00Z","managedFields":[{"manager":"kubectl"}]},"spec":{"endpointSelector":{"matchLabels":{"org":"empire","class":"deathstar"}},"ingress":[{"fromEndpoints":[{"matchLabels":{"org":"empire"}}],"toPorts":[{"ports":[{"port":"80","protocol":"TCP"}],"rules":{"http":[{"method":"POST","path":"/v1/request-landing"}]}}]}]},"status":{"conditions":[]}}"#.to_owned()],
        "/apis/networking.k8s.io/v1/networkpolicies" => vec![r#"{"metadata":{"name":"default-deny-ingress","namespace":"default","uid":"77aa","resourceVersion":"9"},"spec":{"podSelector":{},"policyTypes":["Ingress"]}}"#.to_owned()],
        _ => return None,
    };
    Some(format!(
        r#"{{"kind":"List","apiVersion":"v1","metadata":{{}},"items":[{}]}}"#,
        items.join(",")
    ))
}

/// Serves at most `max` connections on 127.0.0.1, then stops; returns the
/// port and a counter of requests served.
fn fake_api_server(max: usize) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let port = listener.local_addr().expect("addr").port();
    let served = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&served);
    std::thread::spawn(move || {
        for stream in listener.incoming().take(max) {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            // Drain the headers.
            let mut h = String::new();
            while reader.read_line(&mut h).is_ok_and(|n| n > 2) {
                h.clear();
            }
            let path = line
                .split_whitespace()
                .nth(1)
                .unwrap_or("")
                .split('?')
                .next()
                .unwrap_or("")
                .to_owned();
            let (status, text) = match body(&path) {
                Some(b) => ("200 OK", b),
                None => (
                    "404 Not Found",
                    r#"{"kind":"Status","code":404}"#.to_owned(),
                ),
            };
            count.fetch_add(1, Ordering::SeqCst);
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                text.len()
            );
        }
    });
    (port, served)
}

fn kubeconfig(dir: &Path, port: u16) -> PathBuf {
    let p = dir.join("kubeconfig");
    std::fs::write(
        &p,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://127.0.0.1:{port}\nusers:\n- name: tester\n  user:\n    token: not-a-secret\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: tester\ncurrent-context: fake\n"
        ),
    )
    .expect("write kubeconfig");
    p
}

fn run(kubeconfig: &Path, args: &[&str]) -> Output {
    Command::new(SLUICE)
        .args(args)
        .current_dir(root())
        .env("KUBECONFIG", kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env("NO_COLOR", "1")
        .output()
        .expect("run sluice")
}

/// Runs `sluice simulate --from-cluster <extra>` on the example's flows
/// against a fresh fake API server; returns the output and the number of
/// requests the server answered.
fn simulate_against_fake_cluster(tag: &str, extra: &[&str]) -> (Output, usize) {
    let dir = std::env::temp_dir().join(format!("sluice-cluster-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let (port, served) = fake_api_server(16);
    let kc = kubeconfig(&dir, port);
    let mut args = vec![
        "simulate",
        "--from-cluster",
        "-f",
        "fixtures/example/flows.yaml",
    ];
    args.extend_from_slice(extra);
    let o = run(&kc, &args);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("9 of 9 expectations met"));
    (o, served.load(Ordering::SeqCst))
}

#[test]
fn inventory_from_a_live_api_server() {
    let (_, served) = simulate_against_fake_cluster("inv", &["-p", "fixtures/example/policies"]);
    assert_eq!(served, 4, "one request per list");
}

#[test]
fn policies_and_inventory_from_a_live_api_server() {
    // No policy files at all: everything comes from the cluster.
    let (_, served) = simulate_against_fake_cluster("pol", &["--cluster-policies"]);
    assert_eq!(
        served, 7,
        "three policy lists (one a 404) and four inventory lists"
    );
}

#[test]
fn unreachable_cluster_is_an_input_error() {
    let dir = std::env::temp_dir().join(format!("sluice-cluster-down-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    // Bind then drop: nothing listens on this loopback port any more.
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let kc = kubeconfig(&dir, port);
    let o = run(
        &kc,
        &[
            "compile",
            "--from-cluster",
            "-p",
            "fixtures/example/policies",
        ],
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--from-cluster: GET"), "{err}");
}
