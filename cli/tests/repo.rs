//! sluice on a repository as teams keep one (`fixtures/repo/`): policies of
//! every format beside workload manifests that never ran, a Helm chart, a
//! dump with a finished pod, and policy unit tests that name workloads.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SLUICE: &str = env!("CARGO_BIN_EXE_sluice");

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn sluice(args: &[&str]) -> Output {
    Command::new(SLUICE)
        .args(args)
        .current_dir(root())
        .env("NO_COLOR", "1")
        .output()
        .expect("run sluice")
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn settings() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path(root().join("snapshots"));
    s.set_prepend_module_to_snapshot(false);
    s
}

const REPO: [&str; 4] = ["-p", "fixtures/repo", "-i", "fixtures/repo"];

fn run(cmd: &str, extra: &[&str]) -> Output {
    let mut a = vec![cmd];
    a.extend(REPO);
    a.extend(extra);
    sluice(&a)
}

#[test]
fn validate_reads_the_policies_and_passes_over_the_rest() {
    let o = sluice(&["validate", "-v", "fixtures/repo"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    // Cilium's own rule format is a policy; the chart, the flows file and
    // the README are not read as objects; an unmodelled kind is named.
    assert!(String::from_utf8_lossy(&o.stdout).contains("4 policies in 6 files: 4 valid"));
    assert!(
        err.contains("chart/templates/deployment.yaml: Helm template"),
        "{err}"
    );
    assert!(err.contains("BaselineAdminNetworkPolicy (policy.networking.k8s.io) is not modelled"));
    settings().bind(|| insta::assert_snapshot!("repo__validate", text(&o)));
}

#[test]
fn compile_makes_endpoints_of_the_workloads_and_leaves_finished_pods_out() {
    let o = run("compile", &["--stats"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("3 endpoints from workload templates (addresses allocated in 10.240.0.0/12"),
        "{err}"
    );
    // The finished pod's address belongs to a running pod now: no conflict.
    assert!(err.contains("1 finished pod left out"), "{err}");
    assert!(!err.contains("duplicate-ip"), "{err}");
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(
            "tools/migrate-28421100-x7k2p is not an endpoint: it has finished (phase Succeeded)"
        ),
        "{}",
        text(&o)
    );
    settings().bind(|| insta::assert_snapshot!("repo__compile", text(&o)));
    // --replicas makes that many endpoints of each workload.
    let o = run("compile", &["--replicas", "2"]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("6 endpoints from workload templates"),
        "{}",
        text(&o)
    );
}

#[test]
fn policy_unit_tests_name_workloads_and_pass() {
    let o = run("simulate", &["-f", "fixtures/repo/flows.yaml"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(out.contains("9 of 9 expectations met"), "{out}");
    // A flow to the Service is judged at its backend, on the targetPort
    // its name leads to.
    assert!(
        out.contains("ALLOWED  world → shop/web-0 (service shop/web:80) 8080/TCP ✓"),
        "{out}"
    );
    settings().bind(|| insta::assert_snapshot!("repo__simulate", text(&o)));
    // With two endpoints per workload, each backend is judged.
    let o = run(
        "simulate",
        &["--replicas", "2", "-f", "fixtures/repo/flows.yaml"],
    );
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        out.contains("world → shop/web-1 (service shop/web:80) 8080/TCP ✓"),
        "{out}"
    );
    // A workload and a selector naming two pods each stand for every
    // pair, and each must meet the expectation.
    for pair in [
        "shop/web-0 → shop/db-1",
        "shop/web-1 → shop/db-0",
        "shop/web-1 → shop/db-1",
    ] {
        assert!(
            out.contains(&format!("ALLOWED  {pair} 5432/TCP ✓")),
            "{pair}: {out}"
        );
    }
    assert!(out.contains("26 of 26 expectations met"), "{out}");
    // A port the Service does not have, a misspelt pod and a selector of
    // no pod are errors, not guesses.
    let dir = std::env::temp_dir().join(format!("sluice-repo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let flows = dir.join("flows.yaml");
    std::fs::write(
        &flows,
        "- {from: world, to: svc:shop/web, port: 443, protocol: TCP}\n- {from: shop/wbe-0, to: shop/db, port: 5432}\n- {from: \"app=nope\", to: shop/db, port: 5432}\n",
    )
    .expect("write");
    let o = run("simulate", &["-f", flows.to_str().expect("utf-8")]);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    for want in [
        "Service shop/web has no port 443/TCP (its ports: 80/TCP)",
        "did you mean `shop/web-0`?",
        "the selector `app=nope` matches no pod of the inventory",
    ] {
        assert!(text(&o).contains(want), "{want}: {}", text(&o));
    }
    // A workload with several endpoints, a Service and a CIDR are traced
    // once for each peer they stand for.
    let o = run(
        "trace",
        &[
            "--replicas",
            "2",
            "--from",
            "shop/web",
            "--to",
            "shop/service/web",
            "--port",
            "80/TCP",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("shop/web → shop/service/web 80/TCP stands for 4 flows: each is traced"),
        "{out}"
    );
    for pair in [
        "shop/web-0 → shop/web-1 (service shop/web:80) 8080/TCP",
        "shop/web-1 → shop/web-0 (service shop/web:80) 8080/TCP",
    ] {
        assert!(out.contains(&format!("Tracing {pair}")), "{pair}: {out}");
    }
    // A pod reaching itself through its Service never meets policy; the
    // default-deny namespace drops the others.
    assert!(out.contains("4 flows: 2 allowed, 2 denied"), "{out}");
    // The same as one JSON document, a flow per traced pair.
    let o = run(
        "trace",
        &[
            "--replicas",
            "2",
            "--from",
            "shop/web",
            "--to",
            "shop/service/web",
            "--port",
            "80/TCP",
            "-o",
            "json",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("trace JSON");
    assert_eq!(v["schemaVersion"], 2);
    let flows = v["flows"].as_array().expect("flows");
    assert_eq!(flows.len(), 4, "{v:#}");
    let verdicts: Vec<&str> = flows.iter().filter_map(|f| f["verdict"].as_str()).collect();
    assert_eq!(
        verdicts.iter().filter(|x| **x == "allowed").count(),
        2,
        "{v:#}"
    );
    assert!(
        flows
            .iter()
            .all(|f| f["source"]["endpoint"].is_string() && f["steps"].is_array()),
        "{v:#}"
    );
    let o = run(
        "trace",
        &[
            "--from",
            "tools/toolbox",
            "--to",
            "10.240.0.0/12",
            "--port",
            "5432",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    // The rest of the range is world; each endpoint inside is its own peer.
    for want in [
        "Tracing tools/toolbox → 10.240.0.0 5432/TCP",
        "Tracing tools/toolbox → shop/db-0 5432/TCP",
        "Tracing tools/toolbox → shop/web-0 5432/TCP",
        "4 flows: 1 allowed, 3 denied",
    ] {
        assert!(out.contains(want), "{want}: {out}");
    }
    // The finished pod is not an endpoint: a flow naming it says why.
    let o = run(
        "trace",
        &[
            "--from",
            "tools/migrate-28421100-x7k2p",
            "--to",
            "shop/db",
            "--port",
            "5432/TCP",
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("is not an endpoint: it has finished (phase Succeeded)"),
        "{}",
        text(&o)
    );
}

#[test]
fn matrix_and_lint_see_the_workloads() {
    let o = run("matrix", &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let m = String::from_utf8_lossy(&o.stdout);
    assert!(m.contains("shop/web-0 => shop/db-0 : TCP 5432"), "{m}");
    assert!(m.contains("shop/backup-0 => shop/db-0 : TCP 5432"), "{m}");
    settings().bind(|| insta::assert_snapshot!("repo__matrix", text(&o)));
    let o = sluice(&["lint", "fixtures/repo", "-i", "fixtures/repo"]);
    let l = text(&o);
    // Findings about endpoints point at the workload's manifest.
    assert!(
        l.contains("shop/web-0 is reachable from outside the cluster on 8080/TCP"),
        "{l}"
    );
    assert!(l.contains("fixtures/repo/manifests/shop.yaml:6:9"), "{l}");
    settings().bind(|| insta::assert_snapshot!("repo__lint", l));
}

#[test]
fn matrix_groups_pods_and_filters_sources_destinations_and_ports() {
    let lines = |extra: &[&str]| -> Vec<String> {
        let o = run("matrix", extra);
        assert_eq!(o.status.code(), Some(0), "{extra:?}: {}", text(&o));
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    };
    // Workloads are named as their manifests name them.
    assert_eq!(
        lines(&["--by", "workload"]),
        [
            "shop/backup => tools/toolbox : All connections",
            "shop/backup => shop/db : TCP 5432",
            "shop/db => tools/toolbox : All connections",
            "shop/web => tools/toolbox : All connections",
            "shop/web => shop/db : TCP 5432",
        ]
    );
    // Three shop pods: six ordered pairs of distinct pods, two of them to
    // the database; a pod and itself is not a pair.
    assert_eq!(
        lines(&["--by", "namespace"]),
        [
            "shop => tools : All connections",
            "shop => shop : TCP 5432 (2 of 6 pod pairs)",
        ]
    );
    assert_eq!(
        lines(&["--from", "ns=shop", "--to", "shop/db-0"]),
        [
            "shop/backup-0 => shop/db-0 : TCP 5432",
            "shop/web-0 => shop/db-0 : TCP 5432",
        ]
    );
    assert_eq!(
        lines(&["--from", "shop/web", "--port", "5432"]),
        [
            "shop/web-0 => tools/toolbox : TCP 5432",
            "shop/web-0 => shop/db-0 : TCP 5432",
        ]
    );
    assert!(lines(&["--to", "shop/db-0", "--port", "5432/UDP"]).is_empty());
    for (bad, says) in [
        (&["--port", "http"][..], "--port must be"),
        (&["--from", "shop/nosuch"][..], "no pod `shop/nosuch`"),
        (&["--to", "1.2.3.4"][..], "the matrix is between pods"),
    ] {
        let o = run("matrix", bad);
        assert_eq!(o.status.code(), Some(2), "{bad:?}");
        assert!(
            String::from_utf8_lossy(&o.stderr).contains(says),
            "{bad:?}: {}",
            text(&o)
        );
    }
}

#[test]
fn hubble_replay_judges_new_connections_only_and_marks_changes() {
    let o = run("simulate", &["-f", "fixtures/repo/hubble.jsonl"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    // Ten records: a reply, an L7 response, an ACK of an open connection
    // and an INVALID_SOURCE_IP drop are not new connections; a vanished
    // pod with a known identity is judged as its twin, one without is
    // counted; the rest are judged, and the one that changes is marked.
    assert!(out.contains("5 flows: 3 allowed, 2 denied"), "{out}");
    assert!(
        out.contains("not judged as new connections: 2 replies, 1 packet of an established connection, 1 drop not made by policy, 1 record of a pod that is gone (no pod has its identity)"),
        "{out}"
    );
    assert!(
        out.contains(
            "1 record of a pod that is gone judged as another pod of the identity Hubble recorded"
        ),
        "{out}"
    );
    assert!(
        out.contains("DENIED   tools/toolbox → shop/web-0 8080/TCP ⚠ CHANGED: recorded allowed"),
        "{out}"
    );
    assert!(
        out.contains("1 recorded flow would change verdict"),
        "{out}"
    );
    // Hubble's policy correlation is set beside the rules deciding here:
    // a deny policy the cluster had where sluice sees default deny, and
    // an allow by a policy the repository no longer has.
    for want in [
        "≠ ingress: Hubble recorded it denied by CiliumNetworkPolicy shop/deny-tools; here it is denied by no policy's rule (default deny)",
        "≠ ingress: Hubble recorded it allowed by CiliumNetworkPolicy shop/db-allow-all; here it is allowed by CiliumNetworkPolicy shop/db-from-web",
        "shop/web-7d9f8-gone1 is gone: judged as shop/web-0, of the identity Hubble recorded",
        "2 recorded flows: Hubble names other deciding policies than sluice (marked ≠)",
    ] {
        assert!(out.contains(want), "{want}: {out}");
    }
    // The flows that differ come first, then the others; the record that
    // names the policy deciding here too is not marked.
    let changed = out.find("⚠ CHANGED").expect("changed");
    let other = out.find("Other flows:").expect("others");
    assert!(
        out.starts_with("Flows that differ from their record (listed first):"),
        "{out}"
    );
    assert!(changed < other, "{out}");
    assert_eq!(out.matches("≠ OTHER POLICY").count(), 2, "{out}");
    assert!(
        out[other..].contains("ALLOWED  203.0.113.9 → shop/web-0 8080/TCP\n"),
        "{out}"
    );
    settings().bind(|| insta::assert_snapshot!("repo__hubble", text(&o)));
    let o = run(
        "simulate",
        &["-f", "fixtures/repo/hubble.jsonl", "-o", "table"],
    );
    let table = String::from_utf8_lossy(&o.stdout);
    let rows: Vec<&str> = table.lines().collect();
    assert!(rows[0].contains("RECORDED"), "{table}");
    assert!(
        rows[1..4]
            .iter()
            .all(|r| r.contains('⚠') || r.contains('≠')),
        "{table}"
    );
    assert!(
        rows[4..]
            .iter()
            .all(|r| !r.contains('⚠') && !r.contains('≠')),
        "{table}"
    );
    let o = run(
        "simulate",
        &["-f", "fixtures/repo/hubble.jsonl", "-o", "json"],
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["notJudged"]["replies"], 2);
    assert_eq!(v["notJudged"]["podsGone"], 1);
    assert_eq!(v["stoodIn"], 1);
    assert_eq!(v["changed"], 1);
    assert_eq!(v["policyDifferences"], 2);
    let flows = v["flows"].as_array().expect("flows");
    let denied_by = flows
        .iter()
        .find(|f| f["from"] == "tools/toolbox" && f["port"] == 5432)
        .expect("toolbox to db");
    assert_eq!(
        denied_by["policyDifferences"][0]["hubble"][0],
        "CiliumNetworkPolicy shop/deny-tools"
    );
    assert_eq!(
        denied_by["policyDifferences"][0]["sluice"]
            .as_array()
            .map(Vec::len),
        Some(0)
    );
    assert!(flows
        .iter()
        .any(|f| f["stoodInFor"][0] == "shop/web-7d9f8-gone1"));
}

#[test]
fn exclude_globs_from_the_command_line_and_sluice_toml() {
    let dir = std::env::temp_dir().join(format!("sluice-exclude-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("drafts")).expect("tmp");
    std::fs::create_dir_all(dir.join("old")).expect("tmp");
    let broken = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: x}\nspec: {endpointSelector: {}, ingres: []}\n";
    std::fs::write(dir.join("drafts/wip.yaml"), broken).expect("write");
    std::fs::write(dir.join("old/legacy.yaml"), broken).expect("write");
    std::fs::copy(
        root().join("fixtures/repo/policies/web.yaml"),
        dir.join("web.yaml"),
    )
    .expect("copy");
    let validate = |extra: &[&str]| {
        Command::new(SLUICE)
            .arg("validate")
            .args(extra)
            .arg(".")
            .current_dir(&dir)
            .env("NO_COLOR", "1")
            .output()
            .expect("run sluice")
    };
    // Both broken files are read without excludes.
    assert_eq!(validate(&[]).status.code(), Some(1));
    assert_eq!(validate(&["--exclude", "drafts/**"]).status.code(), Some(1));
    std::fs::write(dir.join("sluice.toml"), "exclude = [\"old/**\"]\n").expect("write");
    let o = validate(&["--exclude", "drafts/**"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("2 files passed over (2 excluded)"),
        "{}",
        text(&o)
    );
    // A config with a typo stops the run rather than reading everything.
    std::fs::write(dir.join("sluice.toml"), "exclud = [\"old/**\"]\n").expect("write");
    let o = validate(&[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("unknown key `exclud`"), "{}", text(&o));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_record_that_is_not_judged_is_counted_once_whatever_it_names() {
    // A reply addressed to the web Service's ClusterIP: two backends with
    // --replicas 2, but one record, counted once and expanded never.
    let dir = std::env::temp_dir().join(format!("sluice-reply-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let f = dir.join("h.jsonl");
    std::fs::write(
        &f,
        r#"{"flow":{"verdict":"FORWARDED","is_reply":true,"IP":{"source":"203.0.113.9","destination":"10.96.0.80"},"l4":{"TCP":{"destination_port":80,"flags":{"ACK":true}}}}}
"#,
    )
    .expect("write");
    let o = run(
        "simulate",
        &["--replicas", "2", "-f", f.to_str().expect("utf-8")],
    );
    let _ = std::fs::remove_dir_all(&dir);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        out.contains("not judged as new connections: 1 reply"),
        "{}",
        text(&o)
    );
}
