//! Serialisation: round trips, the client/server split, and bad files.
#![allow(clippy::unwrap_used)]
mod common;
use common::*;
use ferrolab_fhe::serial::{from_bytes, params_from_bytes, params_to_bytes, to_bytes};
use ferrolab_fhe::*;

#[test]
fn client_server_round_trip_through_bytes() {
    // Client: parameters, keys, encryption.
    let mut client = setup(ParamSpec::insecure_test(10, 3), &[1, 2], 21);
    let slots = client.ctx.slots();
    let x = random_real(slots, 22);
    let y = random_real(slots, 23);
    let params = params_to_bytes(&client.ctx);
    let evk = to_bytes(&client.ctx, client.ev.keys());
    let (ex, ey) = (client.encrypt(&x, 3), client.encrypt(&y, 3));
    let cx = to_bytes(&client.ctx, &ex);
    let cy = to_bytes(&client.ctx, &ey);
    // Server: rebuilds the context from bytes, holds only evaluation keys.
    let sctx = params_from_bytes(&params).unwrap();
    assert_eq!(sctx.hash, client.ctx.hash);
    let keys: EvaluationKeys = from_bytes(&sctx, &evk).unwrap();
    assert_eq!(&keys, client.ev.keys());
    let ev = Evaluator::new(&sctx, keys).unwrap();
    let a: Ciphertext = from_bytes(&sctx, &cx).unwrap();
    let b: Ciphertext = from_bytes(&sctx, &cy).unwrap();
    let r = ev
        .rotate(&ev.mul_relin_rescale(&a, &b).unwrap(), 2)
        .unwrap();
    let out = to_bytes(&sctx, &r);
    // Client decrypts.
    let r: Ciphertext = from_bytes(&client.ctx, &out).unwrap();
    let want: Vec<C64> = (0..slots)
        .map(|j| x[(j + 2) % slots] * y[(j + 2) % slots])
        .collect();
    assert!(max_err(&client.decrypt(&r), &want) < 1e-6);
    // Every other object round-trips exactly.
    let sk = client.kg.secret_key().clone();
    assert_eq!(
        from_bytes::<SecretKey>(&client.ctx, &to_bytes(&client.ctx, &sk)).unwrap(),
        sk
    );
    let pk = client.pk.clone();
    assert_eq!(
        from_bytes::<PublicKey>(&client.ctx, &to_bytes(&client.ctx, &pk)).unwrap(),
        pk
    );
    let pt = client.ctx.encode(&x, 2, 1e12).unwrap();
    assert_eq!(
        from_bytes::<Plaintext>(&client.ctx, &to_bytes(&client.ctx, &pt)).unwrap(),
        pt
    );
}

#[test]
fn truncated_tampered_and_mismatched_files_are_refused() {
    let mut s = setup(ParamSpec::insecure_test(10, 2), &[1], 31);
    let x = random_real(8, 32);
    let ct = s.encrypt(&x, 2);
    let bytes = to_bytes(&s.ctx, &ct);
    let decode_err = |r: Result<Ciphertext>| matches!(r, Err(FheError::Decode { .. }));
    // truncated anywhere
    for cut in [0, 5, 20, 40, bytes.len() / 2, bytes.len() - 1] {
        assert!(decode_err(from_bytes(&s.ctx, &bytes[..cut])), "cut {cut}");
    }
    // one flipped bit anywhere
    for pos in [0, 7, 8, 12, 30, bytes.len() / 3, bytes.len() - 3] {
        let mut b = bytes.clone();
        b[pos] ^= 0x10;
        let r: Result<Ciphertext> = from_bytes(&s.ctx, &b);
        assert!(r.is_err(), "flip at {pos} accepted");
    }
    // wrong kind
    assert!(matches!(
        from_bytes::<PublicKey>(&s.ctx, &bytes),
        Err(FheError::Decode { .. })
    ));
    // other parameters
    let other = Context::new(ParamSpec::insecure_test(10, 3)).unwrap();
    assert!(matches!(
        from_bytes::<Ciphertext>(&other, &bytes),
        Err(FheError::ParamsMismatch(_))
    ));
    // an insecure parameter file needs the opt-in it was written with: flipping the flag
    // changes the checksum, so it is refused as corrupted.
    let p = params_to_bytes(&s.ctx);
    assert!(params_from_bytes(&p).is_ok());
    let mut q = p.clone();
    q[25 + 8] ^= 1;
    assert!(params_from_bytes(&q).is_err());
}

#[test]
fn seed_compressed_keys_round_trip_at_half_the_size() {
    let client = setup(ParamSpec::insecure_test(10, 3), &[1, 2], 31);
    let keys = client.ev.keys();
    let full = to_bytes(&client.ctx, keys);
    let small = ferrolab_fhe::serial::keys_to_bytes_compressed(&client.ctx, keys).unwrap();
    assert!(
        small.len() * 2 < full.len() + 4096,
        "{} vs {}",
        small.len(),
        full.len()
    );
    // The size `ckks bootstrap-bench` reports as the keys' wire size is the file's, less a
    // small header (format, parameters' checksum, key counts).
    let estimate = keys.galois.wire_bytes_compressed()
        + keys
            .relin
            .as_ref()
            .map_or(0, |r| r.0.wire_bytes_compressed());
    assert!(
        small.len() >= estimate && small.len() <= estimate + 1024,
        "file {} bytes, estimate {estimate}",
        small.len()
    );
    let back = ferrolab_fhe::serial::keys_from_bytes_compressed(&client.ctx, &small).unwrap();
    assert_eq!(&back, keys);
    // A flipped bit in a seed is caught by the checksum; a key read back without its seeds
    // cannot be written compressed again.
    let mut bad = small.clone();
    bad[40] ^= 1;
    assert!(ferrolab_fhe::serial::keys_from_bytes_compressed(&client.ctx, &bad).is_err());
    let plain: EvaluationKeys = from_bytes(&client.ctx, &full).unwrap();
    assert!(ferrolab_fhe::serial::keys_to_bytes_compressed(&client.ctx, &plain).is_err());
    assert!(
        ferrolab_fhe::serial::keys_from_bytes_compressed(&client.ctx, &small[..small.len() - 9])
            .is_err()
    );
}
