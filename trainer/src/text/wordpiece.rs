//! A WordPiece vocabulary learnt from texts, canonical: the same words give the same pieces with
//! the same ids, in every run and process.
//!
//! The method is the `tokenizers` WordPiece trainer's (a BPE trainer whose non-initial pieces
//! carry `##`): start from the special tokens and every character (word-initial `c`, inner
//! `##c`), then repeatedly merge the adjacent pair of pieces seen most often (weighted by word
//! count) into a new piece, until the vocabulary holds `vocab_size` pieces or no pair is seen
//! `min_frequency` times. That trainer numbers inner characters in hash-map order and breaks ties
//! between equally frequent pairs by those numbers, so the vocabulary (and every student trained
//! on it) changed from run to run. Here every order is defined: words in byte order, initial
//! characters then inner characters each in code-point order, and among pairs of equal count the
//! pair whose pieces have the smaller ids first (the trainer's rule, on canonical ids).

use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};

type Pair = (u32, u32);

/// A pair of pieces with the count it had when queued. Ordered for a max-heap: larger count
/// first, then the smaller pair.
#[derive(PartialEq, Eq)]
struct Queued {
    count: u64,
    pair: Pair,
}

impl Ord for Queued {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.count.cmp(&other.count).then_with(|| other.pair.cmp(&self.pair))
    }
}

impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// The vocabulary being built: pieces by id and ids by piece.
struct Pieces {
    list: Vec<String>,
    ids: HashMap<String, u32>,
}

impl Pieces {
    fn id(&mut self, piece: &str) -> u32 {
        if let Some(&id) = self.ids.get(piece) {
            return id;
        }
        let id = self.list.len() as u32;
        self.list.push(piece.to_string());
        self.ids.insert(piece.to_string(), id);
        id
    }
}

/// Pair counts of words held as piece ids, with the words each pair occurs in.
struct PairStats {
    counts: HashMap<Pair, u64>,
    words: HashMap<Pair, BTreeSet<usize>>,
}

impl PairStats {
    fn add(&mut self, word: &[u32], w: usize, count: u64) {
        for p in word.windows(2) {
            *self.counts.entry((p[0], p[1])).or_default() += count;
            self.words.entry((p[0], p[1])).or_default().insert(w);
        }
    }

    fn remove(&mut self, word: &[u32], count: u64) {
        for p in word.windows(2) {
            if let Some(c) = self.counts.get_mut(&(p[0], p[1])) {
                *c -= count;
            }
        }
    }
}

/// The pieces of a WordPiece vocabulary learnt from `words` (word -> count), in id order:
/// `specials` first, then the alphabet, then merged pieces in the order they were merged.
pub(super) fn learn(
    words: &BTreeMap<String, u64>,
    vocab_size: usize,
    min_frequency: u64,
    specials: &[&str],
) -> Vec<String> {
    let mut pieces = Pieces { list: Vec::new(), ids: HashMap::new() };
    for s in specials {
        pieces.id(s);
    }
    let initial: BTreeSet<char> = words.keys().filter_map(|w| w.chars().next()).collect();
    let inner: BTreeSet<char> = words.keys().flat_map(|w| w.chars().skip(1)).collect();
    for c in initial {
        pieces.id(&c.to_string());
    }
    for c in inner {
        pieces.id(&format!("##{c}"));
    }
    let counts: Vec<u64> = words.values().copied().collect();
    let mut seqs: Vec<Vec<u32>> = words
        .keys()
        .map(|w| {
            w.chars()
                .enumerate()
                .map(|(i, c)| pieces.ids[&if i == 0 { c.to_string() } else { format!("##{c}") }])
                .collect()
        })
        .collect();
    let mut stats = PairStats { counts: HashMap::new(), words: HashMap::new() };
    for (w, seq) in seqs.iter().enumerate() {
        stats.add(seq, w, counts[w]);
    }
    let mut queue: BinaryHeap<Queued> =
        stats.counts.iter().filter(|(_, &c)| c > 0).map(|(&pair, &count)| Queued { count, pair }).collect();
    while pieces.list.len() < vocab_size {
        let Some(top) = queue.pop() else { break };
        let now = stats.counts.get(&top.pair).copied().unwrap_or(0);
        if top.count != now {
            if now > 0 {
                queue.push(Queued { count: now, pair: top.pair });
            }
            continue;
        }
        if now < min_frequency.max(1) {
            break;
        }
        let (a, b) = top.pair;
        let merged = format!("{}{}", pieces.list[a as usize], pieces.list[b as usize].trim_start_matches("##"));
        let id = pieces.id(&merged);
        let affected = stats.words.remove(&top.pair).unwrap_or_default();
        let mut grown = BTreeSet::new();
        for w in affected {
            stats.remove(&seqs[w], counts[w]);
            seqs[w] = merge(&seqs[w], top.pair, id);
            stats.add(&seqs[w], w, counts[w]);
            grown.extend(seqs[w].windows(2).filter(|p| p.contains(&id)).map(|p| (p[0], p[1])));
        }
        for pair in grown {
            queue.push(Queued { count: stats.counts[&pair], pair });
        }
    }
    pieces.list
}

/// `word` with every occurrence of `pair` (left to right, not overlapping) replaced by `id`.
fn merge(word: &[u32], pair: Pair, id: u32) -> Vec<u32> {
    let mut out = Vec::with_capacity(word.len());
    let mut i = 0;
    while i < word.len() {
        if i + 1 < word.len() && (word[i], word[i + 1]) == pair {
            out.push(id);
            i += 2;
        } else {
            out.push(word[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(list: &[(&str, u64)]) -> BTreeMap<String, u64> {
        list.iter().map(|(w, c)| (w.to_string(), *c)).collect()
    }

    /// Worked by hand: alphabet [PAD] a b ##b ##a; pairs (a,##b) 5, (b,##a) 2, (##b,##a) 3:
    /// `ab` first (5), then (ab,##a) 3 gives `aba`, then (b,##a) 2 gives `ba`.
    #[test]
    fn merges_follow_counts() {
        let w = words(&[("ab", 2), ("aba", 3), ("ba", 2)]);
        let v = learn(&w, 100, 2, &["[PAD]"]);
        assert_eq!(v, ["[PAD]", "a", "b", "##a", "##b", "ab", "aba", "ba"]);
        // Stops at the size asked for.
        assert_eq!(learn(&w, 6, 2, &["[PAD]"]), ["[PAD]", "a", "b", "##a", "##b", "ab"]);
        // And at min_frequency.
        assert_eq!(learn(&w, 100, 3, &["[PAD]"]), ["[PAD]", "a", "b", "##a", "##b", "ab", "aba"]);
    }

    /// Equally frequent pairs are merged in the order of their pieces' ids, whatever the input.
    #[test]
    fn ties_are_broken_by_ids() {
        let w = words(&[("xy", 2), ("ab", 2)]);
        assert_eq!(learn(&w, 100, 2, &[]), ["a", "x", "##b", "##y", "ab", "xy"]);
        let again = words(&[("ab", 2), ("xy", 2)]);
        assert_eq!(learn(&again, 100, 2, &[]), learn(&w, 100, 2, &[]));
    }

    #[test]
    fn overlapping_pairs_merge_left_to_right() {
        assert_eq!(merge(&[1, 1, 1], (1, 1), 9), [9, 1]);
        assert_eq!(merge(&[2, 1, 1, 1, 1], (1, 1), 9), [2, 9, 9]);
    }
}
