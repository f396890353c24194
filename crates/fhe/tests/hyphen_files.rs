//! `hcnn`'s files under hostile edits (small insecure parameters, N = 2^11): the key bundle
//! and ciphertext readers give a typed error naming the problem — and refuse a file whose
//! parameters announce more data than it holds before building those parameters — and a
//! bundle that loads is a fixpoint of save/load. The `ferrolab hyphen --preset quick`
//! configuration stays small enough for its ≤ 60 s budget.
#![allow(clippy::unwrap_used)]

use ferrolab_core::System;
use ferrolab_fhe::hyphen::hcnn::{self, ClientKeys, ServerKeys, Shape};
use ferrolab_fhe::hyphen::layout::Map;
use ferrolab_fhe::hyphen::system::HyphenSystem;
use ferrolab_fhe::{Context, Encryptor, KeyGenerator, serial};
use std::path::Path;
use std::sync::Arc;

const SHAPE: Shape = Shape {
    side: 8,
    width: 4,
    boot_levels: None,
};

fn ctx() -> Arc<Context> {
    Context::new(hcnn::test_spec(11, 2)).unwrap()
}

fn bundle(ctx: &Arc<Context>) -> Vec<u8> {
    let mut kg = KeyGenerator::new_seeded(ctx, 1);
    ServerKeys {
        ctx: ctx.clone(),
        keys: kg.evaluation_keys(&[1, 2], false),
        shape: SHAPE,
    }
    .to_bytes()
    .unwrap()
}

fn err(r: Result<ServerKeys, ferrolab_core::SystemError>) -> String {
    match r {
        Ok(_) => panic!("an edited bundle loaded"),
        Err(e) => e.to_string(),
    }
}

/// Edits section `i`'s framed payload at `at` and re-seals both frames.
fn edit(bytes: &[u8], i: usize, at: usize, value: &[u8]) -> Vec<u8> {
    let mut secs = hcnn::file_sections(bytes).unwrap();
    let o = serial::FRAME_HEADER_BYTES + at;
    secs[i][o..o + value.len()].copy_from_slice(value);
    serial::reseal(&mut secs[i]);
    hcnn::file_from_sections(bytes, &secs)
}

