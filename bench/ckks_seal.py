"""Microsoft SEAL (through PyPI tenseal's `tenseal.sealapi` bindings; tenseal 0.3.18's wheel
carries SEAL 4.3, by the version bytes of its serialization header) on the same CKKS operations, ring degree, modulus chain and scale as
`ferrolab ckks bench`; one thread (SEAL's evaluator is single-threaded).

Timing:    ckks_seal.py LOG_N Q_BITS(comma) P_BITS(comma) REPS [--warmup W]
           -> one JSON line {op: median ms over REPS timed runs, after W untimed ones}.
Precision: ckks_seal.py LOG_N Q_BITS P_BITS REPS --precision KEYSETS INPUTS
           -> one JSON line {"mul_relin_rescale": [[bits per input] per key set], "rotate": ...}.

Ops (the algorithms of ferrolab's ops of the same name): encode, encrypt (public key), decrypt
(with decode), add, mul_relin, rescale, mul_relin_rescale, rotate (one step), conjugate, and
`sequential_rotate16`: 16 rotate_vector calls (steps 1..16) on one ciphertext, one after the
other. SEAL has no public hoisted rotation, so it has no `hoisted_rotate16`. The 16-rotation op
takes min(REPS, 3) timed runs, as ferrolab's does.

Precision: per key set a fresh SEALContext, KeyGenerator, encryptor and evaluator. SEAL draws
its keys and noise from OS randomness here: it accepts a seeded PRNG factory, but every
generator it creates then replays the same stream (two encryptions of one plaintext come out
bit-identical), which would correlate keys and noise. Inputs are uniform in [-1, 1] per slot
(numpy, seeded); per input the figure is -log2(max over slots |decrypted - exact|).
"""

import argparse
import json
import statistics
import sys
import time

import numpy as np
import tenseal.sealapi as s


def median_ms(warmup, reps, f):
    for _ in range(warmup):
        f()
    t = []
    for _ in range(max(1, reps)):
        t0 = time.perf_counter()
        f()
        t.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(t)


class Seal:
    """One context and one fresh key set: public, relinearisation and the Galois keys of
    `steps` (plus conjugation if asked)."""

    def __init__(self, log_n, q_bits, p_bits, log_scale, steps, conjugation):
        n = 1 << log_n
        self.n, self.slots, self.scale = n, n // 2, 2.0 ** log_scale
        parms = s.EncryptionParameters(s.SCHEME_TYPE.CKKS)
        parms.set_poly_modulus_degree(n)
        # SEAL's special primes are the last ones of the chain.
        parms.set_coeff_modulus(s.CoeffModulus.Create(n, q_bits + p_bits))
        self.ctx = s.SEALContext(parms, True, s.SEC_LEVEL_TYPE.TC128)
        kg = s.KeyGenerator(self.ctx)
        self.pk = s.PublicKey()
        kg.create_public_key(self.pk)
        self.rlk = s.RelinKeys()
        kg.create_relin_keys(self.rlk)
        self.gk = s.GaloisKeys()
        # The binding takes Galois elements: SEAL's CKKS rotation by k uses 3^k mod 2N
        # (its slot generator), conjugation 2N - 1.
        elts = [pow(3, k, 2 * n) for k in steps] + ([2 * n - 1] if conjugation else [])
        kg.create_galois_keys(elts, self.gk)
        self.encoder = s.CKKSEncoder(self.ctx)
        self.enc = s.Encryptor(self.ctx, self.pk)
        self.dec = s.Decryptor(self.ctx, kg.secret_key())
        self.ev = s.Evaluator(self.ctx)
        self.kg = kg  # keeps the secret key alive

    def encode(self, v):
        p = s.Plaintext()
        self.encoder.encode(list(v), self.scale, p)
        return p

    def encrypt(self, p):
        c = s.Ciphertext()
        self.enc.encrypt(p, c)
        return c

    def decrypt(self, c):
        p = s.Plaintext()
        self.dec.decrypt(c, p)
        return np.array(self.encoder.decode_double(p))

    def mul_relin(self, a, b):
        c = s.Ciphertext()
        self.ev.multiply(a, b, c)
        self.ev.relinearize_inplace(c, self.rlk)
        return c

    def mul_relin_rescale(self, a, b):
        c = self.mul_relin(a, b)
        self.ev.rescale_to_next_inplace(c)
        return c

    def rotate(self, a, k):
        c = s.Ciphertext()
        self.ev.rotate_vector(a, k, self.gk, c)
        return c


