//! Any bytes as a compact flows file (and its `dns:` section), read whole
//! and streamed in pieces: both must give the same flows and problems.
#![no_main]
use libfuzzer_sys::fuzz_target;
use simulator::stream::{next_flows, Format, Pieces};

fuzz_target!(|data: &[u8]| {
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let id = policy_lang::source::FileId(0);
    let mut diags = Vec::new();
    let _ = simulator::flow::parse_dns(text, id, &mut Vec::new());
    let whole = simulator::flow::parse_yaml(text, id, &mut diags);
    let whole_errors = diags.iter().filter(|d| d.is_error()).count() > 0;
    // Pieces as small as the first byte says, so that cuts land everywhere.
    let mut pieces =
        Pieces::new(text.as_bytes(), Format::Yaml, 1 << 20).with_target(usize::from(cut) + 1);
    let (mut streamed, mut stream_errors) = (Vec::new(), false);
    loop {
        match next_flows(&mut pieces) {
            Ok(Some((_, flows, ds))) => {
                streamed.extend(flows);
                stream_errors |= ds.iter().any(|d| d.is_error());
            }
            Ok(None) => break,
            Err(_) => return,
        }
    }
    if !whole_errors {
        let key = |f: &simulator::flow::Flow| {
            format!("{} {} {} {} {:?} {}", f.from, f.to, f.port, f.protocol, f.expect, f.loc.0.line)
        };
        assert!(!stream_errors, "streaming found errors the whole file has not");
        assert_eq!(
            whole.iter().map(key).collect::<Vec<_>>(),
            streamed.iter().map(key).collect::<Vec<_>>()
        );
    } else {
        assert!(stream_errors, "streaming missed the whole file's errors");
    }
});
