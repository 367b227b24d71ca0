//! Any bytes as a policy file: a diagnostic, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let loaded = policy_lang::parse_source("fuzz.yaml", text, &policy_lang::LoadOptions::default());
    // Rendering every diagnostic is part of the front end: it quotes the
    // input.
    for d in &loaded.diagnostics {
        let _ = d.render(&loaded.sources, false);
    }
});
