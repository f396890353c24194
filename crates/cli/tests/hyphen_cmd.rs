//! `ferrolab hcnn` (HyPHEN's client/server split, issue 21): keygen → encrypt → infer →
//! decrypt on a tiny HerPN ResNet-8 (width 4, 8×8 raster, N = 2^11, insecure test chain)
//! gives the plaintext network's logits; bad input — an evaluation-key bundle missing a
//! rotation, a checkpoint whose shapes do not match, a ciphertext under other parameters, an
//! image of the wrong size, a secret key handed to the server, corrupted files — is one
//! `error:` line and exit status 2.

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

mod common;

use common::{assert_usage_error, ferrolab, stderr, stdout, tmp};
use ferrolab_fhe::hyphen::hcnn;
use ferrolab_fhe::hyphen::net::Net;
use std::path::Path;
use std::process::Output;

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn keygen(dir: &Path, levels: &str) {
    let o = ferrolab(&[
        "hcnn",
        "keygen",
        "--out",
        &s(dir),
        "--params",
        "test",
        "--log-n",
        "11",
        "--levels",
        levels,
        "--side",
        "8",
        "--width",
        "4",
    ]);
    assert!(o.status.success(), "keygen: {}", stderr(&o));
}

fn png(path: &Path, side: usize, seed: u8) {
    let data = (0..side * side)
        .map(|i| (i as u8).wrapping_mul(37).wrapping_add(seed))
        .collect();
    let img = ferrolab_data::image::Image {
        width: side,
        height: side,
        channels: 1,
        data,
    };
    ferrolab_data::image::write_png(path, &img).unwrap();
}

fn tiny_net(width: usize) -> Net {
    Net::random_resnet(7, true, 10, 1, width)
}

fn encrypt(keys: &Path, image: &Path, out: &Path) -> Output {
    ferrolab(&[
        "hcnn",
        "encrypt",
        "--keys",
        &s(keys),
        &s(image),
        "--out",
        &s(out),
    ])
}

fn infer(keys: &Path, model: &Path, ct: &Path, out: &Path) -> Output {
    ferrolab(&[
        "hcnn",
        "infer",
        "--keys",
        &s(keys),
        "--model",
        &s(model),
        &s(ct),
        "--out",
        &s(out),
    ])
}

