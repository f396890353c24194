//! ferrolab-data: readers for the public data formats the ferrolab systems train on, and
//! deterministic synthetic generators for when real data is absent or too small.
//!
//! | module | format | entry point |
//! | --- | --- | --- |
//! | [`npy`], [`npz`] | NumPy arrays and archives (stored or deflated) | [`read_npy`], [`Npz::open`] |
//! | [`graph`] | CSR node-classification graphs in npz (Cora) | [`load_npz_graph`] |
//! | [`text`] | `<label> <sentence>` files (MR, SST-2) | [`read_labeled_sentences`] |
//! | [`movielens`] | GroupLens ml-100k folder | [`load_movielens_100k`] |
//! | [`prices`] | gzip price CSV (S&P 500) | [`load_price_csv_gz`] |
//! | [`acdc`] | ACDC scribble npz slices/volumes | [`list_acdc`], [`load_acdc_slice`] |
//! | [`idx`] | IDX (Fashion-MNIST), plain or gzip | [`read_idx`] |
//! | [`acdc_synthetic`] | synthetic short-axis cardiac volumes with scribbles, in the ACDC layout | [`synthetic_acdc_volume`] |
//! | [`synthetic`] | contextual stochastic block model, streamed to CSR | [`generate_csbm`] |
//! | [`underwater`] | physically based underwater scenes, ten Jerlov water types, COCO output | [`underwater::sample`] |
//! | [`lookup`] | where each dataset is; registry of known data sets | [`find_dataset`], [`datasets`], [`verify`] |
//! | [`fetch`] | download from the pinned public source, check, convert, install | [`fetch::fetch_many`], [`fetch::fetch_missing`] |
//!
//! Every reader returns [`DataError`] naming the file, the place in it (line, field, byte,
//! npz member, element) and what was expected; none panics on bad input.
//!
//! ```
//! use ferrolab_data::{CsbmConfig, generate_csbm};
//!
//! let g = generate_csbm(&CsbmConfig { nodes: 500, classes: 2, ..Default::default() })?;
//! let mut x = vec![0.0; g.config.features];
//! g.feature_row(0, &mut x);
//! assert_eq!(g.num_nodes(), 500);
//! # Ok::<(), ferrolab_data::DataError>(())
//! ```

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod acdc;
pub mod acdc_synthetic;
pub mod error;
pub mod fetch;
pub mod graph;
pub mod idx;
pub mod image;
mod io;
pub mod lookup;
pub mod movielens;
pub mod npy;
pub mod npz;
pub mod prices;
pub mod synthetic;
pub mod text;
pub mod underwater;

#[cfg(test)]
mod testutil;

pub use acdc::{AcdcSlice, AcdcVolume, list_acdc, load_acdc_slice, load_acdc_volume};
pub use acdc_synthetic::synthetic_acdc_volume;
pub use error::{DataError, Result};
pub use graph::{CsrGraphData, CsrMatrix, Features, Split, load_npz_graph};
pub use idx::{IdxArray, read_idx};
pub use io::{sync_dir, write_file_atomic};
pub use lookup::{
    DATA_ENV, DatasetInfo, DatasetKind, Source, dataset, datasets, find_dataset, is_available,
    locate, resolve_data_root, user_data_dir, verify,
};
pub use movielens::{Gender, Item, MovieLens100k, Rating, User, load_movielens_100k};
pub use npy::{NpyArray, NpyData, read_npy, read_npy_strings};
pub use npz::Npz;
pub use prices::{PriceTable, load_price_csv_gz};
pub use synthetic::{CsbmConfig, CsbmGraph, generate_csbm, generate_csbm_threads};
pub use text::{LabeledSentences, decode_text, read_labeled_sentences};
