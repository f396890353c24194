//! The fabric conformance suite against a real `nats-server` (`$FERROLAB_NATS_URL`): the same
//! checks the in-process fabric passes, each on a fresh run prefix.

#![cfg(feature = "nats")]

mod nats_util;

use ferrolab_fed::conformance;
use ferrolab_fed::fabric::Fabric;
use ferrolab_fed::nats::Party;
use std::sync::Arc;

#[test]
#[ignore = "needs nats-server: FERROLAB_NATS_URL (.ci/run starts one)"]
fn nats_fabric_passes_the_conformance_suite() {
    let url = nats_util::nats_url();
    conformance::run_all(&|| {
        let f: Arc<dyn Fabric> = Arc::new(nats_util::connect(
            &url,
            &nats_util::fresh_prefix("conf"),
            Party::Server,
        ));
        f
    });
}
