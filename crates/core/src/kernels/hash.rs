//! Counter-based random numbers and non-cryptographic hashes: one SplitMix64 and one FNV-1a
//! for the whole workspace, so a seed means the same stream everywhere and a cache key is
//! computed one way.
//!
//! Counter-based means a value depends only on `(seed, counter)`, never on how many values
//! another thread drew before: parallel loops that seed a stream per block stay
//! deterministic for any thread count.

/// SplitMix64's increment (the golden ratio in 64 bits).
const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;
/// FNV-1a's 64-bit offset basis and prime.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// One step of SplitMix64 (Steele, Lea & Flood 2014): advances `state`, returns the output.
#[inline]
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(GOLDEN);
    mix64(*state)
}

/// The output of SplitMix64 for state `z`, without a state to advance: a bijective mixer,
/// `splitmix64_at(z) == splitmix64(&mut (z - GOLDEN))`.
#[inline]
pub fn splitmix64_at(z: u64) -> u64 {
    mix64(z.wrapping_add(GOLDEN))
}

/// SplitMix64's finaliser (variant 13 of Stafford's mixers).
#[inline]
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// FNV-1a over bytes (64-bit): names of seed streams.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(FNV_OFFSET, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(FNV_PRIME)
    })
}

/// FNV-1a over 64-bit words with a shift-xor after each multiply, for cache keys of large
/// arrays: a word per step is 8x fewer multiplies than bytewise FNV, and the shift folds the
/// high bits back down, which the multiply alone never does.
#[derive(Debug, Clone)]
pub struct WordHasher(u64);

impl Default for WordHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl WordHasher {
    pub fn new() -> Self {
        WordHasher(FNV_OFFSET)
    }

    /// Adds one word.
    #[inline]
    pub fn word(&mut self, w: u64) {
        self.0 = (self.0 ^ w).wrapping_mul(FNV_PRIME);
        self.0 ^= self.0 >> 29;
    }

    /// Adds `bytes` as little-endian words, the last one zero-padded. The length is not
    /// added: callers that hash variable-length data mix it in themselves.
    pub fn bytes(&mut self, bytes: &[u8]) {
        for c in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..c.len()].copy_from_slice(c);
            self.word(u64::from_le_bytes(w));
        }
    }

    /// The running state.
    pub fn state(&self) -> u64 {
        self.0
    }

    /// The state through MurmurHash3's 64-bit finaliser, so that every input bit reaches
    /// every output bit.
    pub fn finish(&self) -> u64 {
        let mut x = self.0;
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^ (x >> 33)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_gives_the_published_stream() {
        // Reference values of SplitMix64 seeded with 1234567 (Vigna's splitmix64.c).
        let mut s = 1_234_567u64;
        let got: Vec<u64> = (0..3).map(|_| splitmix64(&mut s)).collect();
        assert_eq!(
            got,
            [
                6_457_827_717_110_365_317,
                3_203_168_211_198_807_973,
                9_817_491_932_198_370_423
            ]
        );
        assert_eq!(splitmix64_at(1_234_567), got[0]);
    }

    #[test]
    fn fnv1a64_gives_the_published_values() {
        // Test vectors of the FNV reference (isthe.com/chongo/tech/comp/fnv).
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn word_hasher_reads_bytes_as_padded_little_endian_words() {
        let mut a = WordHasher::new();
        a.bytes(&[1, 2, 3, 4, 5, 6, 7, 8, 9]);
        let mut b = WordHasher::new();
        b.word(u64::from_le_bytes([1, 2, 3, 4, 5, 6, 7, 8]));
        b.word(9);
        assert_eq!(a.state(), b.state());
        assert_ne!(a.finish(), a.state());
    }
}
