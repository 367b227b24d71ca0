//! `docs/diagnostics.md` lists every diagnostic code; this test keeps it in
//! step with `Code::ALL`. Regenerate with `SLUICE_BLESS=1 cargo test -p policy-lang --test docs`.

use policy_lang::diag::Code;
use std::path::Path;

fn generate() -> String {
    let mut out = String::from(
        "# Diagnostic codes\n\n\
         Generated from `policy_lang::diag::Code` by `policy-lang/tests/docs.rs`; do not edit by hand.\n\
         Codes are stable: they are never renamed or reused. Every diagnostic is an error unless\n\
         marked *warning*. Each code has an invalid fixture in `fixtures/invalid/<code>.yaml` and\n\
         a snapshot of its rendering in `snapshots/`.\n\n\
         | code | meaning |\n|---|---|\n",
    );
    for c in Code::ALL {
        let warn = if matches!(
            c,
            Code::IgnoredNamespace
                | Code::ForeignNamespace
                | Code::UnknownTag
                | Code::RegexSize
                | Code::PortReading
                | Code::PodWithoutIp
                | Code::SelectsNothing
                | Code::UnmodelledKind
        ) {
            " *(warning)*"
        } else if *c == Code::NoDirection {
            // Releases differ: see --cilium-version in docs/semantics.md.
            " *(warning with `--cilium-version 1.17`, the default; error with 1.18)*"
        } else {
            ""
        };
        out.push_str(&format!("| `{c}` | {}{warn} |\n", c.summary()));
    }
    out
}

#[test]
fn diagnostics_doc_is_current() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/diagnostics.md");
    let want = generate();
    if std::env::var_os("SLUICE_BLESS").is_some() {
        std::fs::write(&path, &want).expect("write docs/diagnostics.md");
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(
        have, want,
        "docs/diagnostics.md is stale: rerun with SLUICE_BLESS=1"
    );
}

#[test]
fn every_code_with_a_source_location_has_an_invalid_fixture() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/invalid");
    for c in Code::ALL.iter().filter(|c| c.area() == "policy") {
        // These concern whole files (unreadable, too large, binary) and are
        // tested through the CLI in cli/tests/validate.rs.
        if matches!(
            c,
            Code::Io | Code::InputTooLarge | Code::NotUtf8 | Code::NestingTooDeep | Code::AliasBomb
        ) {
            continue;
        }
        let f = dir.join(format!("{}.yaml", c.name()));
        assert!(f.is_file(), "no fixture for `{c}`: add {}", f.display());
    }
}