#[test]
fn client_server_round_trip_matches_plaintext_and_refuses_bad_input() {
    let d = tmp("hcnn");
    let keys = d.join("keys");
    keygen(&keys, "30");
    for f in [
        "secret.key",
        "public.key",
        "params.bin",
        "client.json",
        "eval.keys",
    ] {
        assert!(keys.join(f).exists(), "{f} missing");
    }
    let net = tiny_net(4);
    let model = d.join("model.json");
    hcnn::save_model(&model, &net).unwrap();
    let image = d.join("x.png");
    png(&image, 8, 3);
    let x = d.join("x.ct");
    let y = d.join("y.ct");
    let o = encrypt(&keys, &image, &x);
    assert!(o.status.success(), "encrypt: {}", stderr(&o));
    // `--out` never replaces a file: not the last ciphertext, not the secret key.
    for existing in [x.clone(), keys.join("secret.key")] {
        let before = std::fs::read(&existing).unwrap();
        let o = encrypt(&keys, &image, &existing);
        let e = assert_usage_error(&o, "an existing --out");
        assert!(e.contains("already exists"), "{e}");
        assert_eq!(std::fs::read(&existing).unwrap(), before);
    }
    // The server gets eval.keys only.
    let o = ferrolab(&[
        "hcnn",
        "infer",
        "--keys",
        &s(&keys.join("eval.keys")),
        "--model",
        &s(&model),
        &s(&x),
        "--out",
        &s(&y),
        "--threads",
        "1",
    ]);
    assert!(o.status.success(), "infer: {}", stderr(&o));
    let st: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert!(st["rotations"].as_u64().unwrap() > 0);
    let o = ferrolab(&["hcnn", "decrypt", "--keys", &s(&keys), &s(&y)]);
    assert!(o.status.success(), "decrypt: {}", stderr(&o));
    let out: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    let got: Vec<f64> = serde_json::from_value(out["logits"].clone()).unwrap();
    let want = net.reference(&hcnn::load_image(&image, 8).unwrap());
    assert_eq!(got.len(), want.len());
    for (a, b) in got.iter().zip(&want) {
        assert!(
            (a - b).abs() < 1e-3,
            "encrypted {got:?} vs plaintext {want:?}"
        );
    }

    // A secret key handed to the server.
    let o = infer(&keys.join("secret.key"), &model, &x, &d.join("z.ct"));
    assert!(assert_usage_error(&o, "secret key").contains("evaluation keys only"));

    // An evaluation-key bundle missing a rotation the network needs (odd amounts).
    // Any secret under the same parameters will do: the check runs before any work.
    let full = hcnn::ServerKeys::load(&keys).unwrap();
    let mut kg = ferrolab_fhe::KeyGenerator::new_seeded(&full.ctx, 9);
    let sk = hcnn::ServerKeys {
        ctx: full.ctx.clone(),
        keys: kg.evaluation_keys(&[2, 4, 8], false),
        shape: full.shape,
    };
    let short = d.join("short.keys");
    std::fs::write(&short, sk.to_bytes().unwrap()).unwrap();
    let o = infer(&short, &model, &x, &d.join("z.ct"));
    assert!(assert_usage_error(&o, "missing rotation").contains("rotation by"));

    // A checkpoint whose shapes do not match the keys / input (width 8 vs 4).
    let wide = d.join("wide.json");
    hcnn::save_model(&wide, &tiny_net(8)).unwrap();
    let o = infer(&keys, &wide, &x, &d.join("z.ct"));
    assert!(assert_usage_error(&o, "wide model").contains("width 4"));
    // An edited checkpoint.
    let text = std::fs::read_to_string(&model)
        .unwrap()
        .replacen("0.", "1.", 1);
    let edited = d.join("edited.json");
    std::fs::write(&edited, text).unwrap();
    let o = infer(&keys, &edited, &x, &d.join("z.ct"));
    assert_usage_error(&o, "edited model");
    // Checkpoints of other architectures: a ReLU network, a ResNet whose depth is not three
    // equal stages, a truncated file.
    let relu = d.join("relu.json");
    hcnn::save_model(&relu, &Net::random_resnet(7, false, 10, 1, 4)).unwrap();
    let o = infer(&keys, &relu, &x, &d.join("z.ct"));
    assert!(assert_usage_error(&o, "relu model").contains("HerPN"));
    let mut short_net = tiny_net(4);
    short_net.blocks.pop();
    let odd = d.join("odd.json");
    hcnn::save_model(&odd, &short_net).unwrap();
    let o = infer(&keys, &odd, &x, &d.join("z.ct"));
    assert!(assert_usage_error(&o, "2-block model").contains("3 stages"));
    let text = std::fs::read(&model).unwrap();
    let cut_model = d.join("cut_model.json");
    std::fs::write(&cut_model, &text[..text.len() / 3]).unwrap();
    let o = infer(&keys, &cut_model, &x, &d.join("z.ct"));
    assert!(assert_usage_error(&o, "truncated model").contains("not an hcnn model checkpoint"));

    // A ciphertext encrypted under other parameters.
    let other = d.join("other");
    keygen(&other, "31");
    let x2 = d.join("x2.ct");
    let o = encrypt(&other, &image, &x2);
    assert!(o.status.success(), "encrypt: {}", stderr(&o));
    let o = infer(&keys, &model, &x2, &d.join("z.ct"));
    assert!(assert_usage_error(&o, "other params").contains("different `hcnn keygen` runs"));
    // The other way round: evaluation keys of another key set.
    let o = infer(&other.join("eval.keys"), &model, &x, &d.join("z.ct"));
    assert!(assert_usage_error(&o, "other keys").contains("different `hcnn keygen` runs"));

    // A ciphertext with too few levels for the network (a leveled chain of 6).
    let shallow = d.join("shallow");
    keygen(&shallow, "6");
    let x3 = d.join("x3.ct");
    let o = encrypt(&shallow, &image, &x3);
    assert!(o.status.success(), "encrypt: {}", stderr(&o));
    let o = infer(&shallow, &model, &x3, &d.join("z.ct"));
    assert!(assert_usage_error(&o, "shallow chain").contains("has 6 levels, this network needs"));

    // A truncated ciphertext file.
    let bytes = std::fs::read(&x).unwrap();
    let cut = d.join("cut.ct");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let o = infer(&keys, &model, &cut, &d.join("z.ct"));
    assert!(assert_usage_error(&o, "truncated").contains("truncated"));
    // A truncated evaluation-key bundle.
    let bytes = std::fs::read(keys.join("eval.keys")).unwrap();
    let cut_keys = d.join("cut.keys");
    std::fs::write(&cut_keys, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let o = infer(&cut_keys, &model, &x, &d.join("z.ct"));
    assert!(assert_usage_error(&o, "truncated keys").contains("evaluation-key bundle"));
    // Decrypting an input (not an inference output).
    let o = ferrolab(&["hcnn", "decrypt", "--keys", &s(&keys), &s(&x)]);
    assert_usage_error(&o, "decrypt input");

    // An image of the wrong size.
    let small = d.join("small.png");
    png(&small, 10, 1);
    let o = encrypt(&keys, &small, &d.join("w.ct"));
    assert!(assert_usage_error(&o, "wrong size").contains("10x10"));

    // keygen never overwrites a secret key.
    let o = ferrolab(&["hcnn", "keygen", "--out", &s(&keys), "--params", "test"]);
    assert_usage_error(&o, "overwrite");
}

#[test]
fn hcnn_is_also_a_hyphen_subcommand() {
    let o = ferrolab(&[
        "hyphen",
        "hcnn",
        "decrypt",
        "--keys",
        "/nonexistent-ferrolab-keys",
        "y.ct",
    ]);
    assert_usage_error(&o, "missing key folder");
}

/// `hcnn bench` through the binary at the small insecure set: every option reaches the
/// function (side, width, blocks, images), the report has the contract keys, and a second run
/// into the same folder is one `error:` line, exit 2, the report untouched.
#[test]
fn bench_writes_a_report_and_never_overwrites_it() {
    let d = tmp("hcnn-bench");
    let dir = d.join("out");
    let args = [
        "hcnn",
        "bench",
        "--params",
        "test",
        "--log-n",
        "11",
        "--levels",
        "30",
        "--side",
        "8",
        "--width",
        "4",
        "--blocks",
        "1",
        "--images",
        "2",
        "--threads",
        "1",
        "--out",
        &s(&dir),
    ];
    let o = ferrolab(&args);
    assert!(o.status.success(), "bench: {}", stderr(&o));
    assert!(stdout(&o).contains("latency_seconds_resnet8_t1"));
    let text = std::fs::read_to_string(dir.join("report.json")).unwrap();
    let r: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(r["metrics"]["agreement_top1_encrypted"], 1.0);
    assert_eq!(r["config"]["images"], 2);
    assert_eq!(r["config"]["side"], 8);
    assert_eq!(r["config"]["width"], 4);
    assert!(r["metrics"]["max_logit_error"].as_f64().unwrap() < 1e-3);
    let o = ferrolab(&args);
    assert_usage_error(&o, "already exists");
    assert_eq!(
        std::fs::read_to_string(dir.join("report.json")).unwrap(),
        text
    );
    // A chain too short for the network (found by the server after key generation): exit 2
    // naming the setting that fits, and neither the scratch files nor the new folder left.
    let short = d.join("short");
    let mut a: Vec<String> = args.iter().map(|x| x.to_string()).collect();
    let at = a.iter().position(|x| x == "--levels").unwrap() + 1;
    a[at] = "12".into();
    let last = a.len() - 1;
    a[last] = s(&short);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let o = ferrolab(&a);
    let e = assert_usage_error(&o, "a chain too short");
    assert!(e.contains("(hcnn bench --levels "), "{e}");
    assert!(!short.exists(), "{e}");
}

/// `fhe.encrypted_images_t2` re-runs images on a two-thread pool beside a one-thread run: a
/// run that is itself at two threads is refused before any work (exit 2, no run folder).
#[test]
fn two_thread_rerun_needs_a_one_thread_run() {
    let root = tmp("hyphen-t2");
    // Only the runner's availability check reads this folder: the refusal comes first.
    let fm = root.join("fashion-mnist");
    std::fs::create_dir_all(&fm).unwrap();
    for f in [
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ] {
        std::fs::write(fm.join(f), [0u8, 0, 8, 1, 0, 0, 0, 0]).unwrap();
    }
    let out = root.join("run");
    let o = ferrolab(&[
        "hyphen",
        "--preset",
        "quick",
        "--threads",
        "2",
        "--set",
        "fhe.encrypted_images_t2=1",
        "--data-dir",
        &s(&root),
        "--out",
        &s(&out),
    ]);
    assert_usage_error(&o, "fhe.encrypted_images_t2");
    assert_usage_error(&o, "--threads 1");
    assert!(!out.exists());
    assert!(!root.join("run.incomplete").exists());
}

/// `ferrolab hyphen` at one thread with `fhe.encrypted_images_t2 = 1`, shrunk to seconds
/// (ResNet-8 width 4, N = 2^12, insecure, flagged): the report carries both `_t1` and `_t2`
/// latencies and CPU times, and the two-thread run's logits equal the one-thread run's to
/// encryption noise.
#[test]
#[ignore = "needs the real Fashion-MNIST (apt-get install dataset-fashion-mnist, or ferrolab data fetch fashion-mnist)"]
fn one_thread_run_also_reports_two_thread_latency() {
    let d = tmp("hyphen-t2-run");
    let out = d.join("run");
    let o = ferrolab(&[
        "hyphen",
        "--preset",
        "quick",
        "--threads",
        "1",
        "--set",
        "fhe.encrypted_images_t2=1",
        "--set",
        "model.width=4",
        "--set",
        "fhe.log_n=12",
        "--set",
        "data.train_limit=300",
        "--set",
        "data.test_limit=100",
        "--set",
        "fhe.sim_images=1",
        "--out",
        &s(&out),
    ]);
    assert!(o.status.success(), "hyphen: {}", stderr(&o));
    let text = std::fs::read_to_string(out.join("report.json")).unwrap();
    let r: serde_json::Value = serde_json::from_str(&text).unwrap();
    let m = &r["metrics"];
    for k in [
        "latency_seconds_resnet8_t1",
        "latency_seconds_resnet8_t2",
        "cpu_seconds_resnet8_t1",
        "cpu_seconds_resnet8_t2",
    ] {
        assert!(m[k].as_f64().is_some_and(|v| v > 0.0), "{k}: {}", m[k]);
    }
    // The simulator predicts the encrypted computation of the same image.
    let vs_sim = m["max_logit_error_vs_sim"].as_f64().unwrap();
    assert!(vs_sim < 1e-2, "{vs_sim}");
    assert_eq!(m["agreement_top1_encrypted_vs_sim"], 1.0);
    let t2 = &r["details"]["hyphen"]["encrypted_t2"];
    assert_eq!(t2["seconds_per_image"].as_array().map(Vec::len), Some(1));
    let diff = t2["max_logit_difference_to_t1"].as_f64().unwrap();
    assert!(diff < 1e-3, "{diff}");
    assert!(text.contains("two threads"));
}
