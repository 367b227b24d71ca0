//! Any bytes as a compact flows file (and its `dns:` section).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let id = policy_lang::source::FileId(0);
    let mut diags = Vec::new();
    let _ = simulator::flow::parse_dns(text, id, &mut diags);
    let _ = simulator::flow::parse_yaml(text, id, &mut diags);
});
