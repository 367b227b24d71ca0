//! `sluice verify` (and `lint --assertions`) on the shop of
//! `fixtures/diff/`: the invariants hold on the base and break, at the
//! assertion's line with a flow and its trace, on an edit that widens a
//! selector; every output format carries the violation; mistakes in the
//! assertions file are located errors.

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

fn verify(policies: &str, assertions: &str, extra: &[&str]) -> Output {
    let mut a = vec![
        "verify",
        "-p",
        policies,
        "-i",
        "fixtures/diff/cluster.yaml",
        "-a",
        assertions,
    ];
    a.extend(extra);
    sluice(&a)
}

const SHOP: &str = "fixtures/diff/assertions.yaml";

#[test]
fn the_invariants_hold_on_the_base_and_break_on_a_widened_selector() {
    let o = verify("fixtures/diff/base", SHOP, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("6 assertions checked: 6 hold, 0 broken"),
        "{}",
        text(&o)
    );
    let o = verify("fixtures/diff/edits/widened-selector", SHOP, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    for want in [
        // (the report wraps long messages)
        "assertion `only the web tier reaches the database` does not hold: shop/api-0 → shop/db-0 5432/",
        "fixtures/diff/assertions.yaml:8:9",
        "expects denied",
        // The trace of the counterexample, and the rule that lets it in.
        "Tracing shop/api-0 → shop/db-0 5432/TCP",
        "Final verdict: ALLOWED",
        "CiliumNetworkPolicy shop/db-from-web spec.ingress[0] (fixtures/diff/edits/widened-selector/shop.yaml:15:5)",
        "6 assertions checked: 5 hold, 1 broken",
    ] {
        assert!(out.contains(want), "{want}\n{out}");
    }
    let settings = {
        let mut s = insta::Settings::clone_current();
        s.set_snapshot_path(root().join("snapshots"));
        s.set_prepend_module_to_snapshot(false);
        s
    };
    settings.bind(|| insta::assert_snapshot!("verify__widened_selector", out));
}

#[test]
fn every_format_carries_the_violation() {
    let policies = "fixtures/diff/edits/widened-selector";
    let o = verify(policies, SHOP, &["-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let f = &v["findings"][0];
    assert_eq!(f["code"], "SL200");
    assert_eq!(f["name"], "assertion-violated");
    assert_eq!(f["file"], "fixtures/diff/assertions.yaml");
    assert_eq!(f["line"], 8);
    assert_eq!(
        f["message"],
        "assertion `only the web tier reaches the database` does not hold: shop/api-0 → shop/db-0 5432/TCP is allowed"
    );
    let o = verify(policies, SHOP, &["-o", "sarif"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("sarif");
    let r = &v["runs"][0]["results"][0];
    assert_eq!(r["ruleId"], "SL200");
    let index = r["ruleIndex"].as_u64().expect("index") as usize;
    assert_eq!(
        v["runs"][0]["tool"]["driver"]["rules"][index]["id"],
        "SL200"
    );
    let o = verify(policies, SHOP, &["-o", "github"]);
    let gh = String::from_utf8_lossy(&o.stdout);
    assert!(
        gh.starts_with("::error file=fixtures/diff/assertions.yaml,line=8,col=9,"),
        "{gh}"
    );
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn lint_checks_the_assertions_in_the_same_run() {
    let o = sluice(&[
        "lint",
        "fixtures/diff/edits/widened-selector",
        "-i",
        "fixtures/diff/cluster.yaml",
        "--assertions",
        SHOP,
        "-o",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let codes: Vec<&str> = v["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter_map(|f| f["code"].as_str())
        .collect();
    assert!(codes.contains(&"SL200"), "{codes:?}");
    assert!(
        codes.iter().any(|c| *c != "SL200"),
        "lint findings too: {codes:?}"
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
}

#[test]
fn counterexamples_are_judged_as_simulate_judges_them() {
    // Each edit breaks some assertion; the flow given must get the
    // verdict the report says when simulated.
    for edit in ["widened-selector", "policy-deleted", "added-deny"] {
        let policies = format!("fixtures/diff/edits/{edit}");
        let o = verify(&policies, SHOP, &["-o", "json"]);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
        let messages: Vec<String> = v["findings"]
            .as_array()
            .expect("findings")
            .iter()
            .filter_map(|f| f["message"].as_str().map(str::to_owned))
            .collect();
        let mut checked = 0;
        for line in messages.iter().filter(|l| l.contains("does not hold:")) {
            let Some(rest) = line.split("does not hold: ").nth(1) else {
                continue;
            };
            // `FROM → TO PORT/PROTO is VERDICT`
            let words: Vec<&str> = rest.split_whitespace().collect();
            if words.len() < 6 || words[1] != "→" {
                continue;
            }
            let (from, to, port, verdict) = (words[0], words[2], words[3], words[5]);
            let dir =
                std::env::temp_dir().join(format!("sluice-verify-{}-{edit}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("tmp");
            let flows = dir.join("flows.yaml");
            std::fs::write(
                &flows,
                format!("- {{from: {from}, to: {to}, port: {port}, expect: {verdict}}}\n"),
            )
            .expect("write");
            let s = sluice(&[
                "simulate",
                "-p",
                &policies,
                "-i",
                "fixtures/diff/cluster.yaml",
                "-f",
                flows.to_str().expect("utf-8"),
            ]);
            let _ = std::fs::remove_dir_all(&dir);
            assert_eq!(s.status.code(), Some(0), "{edit}: {line}\n{}", text(&s));
            checked += 1;
        }
        assert!(checked > 0, "{edit} breaks no assertion: {messages:?}");
    }
}

#[test]
fn mistakes_in_the_assertions_are_located() {
    let o = verify(
        "fixtures/diff/base",
        "fixtures/diff/assertions-broken.yaml",
        &[],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    for want in [
        "fixtures/diff/assertions-broken.yaml:6:11",
        "`5432/TCPX` is not a port",
        "fixtures/diff/assertions-broken.yaml:11:11",
        "`expect` is `allowed`, `denied` or `isolated`",
        "unknown assertion field `form`",
        "did you mean `from`?",
        "no assertion was checked",
    ] {
        assert!(err.contains(want), "{want}\n{err}");
    }
    // The same problems reach the machine formats, with codes and places.
    let o = verify(
        "fixtures/diff/base",
        "fixtures/diff/assertions-broken.yaml",
        &["-o", "github"],
    );
    assert_eq!(o.status.code(), Some(2));
    let gh = String::from_utf8_lossy(&o.stdout);
    assert!(
        gh.starts_with("::error file=fixtures/diff/assertions-broken.yaml,line=6,col=11,"),
        "{gh}"
    );
    let o = verify(
        "fixtures/diff/base",
        "fixtures/diff/assertions-broken.yaml",
        &["-o", "json"],
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["findings"][0]["code"], "assertion::assertion-syntax");
    assert_eq!(v["findings"][0]["line"], 6);
    let o = sluice(&[
        "lint",
        "fixtures/invalid/ambiguous-selector.yaml",
        "-o",
        "sarif",
    ]);
    assert_eq!(o.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("sarif");
    assert_eq!(
        v["runs"][0]["results"][0]["ruleId"],
        "policy::ambiguous-selector"
    );
    // Assertions no policy can make hold are errors of the file, each at
    // its place, and nothing is checked.
    let o = verify(
        "fixtures/diff/base",
        "fixtures/diff/assertions-never.yaml",
        &["-o", "json"],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let found: Vec<(String, u64)> = v["findings"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|d| {
            (
                d["code"].as_str().unwrap_or_default().to_owned(),
                d["line"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    let never = "assertion::assertion-never-holds".to_owned();
    assert_eq!(
        found,
        [5, 9, 13, 17, 22, 24, 30, 34]
            .map(|l| (never.clone(), l))
            .to_vec(),
        "{}",
        text(&o)
    );
    let o = verify(
        "fixtures/diff/base",
        "fixtures/diff/assertions-never.yaml",
        &[],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    for want in [
        "no pod can be labelled `app=web` and not labelled it",
        "no pod can have `app` both `web` and `api`",
        "allow-localhost",
        "traffic between two addresses outside the cluster",
        "`world` is not a pod",
    ] {
        assert!(err.contains(want), "{want}\n{err}");
    }
    // A peer of nothing is a warning with a suggestion, not a pass.
    let o = verify(
        "fixtures/diff/base",
        "fixtures/diff/assertions-typo.yaml",
        &[],
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("SL201(assertion-names-nothing)"), "{out}");
    assert!(out.contains("did you mean `tools`?"), "{out}");
    assert!(
        out.contains("1 assertion checked: 0 hold, 0 broken, 1 names nothing"),
        "{out}"
    );
    // Without an inventory there is nothing to check against.
    let o = sluice(&["verify", "-p", "fixtures/diff/base", "-a", SHOP]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

const EXPOSURE: [&str; 6] = [
    "-p",
    "fixtures/exposure/policies.yaml",
    "-i",
    "fixtures/exposure/cluster.yaml",
    "-a",
    "fixtures/exposure/assertions.yaml",
];

#[test]
fn any_pod_finds_the_pods_of_tomorrow_that_break_an_assertion() {
    // Over today's pods every assertion holds.
    let o = sluice(&[&["verify"][..], &EXPOSURE].concat());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // Over every pod that could exist, two do not, each with its pods.
    let o = sluice(&[&["verify"][..], &EXPOSURE, &["--any-pod"]].concat());
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    for want in [
        "assertion `the tools namespace never reaches the database` does not hold for pods that could",
        "assertions.yaml:4:9",
        "assertion `only the shop's web tier reaches the API` does not hold for pods that could exist:",
        "tools {app=web} → shop {app=api} 8080/TCP would be allowed",
        "kind: Pod",
        "4 assertions checked: 2 hold, 2 broken",
        "--any-pod: 4 assertions checked for every pod that could exist",
    ] {
        assert!(out.contains(want), "{want}\n{out}");
    }
    // The tools witness is a pod of tools that is not `app=api`.
    let v: serde_json::Value = serde_json::from_slice(
        &sluice(&[&["verify"][..], &EXPOSURE, &["--any-pod", "-o", "json"]].concat()).stdout,
    )
    .expect("json");
    let codes: Vec<&str> = v["findings"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|f| f["code"].as_str())
        .collect();
    assert_eq!(codes, ["SL200", "SL200"], "{v}");
    let first = v["findings"][0]["help"].as_str().unwrap_or_default();
    assert!(first.contains("namespace: tools"), "{first}");
    assert!(!first.contains("app: api"), "{first}");
    // The same through lint's assertions step.
    let o = sluice(&[
        "lint",
        "--no-config",
        "fixtures/exposure/policies.yaml",
        "-i",
        "fixtures/exposure/cluster.yaml",
        "--assertions",
        "fixtures/exposure/assertions.yaml",
        "--any-pod",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
}

const OUTSIDE: [&str; 6] = [
    "-p",
    "fixtures/exposure/outside/policies.yaml",
    "-i",
    "fixtures/exposure/outside/cluster.yaml",
    "-a",
    "fixtures/exposure/outside/assertions.yaml",
];

#[test]
fn any_pod_asks_outside_addresses_and_entities_too() {
    // Today every assertion holds; between two outside addresses nothing
    // is decided, so `only ... to: world` is not broken by one.
    let o = sluice(&[&["verify"][..], &OUTSIDE].concat());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = sluice(&[&["verify"][..], &OUTSIDE, &["--any-pod", "-o", "json"]].concat());
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let messages: Vec<&str> = v["findings"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|f| f["message"].as_str())
        .collect();
    assert_eq!(messages.len(), 4, "{v}");
    // A backend of another namespace reaches the internet: the address is
    // outside the exception and not 0.0.0.0/8.
    let internet = messages[0];
    assert!(
        internet.contains("only the payments pods reach the internet")
            && internet.contains("{tier=backend} → ")
            && internet.contains(" 443/TCP would be allowed"),
        "{internet}"
    );
    let addr: std::net::Ipv4Addr = internet
        .split(" → ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .expect("an IPv4 address");
    assert!(addr.octets()[0] != 10 && addr.octets()[0] != 0, "{addr}");
    assert!(
        !internet.starts_with("tools {app"),
        "labels it need not have: {internet}"
    );
    // The shop's database takes the internet once it is labelled exposed.
    assert!(
        messages[1].contains("→ shop {app=db,exposed=")
            && messages[1].contains("/TCP would be allowed"),
        "{}",
        messages[1]
    );
    // A database in a namespace without policies takes the remote nodes.
    assert!(
        messages[2].contains("remote-node → ") && messages[2].contains("{app=db}"),
        "{}",
        messages[2]
    );
    // A tools pod labelled app=monitoring reaches the kubelet: the host
    // policy of the node lets it in.
    assert!(
        messages[3].contains(
            "tools {app=monitoring} → node node-a (192.168.0.1) 10250/TCP would be allowed"
        ),
        "{}",
        messages[3]
    );
    // The private range stays denied for any payments pod.
    assert!(!messages.iter().any(|m| m.contains("private range")), "{v}");
    let help = v["findings"][0]["help"].as_str().unwrap_or_default();
    assert!(
        help.contains("kind: Pod") && help.contains("tier: backend"),
        "{help}"
    );
}

#[test]
fn an_undecided_assertion_is_reported_and_never_counted_as_held() {
    // One z3 step per check decides nothing, the same on every machine.
    let o = sluice(
        &[
            &["verify"][..],
            &EXPOSURE,
            &["--any-pod", "--solver-steps", "1"],
        ]
        .concat(),
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("SL202(assertion-undecided)"), "{}", text(&o));
    assert!(
        out.contains("4 assertions checked: 0 hold, 0 broken, 4 undecided"),
        "{out}"
    );
    let o = sluice(
        &[
            &["verify"][..],
            &EXPOSURE,
            &["--any-pod", "--solver-steps", "1", "--fail-on", "warning"],
        ]
        .concat(),
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    // With the default budget the same run decides all four.
    let o = sluice(&[&["verify"][..], &EXPOSURE, &["--any-pod"]].concat());
    assert!(
        !String::from_utf8_lossy(&o.stdout).contains("SL202"),
        "{}",
        text(&o)
    );
}

#[test]
fn lint_any_pod_runs_the_solver_rules() {
    let args = |extra: &[&'static str]| -> Vec<&'static str> {
        let mut v = vec![
            "lint",
            "--no-config",
            "fixtures/lints/SL120/bad.yaml",
            "-i",
            "fixtures/lints/inventory.yaml",
            "-o",
            "json",
        ];
        v.extend(extra);
        v
    };
    let codes = |o: &Output| -> Vec<String> {
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
        v["findings"]
            .as_array()
            .expect("list")
            .iter()
            .filter_map(|f| f["code"].as_str().map(str::to_owned))
            .collect()
    };
    // Without --any-pod the solver rules stay off.
    let o = sluice(&args(&[]));
    assert!(
        !codes(&o).iter().any(|c| c.starts_with("SL12")),
        "{}",
        text(&o)
    );
    let o = sluice(&args(&["--any-pod"]));
    assert!(codes(&o).contains(&"SL120".to_owned()), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let f = v["findings"]
        .as_array()
        .and_then(|a| a.iter().find(|f| f["code"] == "SL120"))
        .expect("SL120");
    assert!(
        f["message"]
            .as_str()
            .unwrap_or_default()
            .contains("(new namespace) {app=reporter} → shop {app=db} 5432/TCP"),
        "{f}"
    );
}
