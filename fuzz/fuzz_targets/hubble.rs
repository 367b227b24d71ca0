//! Any bytes as `hubble observe -o json` lines.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let sources = policy_lang::source::SourceMap::new();
    let mut diags = Vec::new();
    let _ = simulator::flow::hubble_dns_answers(text);
    let _ = simulator::flow::parse_hubble(text, policy_lang::source::FileId(0), &sources, &mut diags);
});
