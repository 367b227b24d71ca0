//! L7 matching: 1,000 HTTP rules on one port (method + path + host), the
//! combined DFA versus a loop over each rule's regexes with the `regex`
//! crate, single-threaded, on ~80-byte requests (issue: ≥ 10× the loop and
//! ≥ 5,000,000 requests/s). `cargo bench -p compiler --bench l7`.

use compiler::l7::{Matcher, DEFAULT_SIZE_LIMIT};
use std::hint::black_box;
use std::time::Instant;

fn rules(n: usize) -> Vec<Vec<Option<String>>> {
    let methods = ["GET", "POST", "PUT", "DELETE", "GET|HEAD"];
    (0..n)
        .map(|i| {
            let path = match i % 4 {
                0 => format!("/api/v1/service{i}/.*"),
                1 => format!("/api/v2/items/[0-9]+/owner{i}"),
                2 => format!("/static/team{i}/[a-z0-9_-]+\\.(js|css|png)"),
                _ => format!("/internal/jobs/{i}(/status)?"),
            };
            vec![
                Some(methods[i % methods.len()].to_owned()),
                Some(path),
                Some(format!("svc{}\\.shop\\.example\\.com", i % 50)),
            ]
        })
        .collect()
}

/// Requests of about 80 bytes (method + path + host): a third match a rule,
/// the rest miss in different places.
fn requests(n: usize) -> Vec<[String; 3]> {
    (0..n)
        .map(|j| {
            let i = (j * 7919) % 1000;
            match j % 3 {
                0 => [
                    ["GET", "POST", "PUT", "DELETE", "HEAD"][i % 5].to_owned(),
                    format!("/api/v1/service{i}/orders/2026/11/25/summary-report"),
                    format!("svc{}.shop.example.com", i % 50),
                ],
                1 => [
                    "GET".to_owned(),
                    format!("/api/v2/items/{}/owner{}/extra-segment-x", j, i),
                    format!("svc{}.shop.example.com", i % 50),
                ],
                _ => [
                    "PATCH".to_owned(),
                    format!("/static/team{i}/bundle-{j}.js?cache=bust-0123456789"),
                    "cdn.shop.example.com".to_owned(),
                ],
            }
        })
        .collect()
}

fn main() {
    let rs = rules(1000);
    let t = Instant::now();
    let m = Matcher::build(3, &rs, DEFAULT_SIZE_LIMIT).expect("1,000 rules build");
    let build_ms = t.elapsed().as_secs_f64() * 1e3;
    let loop_rules: Vec<[regex::bytes::Regex; 3]> = rs
        .iter()
        .map(|r| {
            let re = |f: &Option<String>| {
                regex::bytes::RegexBuilder::new(&format!("^(?:{})$", f.as_deref().unwrap_or(".*")))
                    .unicode(false)
                    .build()
                    .expect("regex")
            };
            [re(&r[0]), re(&r[1]), re(&r[2])]
        })
        .collect();
    let reqs = requests(10_000);
    let avg_len: usize = reqs
        .iter()
        .map(|r| r.iter().map(String::len).sum::<usize>() + 2)
        .sum::<usize>()
        / reqs.len();

    // Both answer the same.
    let mut out = Vec::new();
    let mut allowed = 0;
    for r in &reqs {
        let f: Vec<&[u8]> = r.iter().map(|s| s.as_bytes()).collect();
        m.matches(&f, &mut out);
        let by_loop = loop_rules
            .iter()
            .any(|[a, b, c]| a.is_match(f[0]) && b.is_match(f[1]) && c.is_match(f[2]));
        assert_eq!(!out.is_empty(), by_loop, "{r:?}");
        allowed += usize::from(by_loop);
    }

    let rounds = 100;
    let t = Instant::now();
    let mut n = 0usize;
    for _ in 0..rounds {
        for r in &reqs {
            let f = [r[0].as_bytes(), r[1].as_bytes(), r[2].as_bytes()];
            m.matches(black_box(&f), &mut out);
            n += out.len();
        }
    }
    let dfa_s = t.elapsed().as_secs_f64();
    black_box(n);
    let loop_rounds = 2;
    let t = Instant::now();
    let mut n = 0usize;
    for _ in 0..loop_rounds {
        for r in &reqs {
            let f = [r[0].as_bytes(), r[1].as_bytes(), r[2].as_bytes()];
            let f = black_box(&f);
            n += usize::from(
                loop_rules
                    .iter()
                    .any(|[a, b, c]| a.is_match(f[0]) && b.is_match(f[1]) && c.is_match(f[2])),
            );
        }
    }
    let loop_s = t.elapsed().as_secs_f64();
    black_box(n);
    let dfa_rps = (rounds * reqs.len()) as f64 / dfa_s;
    let loop_rps = (loop_rounds * reqs.len()) as f64 / loop_s;
    println!(
        "1000 HTTP rules, {avg_len}-byte requests ({allowed} of {} allowed); DFA built in {build_ms:.0} ms, {} KiB",
        reqs.len(),
        m.memory() / 1024
    );
    println!("combined DFA:        {:>12.0} requests/s", dfa_rps);
    println!("loop over regexes:   {:>12.0} requests/s", loop_rps);
    println!("speed-up:            {:>12.1}x", dfa_rps / loop_rps);
}
