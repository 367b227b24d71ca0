//! A valid policy rendered back to YAML parses to the same IR.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let opts = policy_lang::LoadOptions::default();
    let first = policy_lang::parse_source("fuzz.yaml", text, &opts);
    if first.error_count() > 0 || first.set.policies.is_empty() {
        return;
    }
    let rendered = policy_lang::render::render_set(&first.set);
    let second = policy_lang::parse_source("rendered.yaml", &rendered, &opts);
    assert_eq!(second.error_count(), 0, "the rendering of a valid set is valid:\n{rendered}");
    assert_eq!(first.set, second.set, "parse(render(IR)) == IR:\n{rendered}");
});
