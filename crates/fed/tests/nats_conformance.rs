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

/// Every party of a run sets up the same streams; started together (as a user's client
/// processes are) they race to create them. A 2.9 server answers the losers with "subjects
/// overlap" or a store error; every party must still end up bound to the one set of streams.
#[test]
#[ignore = "needs nats-server: FERROLAB_NATS_URL (.ci/run starts one)"]
fn parties_setting_up_one_run_at_the_same_moment_all_connect() {
    let url = nats_util::nats_url();
    for round in 0..200 {
        let prefix = nats_util::fresh_prefix("race");
        let start = Arc::new(std::sync::Barrier::new(12));
        let parties: Vec<_> = (0..12)
            .map(|k| {
                let (url, prefix, start) = (url.clone(), prefix.clone(), Arc::clone(&start));
                std::thread::spawn(move || {
                    let party = if k == 0 {
                        Party::Server
                    } else {
                        Party::Client(k - 1)
                    };
                    start.wait();
                    ferrolab_fed::nats::NatsFabric::connect(nats_util::opts(&url, &prefix, party))
                        .map_err(|e| e.to_string())
                })
            })
            .collect();
        let mut server = None;
        for (k, p) in parties.into_iter().enumerate() {
            match p.join().expect("party thread") {
                Ok(f) if k == 0 => server = Some(f),
                Ok(_) => {}
                Err(e) => panic!("round {round}, party {k}: {e}"),
            }
        }
        let server = server.expect("server party");
        // One set of streams, not one per party: the run's 4 plus no buckets yet.
        assert_eq!(server.run_streams(&prefix).expect("list").len(), 4);
        server.end_run().expect("end run");
    }
}