def timing(a, q_bits, p_bits):
    se = Seal(a.log_n, q_bits, p_bits, a.log_scale, range(1, 17), True)
    rng = np.random.default_rng(0)
    x = list(rng.uniform(-1, 1, se.slots))
    y = list(rng.uniform(-1, 1, se.slots))
    px, py = se.encode(x), se.encode(y)
    cx, cy = se.encrypt(px), se.encrypt(py)
    w, reps = a.warmup, a.reps
    out = {}
    out["encode"] = median_ms(w, reps, lambda: se.encode(x))
    out["encrypt"] = median_ms(w, reps, lambda: se.encrypt(px))
    out["decrypt"] = median_ms(w, reps, lambda: se.decrypt(cx))

    def add():
        c = s.Ciphertext()
        se.ev.add(cx, cy, c)

    out["add"] = median_ms(w, reps, add)
    out["mul_relin"] = median_ms(w, reps, lambda: se.mul_relin(cx, cy))
    prod = se.mul_relin(cx, cy)

    def rescale():
        c = s.Ciphertext()
        se.ev.rescale_to_next(prod, c)

    out["rescale"] = median_ms(w, reps, rescale)
    out["mul_relin_rescale"] = median_ms(w, reps, lambda: se.mul_relin_rescale(cx, cy))
    out["rotate"] = median_ms(w, reps, lambda: se.rotate(cx, 1))

    def rot16():
        for k in range(1, 17):
            se.rotate(cx, k)

    out["sequential_rotate16"] = median_ms(w, min(reps, 3), rot16)

    def conj():
        c = s.Ciphertext()
        se.ev.complex_conjugate(cx, se.gk, c)

    out["conjugate"] = median_ms(w, reps, conj)
    return out


def precision(a, q_bits, p_bits):
    keysets, inputs = a.precision
    mrr, rot = [], []
    for k in range(keysets):
        se = Seal(a.log_n, q_bits, p_bits, a.log_scale, [1], False)
        rng = np.random.default_rng([a.seed, k])
        mk, rk = [], []
        for _ in range(inputs):
            x = rng.uniform(-1, 1, se.slots)
            y = rng.uniform(-1, 1, se.slots)
            cx, cy = se.encrypt(se.encode(x)), se.encrypt(se.encode(y))
            got = se.decrypt(se.mul_relin_rescale(cx, cy))
            mk.append(float(-np.log2(max(np.max(np.abs(got - x * y)), 1e-300))))
            got = se.decrypt(se.rotate(cx, 1))
            rk.append(float(-np.log2(max(np.max(np.abs(got - np.roll(x, -1))), 1e-300))))
        print(f"ckks_seal: N = 2^{a.log_n}, key set {k + 1} of {keysets} done", file=sys.stderr)
        mrr.append(mk)
        rot.append(rk)
    return {"log_n": a.log_n, "keysets": keysets, "inputs": inputs,
            "mul_relin_rescale": mrr, "rotate": rot}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("log_n", type=int)
    ap.add_argument("q_bits", help="bit sizes of the ciphertext primes, comma-separated")
    ap.add_argument("p_bits", help="bit sizes of the special primes, comma-separated")
    ap.add_argument("reps", type=int, help="timed runs per op (the median is reported)")
    ap.add_argument("--warmup", type=int, default=0, help="untimed runs per op before them")
    ap.add_argument("--log-scale", type=int, default=40)
    ap.add_argument("--precision", type=int, nargs=2, metavar=("KEYSETS", "INPUTS"),
                    help="measure precision instead of time")
    ap.add_argument("--seed", type=int, default=0, help="seed of the precision inputs")
    a = ap.parse_args()
    try:
        q_bits = [int(b) for b in a.q_bits.split(",")]
        p_bits = [int(b) for b in a.p_bits.split(",")]
    except ValueError:
        ap.error("Q_BITS and P_BITS are comma-separated integers")
    if a.reps < 1 or a.warmup < 0 or (a.precision and min(a.precision) < 1):
        ap.error("REPS, KEYSETS and INPUTS must be at least 1, --warmup at least 0")
    out = precision(a, q_bits, p_bits) if a.precision else timing(a, q_bits, p_bits)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
