//! The precision targets at the standard N = 2^14 parameters (scale 2^40, 128-bit
//! secure): measured, then checked.
#![allow(clippy::unwrap_used)]
use ferrolab_fhe::{ParamSpec, bench};

#[test]
fn n14_precision_targets() {
    let r = bench::run(ParamSpec::n14(), 1, 1).unwrap();
    let get = |op: &str| r.ops.iter().find(|o| o.op == op).unwrap().clone();
    for o in &r.ops {
        println!(
            "{:<22} {:>9.3} ms  worst {:>6.2} bits  mean {:>6.2} bits",
            o.op,
            o.ms.unwrap_or(f64::NAN),
            o.precision_bits.unwrap_or(f64::NAN),
            o.precision_bits_mean.unwrap_or(f64::NAN)
        );
    }
    let mul = get("mul_relin_rescale").precision_bits.unwrap();
    assert!(mul >= 25.0, "mul_relin_rescale precision {mul} bits < 25");
    let d8 = get("depth8").precision_bits.unwrap();
    assert!(d8 >= 20.0, "depth-8 precision {d8} bits < 20");
    let relu = get("poly_relu15").precision_bits.unwrap();
    assert!(
        relu >= (1e4f64).log2(),
        "poly ReLU error 2^-{relu} above 1e-4"
    );
    // A rotation keeps the input's encryption noise (fresh: ~25.7 bits worst slot) and adds
    // little key-switching noise (q_0 < P).
    let enc = get("encrypt").precision_bits.unwrap();
    let rot = get("hoisted_rotate16").precision_bits.unwrap();
    assert!(rot >= enc - 1.5, "rotation lost {} bits", enc - rot);
}

#[test]
fn bench_reports_every_operation_the_cli_names() {
    let r = bench::run(ParamSpec::insecure_test(10, 8), 1, 3).unwrap();
    let names: Vec<&str> = r.ops.iter().map(|o| o.op.as_str()).collect();
    for op in [
        "encode",
        "encrypt",
        "decrypt",
        "add",
        "mul_relin",
        "rescale",
        "mul_relin_rescale",
        "rotate",
        "hoisted_rotate16",
        "sequential_rotate16",
        "conjugate",
        "depth8",
        "poly_relu15",
    ] {
        assert!(names.contains(&op), "{op} missing from {names:?}");
    }
    for o in &r.ops {
        if let Some(b) = o.precision_bits {
            assert!(b.is_finite() && b > 15.0, "{}: {b}", o.op);
        }
    }
}
