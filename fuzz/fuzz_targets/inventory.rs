//! Any bytes as an inventory: located errors, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut sources = policy_lang::source::SourceMap::new();
    let mut diags = Vec::new();
    let _ = compiler::inventory::parse_str("fuzz.yaml", text, &mut sources, &mut diags);
});
