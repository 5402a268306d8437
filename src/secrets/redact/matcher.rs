//! A multi-pattern byte matcher (Aho–Corasick automaton) that finds where any registered
//! pattern occurs, in one pass over the text however many patterns there are. It knows
//! nothing about secrets or replacement text.

use std::collections::VecDeque;

const ROOT: u32 = 0;

/// One trie node.
#[derive(Debug, Clone, Default)]
struct State {
    /// Outgoing edges, sorted by byte (binary-searched; most nodes have one or two).
    next: Vec<(u8, u32)>,
    /// The longest proper suffix of this node's string that is also a trie node.
    fail: u32,
    /// Length of the longest pattern that ends here (this node or via `fail`), 0 if none.
    longest_out: usize,
}

/// The compiled automaton.
#[derive(Debug, Clone)]
pub(super) struct Matcher {
    states: Vec<State>,
    /// Dense edges out of the root: most bytes of ordinary text start no pattern, and this
    /// makes that common case one array lookup.
    root: Box<[u32; 256]>,
    longest: usize,
}

impl Default for Matcher {
    fn default() -> Self {
        Self::new(std::iter::empty::<&[u8]>())
    }
}

impl Matcher {
    /// Builds the automaton. Empty patterns are ignored.
    pub(super) fn new<'a>(patterns: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let mut states = vec![State::default()];
        let mut longest = 0;
        for pattern in patterns {
            if pattern.is_empty() {
                continue;
            }
            longest = longest.max(pattern.len());
            let mut s = ROOT;
            for &byte in pattern {
                s = match find(&states[s as usize].next, byte) {
                    Some(t) => t,
                    None => {
                        let t = u32::try_from(states.len()).unwrap_or(u32::MAX);
                        states.push(State::default());
                        let edges = &mut states[s as usize].next;
                        let at = edges.partition_point(|(b, _)| *b < byte);
                        edges.insert(at, (byte, t));
                        t
                    }
                };
            }
            let end = &mut states[s as usize];
            end.longest_out = end.longest_out.max(pattern.len());
        }
        let mut root = Box::new([ROOT; 256]);
        for &(byte, t) in &states[ROOT as usize].next {
            root[usize::from(byte)] = t;
        }
        // Breadth-first, so a node's fail target (always shallower) is finished first.
        let mut queue: VecDeque<u32> = states[ROOT as usize].next.iter().map(|&(_, t)| t).collect();
        while let Some(s) = queue.pop_front() {
            let edges = states[s as usize].next.clone();
            for (byte, t) in edges {
                let mut f = states[s as usize].fail;
                let fail = loop {
                    if let Some(x) = step(&states, &root, f, byte) {
                        break x;
                    }
                    if f == ROOT {
                        break ROOT;
                    }
                    f = states[f as usize].fail;
                };
                let inherited = states[fail as usize].longest_out;
                let node = &mut states[t as usize];
                node.fail = fail;
                node.longest_out = node.longest_out.max(inherited);
                queue.push_back(t);
            }
        }
        Self { states, root, longest }
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
        let mut s = ROOT;
        for (i, &byte) in hay.iter().enumerate() {
            s = loop {
                if let Some(t) = step(&self.states, &self.root, s, byte) {
                    break t;
                }
                if s == ROOT {
                    break ROOT;
                }
                s = self.states[s as usize].fail;
            };
            let len = self.states[s as usize].longest_out;
            if len == 0 {
                continue;
            }
            let (mut start, end) = (i + 1 - len, i + 1);
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

fn find(edges: &[(u8, u32)], byte: u8) -> Option<u32> {
    edges.binary_search_by_key(&byte, |(b, _)| *b).ok().map(|i| edges[i].1)
}

/// The goto function: the child of `s` on `byte`, if any.
fn step(states: &[State], root: &[u32; 256], s: u32, byte: u8) -> Option<u32> {
    if s == ROOT {
        Some(root[usize::from(byte)]).filter(|&t| t != ROOT)
    } else {
        find(&states[s as usize].next, byte)
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
