//! Bad input is refused before any work, with one line naming the key: an unknown algorithm,
//! more subnets than devices, s larger than a subnet, a disconnected D2D graph, the NATS
//! runtime without its wiring.

#![allow(clippy::unwrap_used)]

use ferrolab_core::Checked;
use ferrolab_fed::sdgt::config::SdgtConfig;
use ferrolab_fed::sdgt::experiment;

fn synthetic() -> SdgtConfig {
    let mut c = SdgtConfig::default();
    c.data.dataset = "synthetic".into();
    c.data.synthetic_train = 600;
    c.data.val_size = 100;
    c.fed.seeds = 1;
    c
}

#[test]
fn bad_inputs_name_their_key() {
    let mut c = synthetic();
    c.fed.algorithms = vec!["sdgt".into(), "fedprox".into()];
    let e = Checked::new(c).unwrap_err().to_string();
    assert!(e.contains("fed.algorithms"), "{e}");

    let mut c = synthetic();
    c.topology.subnets = 41;
    let e = Checked::new(c).unwrap_err().to_string();
    assert!(
        e.contains("topology.subnets") && e.contains("more subnets than devices"),
        "{e}"
    );

    let mut c = synthetic();
    c.fed.s = 5;
    let e = Checked::new(c).unwrap_err().to_string();
    assert!(
        e.contains("fed.s") && e.contains("larger than a subnet"),
        "{e}"
    );

    let mut c = synthetic();
    c.topology.radius = 1e-6;
    let c = Checked::new(c).unwrap();
    let e = experiment::prepare(c.get(), None, 1).unwrap_err();
    assert_eq!(e.class(), ferrolab_core::system::ErrorClass::Usage);
    assert!(e.to_string().contains("disconnected"), "{e}");

    // FedAvg and SCAFFOLD do not use D2D: a disconnected graph does not concern them.
    let mut c = synthetic();
    c.topology.radius = 1e-6;
    c.fed.algorithms = vec!["scaffold".into(), "fedavg".into()];
    experiment::prepare(Checked::new(c).unwrap().get(), None, 1).unwrap();

    let mut c = synthetic();
    c.fed.runtime = "nats".into();
    // A port nothing listens on: a usage error with or without the `nats` feature, whatever
    // $FERROLAB_NATS_URL says (CI sets it).
    c.fed.nats_url = "nats://127.0.0.1:1".into();
    let e = experiment::prepare(Checked::new(c).unwrap().get(), None, 1).unwrap_err();
    assert_eq!(e.class(), ferrolab_core::system::ErrorClass::Usage);
    assert!(e.to_string().contains("nats"), "{e}");

    // Values a run cannot use are refused up front: a deadline past a day (1e308 s overflowed
    // the clock), step sizes whose 1/(Tγ) overflows, a grid point given twice.
    for (key, edit) in [
        (
            "fed.deadline_seconds",
            (|c: &mut SdgtConfig| c.fed.deadline_seconds = 1e308) as fn(&mut SdgtConfig),
        ),
        ("fed.deadline_seconds", |c| {
            c.fed.deadline_seconds = 86_401.0
        }),
        ("fed.lr_grid", |c| c.fed.lr_grid = vec![1e-200]),
        ("fed.lr_grid", |c| c.fed.lr_grid = vec![0.01, 0.01]),
        // 1e308 once overflowed the co-optimisation's cost to NaN in report.json.
        ("cost.delta", |c| c.cost.delta = 1e308),
    ] {
        let mut c = synthetic();
        edit(&mut c);
        let e = Checked::new(c).unwrap_err().to_string();
        assert!(e.contains(key), "{key}: {e}");
    }
    let mut c = synthetic();
    c.fed.deadline_seconds = 86_400.0;
    Checked::new(c).unwrap();

    let c = Checked::new(synthetic()).unwrap();
    experiment::prepare(c.get(), None, 1).unwrap();
    assert_eq!(
        c.get().s(),
        2,
        "s = 0 resolves to half of a 4-device subnet"
    );
}
