//! Any bytes as a compiled artifact: refused or decoded, and a decoded one
//! encodes back to what decodes the same.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = compiler::artifact::decode(data) {
        let again = compiler::artifact::decode(&compiler::artifact::encode(&c));
        assert!(again.is_ok(), "a decoded artifact re-encodes to a valid one");
    }
});
