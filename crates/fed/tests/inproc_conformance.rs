//! The in-process fabric passes the fabric conformance suite.

#![allow(clippy::unwrap_used)]

use ferrolab_fed::conformance;
use ferrolab_fed::inproc::InProcFabric;
use std::sync::Arc;

#[test]
fn inproc_passes_conformance() {
    conformance::run_all(&|| Arc::new(InProcFabric::new()));
}

#[test]
fn file_backed_inproc_passes_conformance() {
    let root = std::env::temp_dir().join(format!("fed-conf-{}", std::process::id()));
    let n = std::sync::atomic::AtomicUsize::new(0);
    conformance::run_all(&|| {
        let k = n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Arc::new(InProcFabric::with_dir(root.join(k.to_string())))
    });
    let _ = std::fs::remove_dir_all(&root);
}
