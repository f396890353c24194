//! Kim (2014)'s preprocessing, written out without regular expressions: keep letters, digits
//! and `( ) , ! ? ' \``; split clitics (`'s 've n't 're 'd 'll`) and the punctuation marks into
//! their own tokens; collapse whitespace; lower-case. Then a vocabulary with a minimum count
//! and index encoding with padding (0) and an out-of-vocabulary token (1).

use std::collections::HashMap;

/// Cleans and tokenises one sentence as Kim's `clean_str` does (lower-cased).
pub fn tokenize(text: &str) -> Vec<String> {
    let mut spaced = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        let c = if c.is_ascii_alphanumeric() || "(),!?'`".contains(c) {
            c
        } else {
            ' '
        };
        if ",!()?".contains(c) {
            spaced.push(' ');
            spaced.push(c);
            spaced.push(' ');
        } else {
            spaced.push(c.to_ascii_lowercase());
        }
    }
    let mut out = Vec::new();
    for word in spaced.split_whitespace() {
        split_clitic(word, &mut out);
    }
    out
}

/// `don't` → `do n't`, `it's` → `it 's`, `we'll` → `we 'll` (one clitic at the end, as the
/// reference regexes effectively do on real text).
fn split_clitic(word: &str, out: &mut Vec<String>) {
    for suffix in ["n't", "'ve", "'re", "'ll", "'s", "'d"] {
        if word.len() > suffix.len() && word.ends_with(suffix) {
            out.push(word[..word.len() - suffix.len()].to_string());
            out.push(suffix.to_string());
            return;
        }
    }
    out.push(word.to_string());
}

/// Index of the padding token.
pub const PAD: usize = 0;
/// Index of the out-of-vocabulary token.
pub const OOV: usize = 1;

/// Token ↔ index mapping; index 0 is padding and 1 is out-of-vocabulary.
#[derive(Debug, Clone, PartialEq)]
pub struct Vocab {
    tokens: Vec<String>,
    index: HashMap<String, usize>,
}

impl Vocab {
    /// Builds a vocabulary from tokenised sentences, keeping tokens seen at least `min_count`
    /// times, ordered by descending count then alphabetically (deterministic).
    pub fn build<'a>(
        sentences: impl IntoIterator<Item = &'a Vec<String>>,
        min_count: usize,
    ) -> Self {
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for s in sentences {
            for t in s {
                *counts.entry(t.as_str()).or_default() += 1;
            }
        }
        let mut kept: Vec<(&str, usize)> = counts
            .into_iter()
            .filter(|&(_, c)| c >= min_count)
            .collect();
        kept.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        Self::from_tokens(
            ["<pad>", "<unk>"]
                .into_iter()
                .map(String::from)
                .chain(kept.into_iter().map(|(t, _)| t.to_string()))
                .collect(),
        )
    }

    /// From a token list whose first two entries are padding and OOV (as saved by [`tokens`]).
    ///
    /// [`tokens`]: Vocab::tokens
    pub fn from_tokens(tokens: Vec<String>) -> Self {
        let index = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i))
            .collect();
        Vocab { tokens, index }
    }

    /// All tokens, by index.
    pub fn tokens(&self) -> &[String] {
        &self.tokens
    }

    /// Number of entries including padding and OOV.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// True when only padding and OOV exist.
    pub fn is_empty(&self) -> bool {
        self.tokens.len() <= 2
    }

    /// Index of `token`, or [`OOV`].
    pub fn get(&self, token: &str) -> usize {
        self.index.get(token).copied().unwrap_or(OOV)
    }

    /// Encodes tokens, truncating to `max_len` (0 = no limit). An empty sentence becomes a
    /// single OOV token so every example has at least one position.
    pub fn encode(&self, tokens: &[String], max_len: usize) -> Vec<usize> {
        let n = if max_len == 0 {
            tokens.len()
        } else {
            tokens.len().min(max_len)
        };
        let mut ids: Vec<usize> = tokens[..n].iter().map(|t| self.get(t)).collect();
        if ids.is_empty() {
            ids.push(OOV);
        }
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kim_clean_str_rules() {
        assert_eq!(
            tokenize("It's a DON'T-miss (really), isn't it?!"),
            [
                "it", "'s", "a", "do", "n't", "miss", "(", "really", ")", ",", "is", "n't", "it",
                "?", "!"
            ]
        );
        assert_eq!(
            tokenize("we'll see ... caf\u{e9}"),
            ["we", "'ll", "see", "caf"]
        );
        assert!(tokenize("  ").is_empty());
    }

    #[test]
    fn vocab_min_count_and_encoding() {
        let s: Vec<Vec<String>> = ["a b a", "b c a"].iter().map(|t| tokenize(t)).collect();
        let v = Vocab::build(&s, 2);
        assert_eq!(v.tokens(), ["<pad>", "<unk>", "a", "b"]);
        assert_eq!(v.encode(&tokenize("a c b"), 0), [2, OOV, 3]);
        assert_eq!(v.encode(&tokenize("a c b"), 2), [2, OOV]);
        assert_eq!(v.encode(&[], 0), [OOV]);
    }
}
