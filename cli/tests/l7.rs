//! L7 through the CLI: a rule set whose automaton would blow up is an
//! input error naming the rule (nothing compiled, nothing enforced), and
//! L7 verdicts come out of `simulate -o json` with the proxy's answer.

use std::path::{Path, PathBuf};
use std::process::Command;

const SLUICE: &str = env!("CARGO_BIN_EXE_sluice");

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn an_exploding_l7_rule_set_is_refused_with_the_rule_named() {
    let o = Command::new(SLUICE)
        .args(["compile", "-p", "fixtures/bad-input/l7-explodes.yaml"])
        .args(["-i", "fixtures/example/inventory.yaml"])
        .current_dir(root())
        .env("NO_COLOR", "1")
        .output()
        .expect("run sluice");
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("compile::l7-automaton"), "{err}");
    assert!(err.contains("(a|b)*a(a|b){30}"), "the rule is named: {err}");
    assert!(err.contains("nothing was compiled"), "{err}");
}

#[test]
fn http_denials_carry_the_403() {
    let o = Command::new(SLUICE)
        .args(["simulate", "-p", "fixtures/example/policies"])
        .args(["-i", "fixtures/example/inventory.yaml"])
        .args(["-f", "fixtures/example/flows.yaml", "-o", "json"])
        .current_dir(root())
        .output()
        .expect("run sluice");
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let text = v.to_string();
    assert!(text.contains("\"status\":403"), "{text}");
    assert!(text.contains("POST /v1/request-landing"), "{text}");
}

#[test]
fn hubble_l7_records_replay_with_l7_verdicts() {
    let o = Command::new(SLUICE)
        .args([
            "simulate",
            "-p",
            "fixtures/simulate/14-l7-every-field/policy.yaml",
        ])
        .args(["-i", "fixtures/simulate/inventory.yaml", "--hubble"])
        .args(["-f", "fixtures/simulate/14-l7-every-field/hubble.jsonl"])
        .current_dir(root())
        .env("NO_COLOR", "1")
        .output()
        .expect("run sluice");
    let out = String::from_utf8_lossy(&o.stdout);
    // Five records, one a response (not replayed); the Kafka produce to
    // `payments` was forwarded when recorded and is denied by these rules.
    assert!(out.contains("4 flows: 2 allowed, 2 denied"), "{out}");
    assert!(
        out.contains("DENIED   ns1/a → ns1/b 80/TCP HTTP POST /api/v1/orders"),
        "{out}"
    );
    assert!(
        out.contains("DENIED   ns1/c → ns1/b 9092/TCP Kafka key 0 v3 topic payments"),
        "{out}"
    );
    assert!(
        out.contains("1 recorded flow would change verdict"),
        "{out}"
    );
}

#[test]
fn hubble_dns_responses_resolve_to_fqdns_in_a_replay() {
    // From a file (read again from its start for the DNS answers) and
    // from a pipe (read once, kept in a temporary copy): the same replay.
    let recording = "fixtures/simulate/15-fqdn/hubble.jsonl";
    let piped = {
        use std::io::Write;
        let mut child = Command::new(SLUICE)
            .args(["simulate", "-p", "fixtures/simulate/15-fqdn/policy.yaml"])
            .args([
                "-i",
                "fixtures/simulate/inventory.yaml",
                "-f",
                "-",
                "--hubble",
            ])
            .current_dir(root())
            .env("NO_COLOR", "1")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("run sluice");
        let text = std::fs::read(root().join(recording)).expect("fixture");
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(&text).expect("write");
        drop(stdin);
        child.wait_with_output().expect("wait")
    };
    let o = Command::new(SLUICE)
        .args(["simulate", "-p", "fixtures/simulate/15-fqdn/policy.yaml"])
        .args(["-i", "fixtures/simulate/inventory.yaml"])
        .args(["-f", recording])
        .current_dir(root())
        .env("NO_COLOR", "1")
        .output()
        .expect("run sluice");
    let out = String::from_utf8_lossy(&o.stdout);
    // The same verdicts whether read from the file or a pipe; a file's
    // replay lists the flows that differ from their record first.
    let lines = |t: &str| {
        let mut v: Vec<String> = t
            .lines()
            .filter(|l| !l.ends_with("(listed first):") && *l != "Other flows:")
            .map(str::to_owned)
            .collect();
        v.sort();
        v
    };
    assert_eq!(lines(&out), lines(&String::from_utf8_lossy(&piped.stdout)));
    assert!(out.starts_with("Flows that differ from their record (listed first):\nDENIED   ns1/a → 198.51.100.7 443/TCP ⚠ CHANGED"), "{out}");
    // The recorded answer for api.example.com opens its address; the
    // NXDOMAIN for evil.example.org teaches nothing; 198.51.100.7 was
    // never answered in this recording, so its connection (forwarded when
    // recorded, with an answer from before the recording) is denied.
    assert!(
        out.contains("ALLOWED  ns1/a → 203.0.113.10 443/TCP"),
        "{out}"
    );
    assert!(out.contains("fqdn:api.example.com."), "{out}");
    assert!(
        out.contains("DENIED   ns1/a → 198.51.100.7 443/TCP"),
        "{out}"
    );
    assert!(out.contains("DENIED   ns1/a → 192.0.2.66 443/TCP"), "{out}");
    assert!(out.contains("4 flows: 2 allowed, 2 denied"), "{out}");
}
