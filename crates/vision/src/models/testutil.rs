//! Helpers shared by the models' tests.

use burn::module::Module;
use burn::prelude::*;
use ferrolab_core::nn::to_vec_f32;

/// Saves `model` through core's checkpoint code and loads the file into `fresh` (a model of
/// the same shape, initialised differently), returning the loaded model.
pub fn checkpoint_roundtrip<M: Module>(model: &M, fresh: M, name: &str) -> M {
    let dir = std::env::temp_dir().join(format!(
        "ferrolab-vision-{name}-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("model.safetensors");
    ferrolab_core::run::save_checkpoint(model, &path).unwrap();
    let loaded = ferrolab_core::run::load_checkpoint(fresh, &path).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    loaded
}

/// Largest absolute element difference.
pub fn max_abs_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
    let (a, b) = (to_vec_f32(a), to_vec_f32(b));
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
