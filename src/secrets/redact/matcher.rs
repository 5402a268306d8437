//! Finds where any registered pattern occurs in a text, in one pass however many patterns
//! there are, on top of the `aho-corasick` crate. The search is overlapping, so every
//! occurrence is covered, not only the leftmost ones: with `abcd` and `cdef` registered,
//! all of `abcdef` is covered. It knows nothing about secrets or replacement text.

use aho_corasick::AhoCorasick;

/// The compiled automaton.
#[derive(Debug, Clone, Default)]
pub(super) struct Matcher {
    /// `None` with no pattern, or when building failed (see [`Matcher::new`]).
    automaton: Option<AhoCorasick>,
    longest: usize,
}

impl Matcher {
    /// Builds the automaton. Empty patterns are ignored.
    pub(super) fn new<'a>(patterns: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let patterns: Vec<&[u8]> = patterns.into_iter().filter(|p| !p.is_empty()).collect();
        let longest = patterns.iter().map(|p| p.len()).max().unwrap_or(0);
        // Building fails only past the crate's size limits (about 2^31 states), far beyond
        // any set of secret values. Should it happen anyway, `spans` fails closed and covers
        // the whole text: redacting too much is safer than leaking a value.
        let automaton = if patterns.is_empty() {
            None
        } else {
            AhoCorasick::new(&patterns)
                .inspect_err(|error| {
                    tracing::error!(%error, "secret patterns exceed the matcher's limits; redacting whole texts");
                })
                .ok()
        };
        Self { automaton, longest }
    }

    /// Length in bytes of the longest pattern (0 with none).
    pub(super) fn longest(&self) -> usize {
        self.longest
    }

    /// Whether there is no pattern.
    pub(super) fn is_empty(&self) -> bool {
        self.longest == 0
    }

    /// Byte ranges of `hay` covered by pattern occurrences, in order; overlapping
    /// occurrences are merged into one range, adjacent ones are not.
    pub(super) fn spans(&self, hay: &[u8]) -> Vec<(usize, usize)> {
        let mut spans: Vec<(usize, usize)> = Vec::new();
        if self.is_empty() {
            return spans;
        }
        let Some(automaton) = &self.automaton else {
            if !hay.is_empty() {
                spans.push((0, hay.len()));
            }
            return spans;
        };
        // The overlapping search reports occurrences in the order their ends are reached.
        for found in automaton.find_overlapping_iter(hay) {
            let (mut start, end) = (found.start(), found.end());
            // Ends only grow, so a new occurrence can only overlap the spans at the top;
            // it may start before several of them (a long pattern ending after short ones).
            while let Some(&(s0, e0)) = spans.last() {
                if e0 > start {
                    start = start.min(s0);
                    spans.pop();
                } else {
                    break;
                }
            }
            spans.push((start, end));
        }
        spans
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spans(patterns: &[&str], hay: &str) -> Vec<(usize, usize)> {
        Matcher::new(patterns.iter().map(|p| p.as_bytes())).spans(hay.as_bytes())
    }

    /// Which bytes of `hay` some occurrence covers, by the obvious quadratic search.
    fn naive_coverage(patterns: &[&str], hay: &str) -> Vec<bool> {
        let mut covered = vec![false; hay.len()];
        for p in patterns.iter().filter(|p| !p.is_empty()) {
            for i in 0..hay.len() {
                if hay.as_bytes()[i..].starts_with(p.as_bytes()) {
                    covered[i..i + p.len()].iter_mut().for_each(|c| *c = true);
                }
            }
        }
        covered
    }

    #[test]
    fn finds_every_occurrence_and_merges_overlaps() {
        assert_eq!(spans(&["abc"], "xxabcxxabc"), [(2, 5), (7, 10)]);
        assert_eq!(spans(&["abcd", "cdef"], "abcdef"), [(0, 6)]);
        assert_eq!(spans(&["bc", "abcd"], "abcd"), [(0, 4)]);
        assert_eq!(spans(&["aa"], "aaaa"), [(0, 4)]);
        assert_eq!(spans(&["he", "she", "his", "hers"], "ushers"), [(1, 6)]);
        assert!(spans(&[], "anything").is_empty());
        assert!(spans(&["zzz"], "").is_empty());
    }

    #[test]
    fn adjacent_occurrences_stay_separate() {
        assert_eq!(spans(&["ab"], "abab"), [(0, 2), (2, 4)]);
    }

    #[test]
    fn agrees_with_a_naive_search_on_generated_inputs() {
        // A small deterministic generator over a 3-letter alphabet makes overlaps common.
        let mut seed: u32 = 12345;
        let mut next = || {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            seed >> 16
        };
        for _ in 0..500 {
            let patterns: Vec<String> = (0..(next() % 4 + 1))
                .map(|_| {
                    (0..(next() % 4 + 1))
                        .map(|_| (b'a' + (next() % 3) as u8) as char)
                        .collect()
                })
                .collect();
            let hay: String = (0..(next() % 30))
                .map(|_| (b'a' + (next() % 3) as u8) as char)
                .collect();
            let refs: Vec<&str> = patterns.iter().map(String::as_str).collect();
            let got = spans(&refs, &hay);
            let mut covered = vec![false; hay.len()];
            for &(s, e) in &got {
                assert!(s < e && covered[s..e].iter().all(|c| !c), "spans are disjoint: {got:?}");
                covered[s..e].iter_mut().for_each(|x| *x = true);
            }
            assert_eq!(covered, naive_coverage(&refs, &hay), "{refs:?} in {hay:?}");
        }
    }
}
