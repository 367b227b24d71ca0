//! The manifests in deploy/ against the code they drive: no cluster runs
//! them here, so at least every flag, permission and policy they name must
//! be one the agent really has, needs and accepts.

use std::path::PathBuf;
use std::process::Command;

const SLUICE: &str = env!("CARGO_BIN_EXE_sluice");

fn deploy(name: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The items of the YAML block list that follows `key:` (one item per
/// line, `- value`), unquoted.
fn block_list(text: &str, key: &str) -> Vec<String> {
    let mut lines = text.lines().skip_while(|l| l.trim() != key);
    let Some(head) = lines.next() else {
        panic!("no `{key}` in the manifest");
    };
    let indent = head.len() - head.trim_start().len();
    lines
        .take_while(|l| {
            let i = l.len() - l.trim_start().len();
            l.trim_start().starts_with("- ") && i >= indent
        })
        .map(|l| l.trim_start()[2..].trim().trim_matches('"').to_owned())
        .collect()
}

#[test]
fn daemonset_arguments_are_flags_the_agent_accepts() {
    let args = block_list(&deploy("daemonset.yaml"), "args:");
    assert_eq!(args.first().map(String::as_str), Some("agent"));
    assert!(args.iter().any(|a| a == "--node"), "{args:?}");
    // clap parses every argument before it acts on the trailing --help: an
    // unknown flag or a bad value fails the run.
    let args: Vec<String> = args
        .into_iter()
        .map(|a| a.replace("$(NODE_NAME)", "node-1"))
        .collect();
    let o = Command::new(SLUICE)
        .args(&args)
        .arg("--help")
        .output()
        .expect("run sluice");
    assert!(
        o.status.success(),
        "sluice {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&o.stderr)
    );
    // The downward-API variable the arguments use is defined.
    assert!(deploy("daemonset.yaml").contains("- name: NODE_NAME"));
}

#[test]
fn cluster_role_grants_list_on_everything_the_agent_reads() {
    let rbac = deploy("rbac.yaml");
    let source =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/cluster.rs"))
            .expect("cluster.rs");
    // Every API path the agent requests: /api/v1/<resource> or
    // /apis/<group>/<version>/<resource>.
    let paths: Vec<&str> = source
        .split('"')
        .filter(|s| s.starts_with("/api/") || s.starts_with("/apis/"))
        .collect();
    assert!(paths.len() >= 7, "{paths:?}");
    for path in paths {
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let (group, resource) = match parts.as_slice() {
            ["api", _, r] => ("\"\"", *r),
            ["apis", g, _, r] => (*g, *r),
            _ => panic!("unexpected API path {path}"),
        };
        let rule = rbac
            .split("- apiGroups:")
            .find(|r| r.trim_start().starts_with(&format!("[{group}]")))
            .unwrap_or_else(|| panic!("no rule for API group {group} ({path})"));
        assert!(
            rule.contains(resource),
            "{resource} missing from the {group} rule"
        );
        assert!(rule.contains("list"), "no list verb for {group}");
    }
}

#[test]
fn configmap_holds_exactly_the_validated_policies() {
    let cm = deploy("configmap.yaml");
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/policies");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("deploy/policies").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(entry.path()).expect("policy");
        let indented: String = text
            .lines()
            .map(|l| {
                if l.is_empty() {
                    "\n".to_owned()
                } else {
                    format!("    {l}\n")
                }
            })
            .collect();
        assert!(
            cm.contains(&format!("  {name}: |\n{indented}")),
            "configmap.yaml does not hold deploy/policies/{name} as it is"
        );
        names.push(name);
    }
    assert!(!names.is_empty());
    let keys = cm
        .lines()
        .filter(|l| l.starts_with("  ") && l.ends_with(": |"))
        .count();
    assert_eq!(
        keys,
        names.len(),
        "the ConfigMap has entries not in deploy/policies"
    );
    let o = Command::new(SLUICE)
        .args(["validate", dir.to_str().expect("path")])
        .output()
        .expect("run sluice");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
}
