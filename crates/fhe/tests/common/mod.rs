#![allow(dead_code, clippy::unwrap_used)]
use ferrolab_fhe::*;
use rand::{RngExt, SeedableRng, rngs::StdRng};
use std::sync::Arc;

pub struct Setup {
    pub ctx: Arc<Context>,
    pub kg: KeyGenerator,
    pub pk: PublicKey,
    pub enc: Encryptor,
    pub dec: Decryptor,
    pub ev: Evaluator,
}

pub fn setup(spec: ParamSpec, steps: &[i64], seed: u64) -> Setup {
    let ctx = Context::new(spec).unwrap();
    let mut kg = KeyGenerator::new_seeded(&ctx, seed);
    let pk = kg.public_key();
    let keys = kg.evaluation_keys(steps, true);
    let enc = Encryptor::new_seeded(&ctx, seed + 1);
    let dec = Decryptor::new(&ctx, kg.secret_key()).unwrap();
    let ev = Evaluator::new(&ctx, keys).unwrap();
    Setup {
        ctx,
        kg,
        pk,
        enc,
        dec,
        ev,
    }
}

pub fn random_complex(n: usize, seed: u64) -> Vec<C64> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            C64::new(
                2.0 * rng.random::<f64>() - 1.0,
                2.0 * rng.random::<f64>() - 1.0,
            )
        })
        .collect()
}

pub fn random_real(n: usize, seed: u64) -> Vec<C64> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| C64::real(2.0 * rng.random::<f64>() - 1.0))
        .collect()
}

pub fn max_err(a: &[C64], b: &[C64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (*x - *y).abs())
        .fold(0.0, f64::max)
}

impl Setup {
    pub fn encrypt(&mut self, v: &[C64], level: usize) -> Ciphertext {
        let pt = self.ctx.encode(v, level, self.ctx.scale_at(level)).unwrap();
        self.enc.encrypt(&self.pk, &pt).unwrap()
    }
    pub fn decrypt(&self, ct: &Ciphertext) -> Vec<C64> {
        self.dec.decrypt_decode(ct).unwrap()
    }
}
