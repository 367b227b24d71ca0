//! Port ranges as LPM prefixes, the way the datapath matches them.

/// Splits the inclusive range `[lo, hi]` into the fewest aligned blocks, each
/// `(start, prefix_bits)` with `prefix_bits` in 0..=16: the block covers
/// `start ..= start + 2^(16 - prefix_bits) - 1`.
pub fn range_to_prefixes(lo: u16, hi: u16) -> Vec<(u16, u8)> {
    let mut out = Vec::new();
    let (mut cur, hi) = (u32::from(lo), u32::from(hi));
    while cur <= hi {
        // The largest aligned block starting at `cur` that stays in range.
        let mut size = if cur == 0 {
            1 << 16
        } else {
            1u32 << cur.trailing_zeros().min(16)
        };
        while cur + size - 1 > hi {
            size >>= 1;
        }
        out.push((cur as u16, 16 - size.trailing_zeros() as u8));
        cur += size;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_example() {
        // The reference's worked example: 80-444.
        let got = range_to_prefixes(80, 444);
        let want = vec![
            (80, 12),
            (96, 11),
            (128, 9),
            (256, 9),
            (384, 11),
            (416, 12),
            (432, 13),
            (440, 14),
            (444, 16),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn blocks_cover_exactly_the_range() {
        for (lo, hi) in [
            (0, 65535),
            (1, 1),
            (0, 0),
            (1024, 65535),
            (8000, 8080),
            (65535, 65535),
        ] {
            let blocks = range_to_prefixes(lo, hi);
            let mut covered = 0u32;
            let mut next = u32::from(lo);
            for (start, bits) in blocks {
                assert_eq!(u32::from(start), next);
                let size = 1u32 << (16 - bits);
                assert_eq!(u32::from(start) % size, 0, "aligned");
                covered += size;
                next += size;
            }
            assert_eq!(covered, u32::from(hi) - u32::from(lo) + 1);
        }
    }
}
