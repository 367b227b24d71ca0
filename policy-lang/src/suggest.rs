//! "Did you mean" suggestions.

/// Edit distance between two strings, counted in characters, where
/// swapping two neighbours (`form` for `from`) is one edit, as typos are
/// (optimal string alignment distance).
pub fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let w = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * w];
    for i in 0..=a.len() {
        d[i * w] = i;
    }
    for (j, cell) in d.iter_mut().enumerate().take(w) {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[(i - 1) * w + j] + 1)
                .min(d[i * w + j - 1] + 1)
                .min(d[(i - 1) * w + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[(i - 2) * w + j - 2] + 1);
            }
            d[i * w + j] = v;
        }
    }
    d[a.len() * w + b.len()]
}

/// The candidate closest to `input`, if it is close enough to be a likely
/// typo: same word in another case, or within a third of its length.
pub fn did_you_mean<'a>(input: &str, candidates: &[&'a str]) -> Option<&'a str> {
    if let Some(c) = candidates.iter().find(|c| c.eq_ignore_ascii_case(input)) {
        return Some(c);
    }
    let lower = input.to_ascii_lowercase();
    let len = lower.chars().count();
    candidates
        .iter()
        .filter_map(|c| {
            let n = c.chars().count();
            let limit = (n.max(3) / 3).max(1);
            // The distance is at least the difference in length: most of
            // thousands of candidates (label values of a big cluster) are
            // out of reach without computing it.
            if n.abs_diff(len) > limit {
                return None;
            }
            let d = levenshtein(&lower, &c.to_ascii_lowercase());
            (d <= limit).then_some((d, *c))
        })
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_typos_and_case() {
        let fields = ["ingress", "ingressDeny", "egress", "egressDeny"];
        assert_eq!(did_you_mean("ingres", &fields), Some("ingress"));
        assert_eq!(did_you_mean("Egress", &fields), Some("egress"));
        assert_eq!(did_you_mean("ingressdeny", &fields), Some("ingressDeny"));
        assert_eq!(did_you_mean("selector", &fields), None);
        // At the edge of reach: one character more is a typo, two are not.
        assert_eq!(did_you_mean("web", &["web1"]), Some("web1"));
        assert_eq!(did_you_mean("we", &["web1"]), None);
        assert_eq!(
            did_you_mean("production", &["productoin", "prod"]),
            Some("productoin")
        );
        assert_eq!(levenshtein("kitten", "sitting"), 3);
        assert_eq!(levenshtein("form", "from"), 1);
        assert_eq!(did_you_mean("form", &["from", "to", "port"]), Some("from"));
    }
}
