//! Any bytes as what a client sends the L7 proxy's HTTP side.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    agent::proxy::parsers::http_requests(data);
    if let Ok(path) = std::str::from_utf8(data) {
        // Normalizing is idempotent: a normalized path is judged as itself.
        let once = compiler::l7::normalize_http_path(path);
        assert_eq!(compiler::l7::normalize_http_path(&once), once, "{path:?}");
    }
});
