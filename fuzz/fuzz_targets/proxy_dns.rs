//! Any bytes as a DNS message reaching the L7 proxy.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    agent::proxy::parsers::dns_message(data);
});
