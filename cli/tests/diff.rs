//! `sluice diff` on known edits of one policy set (`fixtures/diff/`): each
//! edit's answer is a snapshot, and the parts a reviewer relies on are
//! asserted: what opens, what closes, which rule decides, exit codes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SLUICE: &str = env!("CARGO_BIN_EXE_sluice");

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn sluice_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(SLUICE)
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .output()
        .expect("run sluice")
}

fn sluice(args: &[&str]) -> Output {
    sluice_in(&root(), args)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        o.status.code(),
        stdout(o),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn settings() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path(root().join("snapshots"));
    s.set_prepend_module_to_snapshot(false);
    s
}

fn edit(name: &str, extra: &[&str]) -> Output {
    let head = format!("fixtures/diff/edits/{name}");
    let mut a = vec![
        "diff",
        "--base",
        "fixtures/diff/base",
        "--head",
        &head,
        "-i",
        "fixtures/diff/cluster.yaml",
    ];
    a.extend(extra);
    sluice(&a)
}

#[test]
fn known_edits_give_their_changes() {
    // (edit, what must be said)
    let cases: [(&str, &[&str]); 5] = [
        (
            "added-deny",
            &[
                "closed (1):",
                "shop/web-0 and 1 more alike → shop/api-0  TCP 8005-8010",
                "deny entry",
                "CiliumNetworkPolicy shop/api-admin-closed spec.ingressDeny[0] (fixtures/diff/edits/added-deny/shop.yaml:58:5)",
            ],
        ),
        (
            "widened-selector",
            &[
                "opened (1):",
                "shop/api-0 → shop/db-0  TCP 5432",
                "(fixtures/diff/edits/widened-selector/shop.yaml:15:5)",
            ],
        ),
        (
            "port-range",
            &["opened (1):", "shop/web-0 and 1 more alike → shop/api-0  TCP 8011-8020"],
        ),
        (
            "new-l7-rule",
            &[
                "L7 rules changed (1):",
                "world → shop/web-0 and 1 more alike  TCP 8080",
                "L7: ingress http: GET /.*; ingress http: POST /checkout",
                "e.g. HTTP POST /checkout: allowed in the head, denied in the base",
            ],
        ),
        (
            "policy-deleted",
            &[
                "closed (1):",
                "shop/web-0 and 1 more alike → shop/db-0  TCP 5432",
                "head denied: ingress at shop/db-0: no entry",
            ],
        ),
    ];
    for (name, wants) in cases {
        let o = edit(name, &[]);
        assert_eq!(o.status.code(), Some(0), "{name}: {}", text(&o));
        let out = stdout(&o);
        for w in wants {
            assert!(out.contains(w), "{name}: {w}\n{out}");
        }
        // One change per edit: nothing else moved.
        assert_eq!(out.matches(" → shop/").count(), 1, "{name}: {out}");
        settings().bind(|| insta::assert_snapshot!(format!("diff__{name}"), out));
    }
}

