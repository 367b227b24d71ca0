//! Builds the eBPF object from `bpf/sluice.bpf.c` with clang, as Cilium
//! builds its datapath; the agent embeds the result.

use std::path::PathBuf;
use std::process::Command;

fn find_clang() -> Option<String> {
    if let Ok(c) = std::env::var("CLANG") {
        return Some(c);
    }
    ["clang-19", "clang-18", "clang-17", "clang"]
        .iter()
        .find(|c| {
            Command::new(c)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .map(|c| (*c).to_owned())
}

fn main() {
    // Read when the script runs, not when it is built: one build script
    // binary may serve checkouts at other paths sharing a target directory.
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let bpf = PathBuf::from(manifest).join("../bpf");
    for f in ["sluice.bpf.c", "sluice.h"] {
        println!("cargo:rerun-if-changed={}", bpf.join(f).display());
    }
    println!("cargo:rerun-if-env-changed=CLANG");
    let Some(clang) = find_clang() else {
        panic!(
            "\n\nclang was not found: sluice's eBPF datapath (bpf/sluice.bpf.c) is compiled with clang.\n\
             Install it with `apt-get install clang-19 libbpf-dev gcc-multilib` \
             (or run `bash scripts/setup.sh`), or point CLANG at a clang binary.\n\n"
        );
    };
    let arch_include = format!("/usr/include/{}-linux-gnu", std::env::consts::ARCH);
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    // The datapath's memory ordering depends on the CPU it runs on (see
    // `event` in sluice.bpf.c); the names are libbpf's __TARGET_ARCH_*.
    let target_arch = match std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("x86_64") => "-D__TARGET_ARCH_x86",
        Ok("aarch64") => "-D__TARGET_ARCH_arm64",
        _ => "-D__TARGET_ARCH_other",
    };
    // Two builds of one source: the agent's pins its maps by name, the
    // other (tests, benchmarks) leaves nothing behind in bpffs.
    for (name, defines) in [
        ("sluice.bpf.o", &[][..]),
        ("sluice-pinned.bpf.o", &["-DSL_PIN"][..]),
    ] {
        let status = Command::new(&clang)
            .args(["-g", "-O2", "-target", "bpf", "-Wall", "-Werror"])
            .args(defines)
            .arg(target_arch)
            .arg(format!("-I{arch_include}"))
            .arg(format!("-I{}", bpf.display()))
            .arg("-c")
            .arg(bpf.join("sluice.bpf.c"))
            .arg("-o")
            .arg(out_dir.join(name))
            .status()
            .unwrap_or_else(|e| panic!("cannot run {clang}: {e}"));
        if !status.success() {
            panic!(
                "{clang} failed to compile bpf/sluice.bpf.c; it needs libbpf's headers \
                 (`apt-get install libbpf-dev`) and <asm/types.h> (`apt-get install gcc-multilib`)"
            );
        }
    }
}
