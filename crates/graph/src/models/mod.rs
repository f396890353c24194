//! Graph neural network models, one file per model.

pub mod gcn;

pub use gcn::{Gcn, GcnConfig, GcnInput, GcnLayer, GcnLayerConfig};