#[test]
fn a_relabelled_pod_changes_what_it_reaches_and_what_reaches_it() {
    let o = sluice(&[
        "diff",
        "--base",
        "fixtures/diff/base",
        "--head",
        "fixtures/diff/base",
        "--base-inventory",
        "fixtures/diff/cluster.yaml",
        "--head-inventory",
        "fixtures/diff/cluster-relabelled.yaml",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = stdout(&o);
    assert!(
        out.contains("opened (1):\n  shop/api-0 → shop/db-0  TCP 5432"),
        "{out}"
    );
    assert!(
        out.contains("closed (1):\n  shop/web-0 and 1 more alike → shop/api-0  TCP 8000-8010"),
        "{out}"
    );
    settings().bind(|| insta::assert_snapshot!("diff__relabelled", out));
}

#[test]
fn a_set_against_itself_changes_nothing_and_fail_on_decides_the_exit() {
    let o = sluice(&[
        "diff",
        "--base",
        "fixtures/diff/base",
        "--head",
        "fixtures/diff/base",
        "-i",
        "fixtures/diff/cluster.yaml",
        "--fail-on",
        "any",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(stdout(&o).contains("no connection changes"), "{}", text(&o));
    for (edit_name, fail_on, code) in [
        ("widened-selector", "opened", 1),
        ("widened-selector", "closed", 0),
        ("policy-deleted", "closed", 1),
        ("policy-deleted", "opened", 0),
        ("new-l7-rule", "closed", 1),
        ("port-range", "any", 1),
    ] {
        let o = edit(edit_name, &["--fail-on", fail_on]);
        assert_eq!(
            o.status.code(),
            Some(code),
            "{edit_name} --fail-on {fail_on}: {}",
            text(&o)
        );
    }
}

#[test]
fn json_markdown_and_github_say_the_same() {
    let o = edit("policy-deleted", &["-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["schemaVersion"], 1);
    assert_eq!(v["summary"]["closed"], 1);
    assert_eq!(v["summary"]["opened"], 0);
    let c = &v["changes"][0];
    assert_eq!(c["kind"], "closed");
    assert_eq!(
        c["from"]["members"],
        serde_json::json!(["shop/web-0", "shop/web-1"])
    );
    assert_eq!(c["to"]["members"], serde_json::json!(["shop/db-0"]));
    assert_eq!(c["ports"][0]["protocol"], "TCP");
    assert_eq!(
        c["ports"][0]["ranges"][0],
        serde_json::json!({"from": 5432, "to": 5432})
    );
    assert_eq!(
        c["base"]["sites"][0]["file"],
        "fixtures/diff/base/shop.yaml"
    );
    assert_eq!(c["base"]["sites"][0]["line"], 15);
    assert_eq!(c["head"]["verdict"], "denied");

    let o = edit("widened-selector", &["-o", "markdown"]);
    let md = stdout(&o);
    assert!(md.starts_with("### sluice diff: 1 opened\n"), "{md}");
    assert!(md.contains("| shop/api-0 | shop/db-0 | TCP 5432 | CiliumNetworkPolicy shop/db-from-web (fixtures/diff/edits/widened-selector/shop.yaml:15) |"), "{md}");
    assert!(md.contains("<details><summary>Details</summary>"), "{md}");
    settings().bind(|| insta::assert_snapshot!("diff__markdown", md));

    let o = edit("widened-selector", &["-o", "github"]);
    let gh = stdout(&o);
    assert_eq!(
        gh.trim(),
        "::warning file=fixtures/diff/edits/widened-selector/shop.yaml,line=15,col=5,title=sluice diff%3A opened::shop/api-0 → shop/db-0 TCP 5432: opened (base: denied)"
    );
}

#[test]
fn recorded_flows_that_change_are_listed_new_drops_first() {
    let o = edit("policy-deleted", &["-f", "fixtures/diff/flows.yaml"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = stdout(&o);
    assert!(
        out.contains("recorded flows: 1 of 4 judged change verdict"),
        "{out}"
    );
    assert!(
        out.contains("NEW DROP  shop/web-0 → shop/db-0 5432/TCP (line 2): allowed → denied"),
        "{out}"
    );
}

#[test]
fn a_git_revision_is_read_without_touching_the_working_tree() {
    let dir = std::env::temp_dir().join(format!("sluice-diff-git-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("policies")).expect("mkdir");
    let git = |args: &[&str]| {
        let o = Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("git");
        assert!(
            o.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    git(&["init", "-q"]);
    let base = std::fs::read_to_string(root().join("fixtures/diff/base/shop.yaml")).expect("base");
    std::fs::write(dir.join("policies/shop.yaml"), &base).expect("write");
    std::fs::copy(
        root().join("fixtures/diff/cluster.yaml"),
        dir.join("cluster.yaml"),
    )
    .expect("copy");
    git(&["add", "."]);
    git(&["commit", "-qm", "base"]);
    let head = std::fs::read_to_string(root().join("fixtures/diff/edits/policy-deleted/shop.yaml"))
        .expect("head");
    std::fs::write(dir.join("policies/shop.yaml"), &head).expect("write");
    let o = sluice_in(
        &dir,
        &["diff", "HEAD", "-i", "cluster.yaml", "--", "policies"],
    );
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        out.starts_with("sluice diff: HEAD:policies → policies\n"),
        "{out}"
    );
    assert!(
        out.contains("closed (1):\n  shop/web-0 and 1 more alike → shop/db-0  TCP 5432"),
        "{out}"
    );
    // The base's rules are named by the revision they come from.
    let o = sluice_in(
        &dir,
        &[
            "diff",
            "HEAD",
            "-i",
            "cluster.yaml",
            "-o",
            "json",
            "--",
            "policies",
        ],
    );
    assert_eq!(o.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(
        v["changes"][0]["base"]["sites"][0]["file"],
        "HEAD:policies/shop.yaml"
    );
    assert_eq!(v["changes"][0]["base"]["sites"][0]["line"], 15);
    // The working tree is as it was.
    assert_eq!(
        std::fs::read_to_string(dir.join("policies/shop.yaml")).expect("read"),
        head
    );
    // Bad input: an unknown revision, a path the revision lacks.
    let o = sluice_in(
        &dir,
        &["diff", "nope", "-i", "cluster.yaml", "--", "policies"],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr)
        .contains("`nope` is not a revision of this git repository"));
    std::fs::create_dir_all(dir.join("more")).expect("mkdir");
    std::fs::write(dir.join("more/x.yaml"), &base).expect("write");
    let o = sluice_in(
        &dir,
        &[
            "diff",
            "HEAD",
            "-i",
            "cluster.yaml",
            "--",
            "policies",
            "more",
        ],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("more: no such path at revision HEAD"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn base_rules_from_a_revision_are_named_by_it() {
    // In this repository itself: the fixture's base as HEAD holds it.
    let o = sluice(&[
        "diff",
        "HEAD",
        "-i",
        "fixtures/diff/cluster.yaml",
        "-o",
        "json",
        "--",
        "fixtures/diff/base",
    ]);
    if o.status.code() == Some(2) && String::from_utf8_lossy(&o.stderr).contains("not a revision") {
        eprintln!("skipped: not a git checkout");
        return;
    }
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["summary"]["opened"], 0, "{}", text(&o));
    assert_eq!(v["base"], "HEAD:fixtures/diff/base");
}

#[test]
fn inputs_that_cannot_be_compared_are_errors() {
    for (args, want) in [
        (
            &["diff", "--base", "fixtures/diff/base"][..],
            "give --base and --head",
        ),
        (
            &[
                "diff",
                "--head",
                "fixtures/diff/base",
                "--base",
                "fixtures/diff/nothere",
            ][..],
            "cannot read",
        ),
    ] {
        let o = sluice(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains(want),
            "{args:?}: {}",
            text(&o)
        );
    }
}

#[test]
fn pods_of_one_workload_are_named_by_it() {
    // The repository fixture's workloads, three replicas each; the base
    // admits the database on another port.
    let dir = std::env::temp_dir().join(format!("sluice-diff-wl-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for (side, port) in [("base", "5433"), ("head", "5432")] {
        std::fs::create_dir_all(dir.join(side)).expect("mkdir");
        for f in ["web.yaml", "default-deny.yaml"] {
            let text = std::fs::read_to_string(root().join("fixtures/repo/policies").join(f))
                .expect("read");
            let text = text.replace("port: \"5432\"", &format!("port: \"{port}\""));
            std::fs::write(dir.join(side).join(f), text).expect("write");
        }
    }
    let side = |s: &str| dir.join(s).display().to_string();
    let (base, head) = (side("base"), side("head"));
    let o = sluice(&[
        "diff",
        "--base",
        &base,
        "--head",
        &head,
        "-i",
        "fixtures/repo",
        "--replicas",
        "3",
    ]);
    let _ = std::fs::remove_dir_all(&dir);
    let out = stdout(&o);
    for (kind, port) in [("opened", 5432), ("closed", 5433)] {
        let want = format!(
            "{kind} (1):\n  shop/web (Deployment, 3 pods) → shop/db (StatefulSet, 3 pods)  TCP {port}"
        );
        assert!(out.contains(&want), "{want}\n{}", text(&o));
    }
}

#[test]
fn exposure_lists_what_a_change_closes_for_pods_that_could_exist() {
    let args = |head: &'static str, extra: &[&'static str]| -> Vec<&'static str> {
        let mut v = vec![
            "diff",
            "--base",
            "fixtures/exposure/policies.yaml",
            "--head",
            head,
            "-i",
            "fixtures/exposure/cluster.yaml",
            "--exposure",
        ];
        v.extend(extra);
        v
    };
    // Nothing changes for the inventory's pods; for possible ones, the
    // database closes to every client that is neither web nor api.
    let o = sluice(&args("fixtures/exposure/head.yaml", &[]));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("no connection changes"), "{out}");
    for want in [
        "closed: pods with no app → pods with app=db, namespace=shop",
        "closed: pods with app=db → pods with app=db, namespace=shop",
        "closed: pods with app=(a value no policy names) → pods with app=db, namespace=shop",
    ] {
        assert!(out.contains(want), "{want}\n{out}");
    }
    assert!(!out.contains("opened:"), "{out}");
    assert!(
        !out.contains("app=web →") && !out.contains("app=api →"),
        "{out}"
    );
    let o = sluice(&args(
        "fixtures/exposure/head.yaml",
        &["--fail-on", "closed"],
    ));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let o = sluice(&args("fixtures/exposure/head.yaml", &["-o", "json"]));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let closed = v["exposure"]["closed"].as_array().expect("closed");
    assert_eq!(closed.len(), 3, "{v:#}");
    assert!(closed
        .iter()
        .all(|c| c["to"]["labels"]["app"] == "db" && c["port"] == 5432));
    assert_eq!(v["exposure"]["opened"].as_array().map(Vec::len), Some(0));
    // Reversed, the same pairs open.
    let o = sluice(&[
        "diff",
        "--base",
        "fixtures/exposure/head.yaml",
        "--head",
        "fixtures/exposure/policies.yaml",
        "-i",
        "fixtures/exposure/cluster.yaml",
        "--exposure",
        "--fail-on",
        "opened",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout)
            .matches("opened: ")
            .count(),
        3
    );
    // A set against itself: nothing for any pod.
    let o = sluice(&args("fixtures/exposure/policies.yaml", &[]));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("nothing opens or closes for any possible pod"),
        "{out}"
    );
}

#[test]
fn exposure_lists_outside_addresses_and_entities_a_change_opens() {
    let o = sluice(&[
        "diff",
        "--base",
        "fixtures/exposure/outside/policies.yaml",
        "--head",
        "fixtures/exposure/outside/head.yaml",
        "-i",
        "fixtures/exposure/outside/cluster.yaml",
        "--exposure",
        "-o",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let e = &v["exposure"];
    // Backends of any namespace now reach the internet on 80: one entry
    // for the class, an IPv4 address outside the exception as example.
    let opened = e["opened"].as_array().expect("opened");
    assert_eq!(opened.len(), 1, "{e:#}");
    assert_eq!(
        opened[0]["fromLabelsThatMatter"],
        serde_json::json!(["tier=backend"])
    );
    assert_eq!(opened[0]["port"], 80);
    let addr: std::net::Ipv4Addr = opened[0]["to"]["address"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .expect("an IPv4 address");
    assert_ne!(addr.octets()[0], 10, "{addr}");
    // Exposed pods close to the internet on every port but 443, from
    // both families.
    let closed = e["closed"].as_array().expect("closed");
    assert_eq!(closed.len(), 2, "{e:#}");
    for c in closed {
        assert_eq!(
            c["toLabelsThatMatter"],
            serde_json::json!(["exposed=(any value)"])
        );
        assert!(c["from"]["address"].is_string(), "{c}");
        assert_ne!(c["port"], 443, "{c}");
    }
    let o = sluice(&[
        "diff",
        "--base",
        "fixtures/exposure/outside/policies.yaml",
        "--head",
        "fixtures/exposure/outside/head.yaml",
        "-i",
        "fixtures/exposure/outside/cluster.yaml",
        "--exposure",
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    for want in [
        "opened: pods with tier=backend → outside IPv4 addresses (e.g. shop {tier=backend} → ",
        "closed: outside IPv4 addresses, outside IPv6 addresses → pods with exposed=(any value)",
    ] {
        assert!(out.contains(want), "{want}\n{out}");
    }
}
