//! The in-process fabric passes the fabric conformance suite.

#![allow(clippy::unwrap_used)]

use ferrolab_fed::conformance;
use ferrolab_fed::inproc::InProcFabric;
use std::sync::Arc;

#[test]
fn inproc_passes_conformance() {
    conformance::run_all(&|| Arc::new(InProcFabric::new()));
}