#[test]
fn key_bundle_round_trips_and_refuses_edits() {
    let ctx = ctx();
    let b = bundle(&ctx);
    let p = Path::new("eval.keys");
    let k = ServerKeys::from_bytes(&b, p).unwrap();
    assert_eq!(k.to_bytes().unwrap(), b);
    assert_eq!(k.shape, SHAPE);

    // Parameters announcing N = 2^16 over the same primes: refused by size, before the
    // N = 2^16 context is built.
    let e = err(ServerKeys::from_bytes(
        &edit(&b, 1, 0, &16u32.to_le_bytes()),
        p,
    ));
    assert!(e.contains("needs") && e.contains("N = 2^16"), "{e}");
    // A changed prime size: a different context, whose fingerprint is not the file's.
    let e = err(ServerKeys::from_bytes(
        &edit(&b, 1, 13, &50u32.to_le_bytes()),
        p,
    ));
    assert!(e.contains("fingerprint"), "{e}");
    // A key with a wrong digit count (flag byte, then the relinearisation key's digits).
    let e = err(ServerKeys::from_bytes(
        &edit(&b, 2, 1, &7u32.to_le_bytes()),
        p,
    ));
    assert!(e.contains("digits"), "{e}");
    // An even Galois element.
    let secs = hcnn::file_sections(&b).unwrap();
    let poly = ctx.tables.len() * ctx.n * 8;
    let swk = 4 + ctx.dnum * (poly + 32);
    let e = err(ServerKeys::from_bytes(
        &edit(&b, 2, 1 + swk + 4, &4u64.to_le_bytes()),
        p,
    ));
    assert!(e.contains("Galois element 4"), "{e}");
    // A shape the ring cannot hold, and a raster side of 0.
    for (h, want) in [
        (r#"{"side":8,"width":64,"boot_levels":null}"#, "blocks"),
        (
            r#"{"side":0,"width":4,"boot_levels":null}"#,
            "raster side 0",
        ),
        (
            r#"{"side":8,"width":4,"boot_levels":3}"#,
            "bootstrapping chain",
        ),
    ] {
        let mut s = secs.clone();
        s[0] = h.as_bytes().to_vec();
        let e = err(ServerKeys::from_bytes(&hcnn::file_from_sections(&b, &s), p));
        assert!(e.contains(want), "{h}: {e}");
    }
    // A key section cut short, re-framed so that only the inner reader can notice.
    let mut s = secs.clone();
    let n = s[2].len();
    s[2].truncate(n - 1000);
    let e = err(ServerKeys::from_bytes(&hcnn::file_from_sections(&b, &s), p));
    assert!(e.contains("compressed evaluation keys"), "{e}");
    // Relinearisation key missing.
    let mut kg = KeyGenerator::new_seeded(&ctx, 1);
    let mut keys = kg.evaluation_keys(&[1], false);
    keys.relin = None;
    let nr = ServerKeys {
        ctx: ctx.clone(),
        keys,
        shape: SHAPE,
    }
    .to_bytes()
    .unwrap();
    let e = err(ServerKeys::from_bytes(&nr, p));
    assert!(e.contains("no relinearisation key"), "{e}");
}

#[test]
fn ciphertext_files_are_checked_before_any_work() {
    let ctx = ctx();
    let mut kg = KeyGenerator::new_seeded(&ctx, 2);
    let keys = ClientKeys {
        ctx: ctx.clone(),
        sk: kg.secret_key().clone(),
        pk: kg.public_key(),
        shape: SHAPE,
    };
    let mut enc = Encryptor::new_seeded(&ctx, 3);
    let x = Map::zeros(3, 8);
    let b = hcnn::encrypt_with(&keys, &x, &mut enc).unwrap();
    let dir = std::env::temp_dir().join(format!("ferrolab-hyphen-files-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let check = |bytes: &[u8]| -> Result<(), String> {
        let path = dir.join("x.ct");
        std::fs::write(&path, bytes).unwrap();
        let (h, cts) = hcnn::read_cts(&ctx, &path).map_err(|e| e.to_string())?;
        hcnn::check_input(&ctx, SHAPE, &h, &cts, &path).map_err(|e| e.to_string())
    };
    check(&b).unwrap();
    let secs = hcnn::file_sections(&b).unwrap();
    assert!(secs.len() >= 2);
    // One ciphertext too many.
    let mut s = secs.clone();
    s.push(secs[1].clone());
    let e = check(&hcnn::file_from_sections(&b, &s)).unwrap_err();
    assert!(e.contains("ciphertexts, a 8x8 / width 4 input has"), "{e}");
    // A level above the chain, a scale that is not the level's, three parts.
    for (at, v, want) in [
        (0, 9u32.to_le_bytes().to_vec(), "above the top level"),
        (4, 1.5f64.to_bits().to_le_bytes().to_vec(), "scale"),
        (12, 3u32.to_le_bytes().to_vec(), "truncated"),
    ] {
        let e = check(&edit(&b, 1, at, &v)).unwrap_err();
        assert!(e.contains(want), "{want}: {e}");
    }
    // Encrypted for another shape than the keys'.
    let mut s = secs.clone();
    let h = String::from_utf8(s[0].clone()).unwrap();
    s[0] = h.replace("\"width\":4", "\"width\":2").into_bytes();
    let e = check(&hcnn::file_from_sections(&b, &s)).unwrap_err();
    assert!(e.contains("width 2, the keys are for"), "{e}");
    // Truncated anywhere: the outer checksum.
    let e = check(&b[..b.len() - 100]).unwrap_err();
    assert!(e.contains("truncated"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

/// The quick preset (the `reproduce hyphen-resnet20` quick entry, ≤ 60 s on two threads)
/// must stay small: a one-block-per-stage ResNet at 16 × 16, a short training run, a handful
/// of simulated images and one encrypted image at N ≤ 2^13 without bootstrapping, under
/// 3 GiB by the system's own memory estimate.
#[test]
fn quick_preset_stays_small() {
    let sys = HyphenSystem;
    let cfg = ferrolab_core::system::resolve_config(&sys, Some("quick"), None, &[]).unwrap();
    let c = cfg.get();
    assert_eq!(c.model.blocks_per_stage, 1);
    assert_eq!(c.data.side, 16);
    assert!(c.data.train_limit > 0 && c.data.train_limit <= 3000);
    assert!(c.data.test_limit > 0 && c.data.test_limit <= 1000);
    assert!(c.model.epochs <= 2);
    assert!(c.fhe.log_n <= 13);
    assert!(!c.fhe.bootstrapping);
    assert!(c.fhe.sim_images >= 10 && c.fhe.sim_images <= 20);
    assert_eq!(c.fhe.encrypted_images, 1);
    assert!(!c.fhe.encrypted_baseline);
    assert_eq!(c.fhe.encrypted_mpconv_images, 0);
    let est = sys.memory_estimate(c, None).unwrap();
    assert!(est.bytes < 3 << 30, "{} bytes", est.bytes);
    let quick = sys
        .entries()
        .into_iter()
        .find(|e| e.name == "hyphen-resnet20");
    assert_eq!(quick.map(|e| e.quick), Some("quick"));
}

/// MPConv as published needs its own 16-level key set at N = 2^16 (~12 GB): the resource
/// guard must see it before any work, and only when it is asked for.
#[test]
fn mpconv_encrypted_run_is_in_the_memory_estimate() {
    let sys = HyphenSystem;
    let est = |sets: &[&str]| {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        let cfg =
            ferrolab_core::system::resolve_config(&sys, Some("secure20"), None, &sets).unwrap();
        sys.memory_estimate(cfg.get(), None).unwrap().bytes
    };
    let without = est(&["fhe.encrypted_images=0"]);
    let with = est(&["fhe.encrypted_images=0", "fhe.encrypted_mpconv_images=1"]);
    assert!(with >= 12 << 30, "{with} bytes");
    assert!(without < 2 << 30, "{without} bytes");
    // The two-thread pass's per-thread buffers (15.1 GB measured against 13.7 GB without).
    let with_t2 = est(&[
        "fhe.encrypted_images=0",
        "fhe.encrypted_mpconv_images=1",
        "fhe.encrypted_images_t2=1",
    ]);
    assert!(with_t2 >= with + (1 << 30), "{with_t2} vs {with} bytes");
    assert_eq!(
        est(&["fhe.encrypted_images=0", "fhe.encrypted_images_t2=1"]),
        without,
        "no encrypted image, no second pass"
    );
    // Below log N = 13 there is no bootstrapping set: refused as a configuration error.
    let sets: Vec<String> = [
        "fhe.log_n=12",
        "fhe.encrypted_mpconv_images=1",
        "data.side=16",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let e = ferrolab_core::system::resolve_config(&sys, Some("quick"), None, &sets)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("fhe.encrypted_mpconv_images"), "{e}");
    // So is an encrypted leg whose bootstrapping set does not exist (it is chosen only after
    // training): N = 2^16 with other than 9 or 16 levels left, or log N below 13.
    for (preset, sets, key) in [
        (
            "paper",
            &["fhe.encrypted_boot_levels=12"][..],
            "fhe.encrypted_boot_levels",
        ),
        (
            "quick",
            &[
                "fhe.log_n=12",
                "fhe.bootstrapping=true",
                "fhe.encrypted_images=1",
                "data.side=16",
            ][..],
            "fhe.log_n",
        ),
    ] {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        let e = ferrolab_core::system::resolve_config(&sys, Some(preset), None, &sets)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains(key) && e.contains("bootstrapping set"), "{e}");
    }
    for ok in [
        "fhe.encrypted_boot_levels=9",
        "fhe.encrypted_boot_levels=16",
    ] {
        let sets = vec![ok.to_string()];
        assert!(ferrolab_core::system::resolve_config(&sys, Some("paper"), None, &sets).is_ok());
    }
}

/// `hcnn bench` at small insecure parameters: keygen, encrypt, infer (evaluation keys only)
/// and decrypt in one process; the report has the issue's keys, the decrypted logits match
/// the plaintext network, and a second run into the same folder is refused before any work.
#[test]
fn bench_runs_all_four_legs_and_never_overwrites_its_report() {
    let dir = std::env::temp_dir().join(format!("ferrolab-hcnn-bench-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    let o = bench_options(&dir, 11, 30, 8, 4, 2);
    let r = hcnn::bench(&o).unwrap();
    let m = &r.metrics;
    assert_eq!(m["agreement_top1_encrypted"], 1.0);
    assert!(m["max_logit_error"] < 1e-3, "{}", m["max_logit_error"]);
    assert!(m["latency_seconds_resnet8_t1"] > 0.0);
    assert!(m["rotations_total"] > 0.0 && m["eval_key_mb"] > 0.0);
    assert_eq!(r.details["per_image"].as_array().map(Vec::len), Some(2));
    let text = std::fs::read_to_string(dir.join("report.json")).unwrap();
    assert!(text.contains("latency_seconds_resnet8_t1"));
    // No ciphertext is left behind; the report stays as it was.
    assert!(!dir.join(".hcnn-bench").exists());
    let e = hcnn::bench(&o).unwrap_err().to_string();
    assert!(e.contains("already exists"), "{e}");
    assert_eq!(
        std::fs::read_to_string(dir.join("report.json")).unwrap(),
        text
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// A key set that cannot fit is refused by the resource guard before any key is made or any
/// folder written; the secure set's estimate covers its measured 8.6 GB peak.
#[test]
fn bench_refuses_a_key_set_that_cannot_fit() {
    let secure = hcnn::KeygenOptions {
        secure: true,
        log_n: 16,
        levels: 30,
        side: 32,
        width: 16,
        max_memory: None,
    };
    assert!(hcnn::keygen_memory(&secure).bytes >= 8_600 << 20);
    let dir = std::env::temp_dir().join(format!("ferrolab-hcnn-huge-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    let o = bench_options(&dir, 16, 200, 32, 16, 1);
    // ~350 GB of keys.
    let e = hcnn::bench(&o).unwrap_err().to_string();
    assert!(e.contains("needs ~") && e.contains("--levels 200"), "{e}");
    assert!(!dir.exists());
    // The limit the refusal names can be set: a small test chain under a 1 KiB limit.
    let mut o = bench_options(&dir, 11, 30, 8, 4, 1);
    o.keygen.max_memory = Some(1024);
    let e = hcnn::bench(&o).unwrap_err().to_string();
    assert!(e.contains("needs ~") && e.contains("limit 1 KiB"), "{e}");
    assert!(!dir.exists());
}

/// `hcnn bench` on a random one-block-per-stage network at a leveled test chain.
fn bench_options(
    dir: &Path,
    log_n: u32,
    levels: usize,
    side: usize,
    width: usize,
    images: usize,
) -> hcnn::BenchOptions {
    hcnn::BenchOptions {
        keygen: hcnn::KeygenOptions {
            secure: false,
            log_n,
            levels,
            side,
            width,
            max_memory: None,
        },
        out: dir.to_path_buf(),
        model: None,
        blocks: 1,
        image_files: vec![],
        images,
        seed: 3,
        threads: 1,
    }
}
