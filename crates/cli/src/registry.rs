//! Every system the binary knows. Adding a system is one line here (and its crate).

use ferrolab_core::system::DynSystem;

/// The systems, in the order `--help`, `reproduce` and report.md list them.
pub fn systems() -> Vec<&'static dyn DynSystem> {
    vec![
        &ferrolab_text::SecnnSystem,
        &ferrolab_graph::ClusterGcnSystem,
        &ferrolab_ctr::ApgSystem,
        &ferrolab_fhe::CkksSystem,
        &ferrolab_fhe::hyphen::system::HyphenSystem,
        &ferrolab_dfl::TaskmetSystem,
        &ferrolab_vision::classify::ClassifySystem,
        &ferrolab_vision::adod::AdodSystem,
        &ferrolab_compress::LayerImportanceSystem,
        &ferrolab_vision::attenscribble::AttenScribbleSystem,
        &ferrolab_fed::fedgraph::FedGraphSystem,
        &ferrolab_fed::sdgt::SdgtSystem,
        &ferrolab_edge::AdaEvoSystem,
    ]
}

/// The system whose CLI name is `name`.
pub fn find(name: &str) -> Option<&'static dyn DynSystem> {
    systems().into_iter().find(|s| s.name() == name)
}
