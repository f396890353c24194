//! Pretrained word vectors in the word2vec / GloVe text format: an optional `count dim` header
//! line, then `word v1 … vd` per line. Words of the vocabulary that the file lacks keep
//! Kim's random initialisation, U(-0.25, 0.25).

use crate::error::{Result, TextError};
use crate::tokenize::Vocab;
use std::io::{BufRead, BufReader};
use std::path::Path;

/// Builds the `vocab.len() × dim` embedding matrix (row-major): rows of words found in `path`
/// take their vectors, the rest the values already in `init`. Returns how many were found.
pub fn load_word_vectors(
    path: &Path,
    vocab: &Vocab,
    dim: usize,
    init: &mut [f32],
) -> Result<usize> {
    let file = std::fs::File::open(path).map_err(|e| TextError::io(path, e))?;
    let mut found = 0;
    let mut seen = vec![false; vocab.len()];
    // word2vec's header announces the vector count: fewer vectors than that is a truncated
    // file, which would otherwise train silently from random vectors for the missing words.
    let mut announced = None;
    let mut vectors = 0usize;
    for (i, line) in BufReader::new(file).split(b'\n').enumerate() {
        let line = line.map_err(|e| TextError::io(path, e))?;
        let text = ferrolab_data::text::decode_text(&line);
        let mut parts = text.split_whitespace();
        let Some(word) = parts.next() else { continue };
        let values: Vec<&str> = parts.collect();
        if i == 0 && values.len() == 1 && word.parse::<usize>().is_ok() {
            // word2vec header "count dim": check the width and move on.
            if values[0].parse::<usize>().ok() != Some(dim) {
                return Err(TextError::bad(
                    path,
                    i + 1,
                    format!("header says dimension {}, model uses {dim}", values[0]),
                ));
            }
            announced = word.parse::<usize>().ok();
            continue;
        }
        vectors += 1;
        if values.len() != dim {
            return Err(TextError::bad(
                path,
                i + 1,
                format!("{} values for `{word}`, expected {dim}", values.len()),
            ));
        }
        let id = vocab.get(word);
        if id == crate::tokenize::OOV || seen[id] {
            continue;
        }
        let row = &mut init[id * dim..(id + 1) * dim];
        for (slot, v) in row.iter_mut().zip(&values) {
            *slot = v
                .parse::<f32>()
                .ok()
                .filter(|x| x.is_finite())
                .ok_or_else(|| {
                    TextError::bad(path, i + 1, format!("`{v}` is not a finite number"))
                })?;
        }
        seen[id] = true;
        found += 1;
    }
    if vectors == 0 {
        return Err(TextError::bad(path, 1, "holds no word vectors".into()));
    }
    if let Some(n) = announced.filter(|&n| vectors < n) {
        return Err(TextError::bad(
            path,
            vectors + 1,
            format!(
                "the header announces {n} vectors but the file ends after {vectors} (truncated?)"
            ),
        ));
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenize::{Vocab, tokenize};

    #[test]
    fn reads_glove_and_word2vec_headers() {
        let dir = std::env::temp_dir().join(format!("ferrolab-emb-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let vocab = Vocab::build(&[tokenize("good bad film")], 1);
        let p = dir.join("vec.txt");
        std::fs::write(&p, "3 2\ngood 1 2\nzebra 5 5\nfilm -1 0.5\n").unwrap();
        let mut m = vec![0.0; vocab.len() * 2];
        assert_eq!(load_word_vectors(&p, &vocab, 2, &mut m).unwrap(), 2);
        let g = vocab.get("good");
        assert_eq!(&m[g * 2..g * 2 + 2], &[1.0, 2.0]);
        let b = vocab.get("bad");
        assert_eq!(&m[b * 2..b * 2 + 2], &[0.0, 0.0]);
        std::fs::write(&p, "good 1 2 3\n").unwrap();
        let e = load_word_vectors(&p, &vocab, 2, &mut m)
            .unwrap_err()
            .to_string();
        assert!(e.contains("vec.txt") && e.contains("line 1"), "{e}");
        std::fs::write(&p, "good 1 nan\n").unwrap();
        assert!(load_word_vectors(&p, &vocab, 2, &mut m).is_err());
        // Truncated after its header's count, or empty: refused, not trained from random.
        for (text, says) in [
            (
                "3 2\ngood 1 2\n",
                "announces 3 vectors but the file ends after 1",
            ),
            ("", "holds no word vectors"),
            ("3 2\n", "holds no word vectors"),
        ] {
            std::fs::write(&p, text).unwrap();
            let e = load_word_vectors(&p, &vocab, 2, &mut m)
                .unwrap_err()
                .to_string();
            assert!(e.contains(says), "{e}");
        }
        std::fs::remove_dir_all(&dir).ok();
    }
}
