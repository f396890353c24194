"""Microsoft SEAL (through PyPI tenseal's `tenseal.sealapi` bindings, SEAL 4.x) on the same
CKKS operations, ring degree and modulus chain as `ferrolab ckks bench`; one thread.

Usage: ckks_seal.py LOG_N Q_BITS(comma) P_BITS(comma) REPS  -> prints one JSON object
{op: median ms}. SEAL has no public hoisted-rotation API, so `hoisted_rotate16` is SEAL's
best equivalent: 16 rotate_vector calls (steps 1..16) on one ciphertext.
"""

import json
import statistics
import sys
import time

import numpy as np
import tenseal.sealapi as s


def median_ms(reps, f):
    t = []
    for _ in range(reps):
        t0 = time.perf_counter()
        f()
        t.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(t)


def main():
    log_n, q_bits, p_bits, reps = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
    q_bits = [int(b) for b in q_bits.split(",")]
    p_bits = [int(b) for b in p_bits.split(",")]
    n = 1 << log_n
    parms = s.EncryptionParameters(s.SCHEME_TYPE.CKKS)
    parms.set_poly_modulus_degree(n)
    # SEAL's special primes are the last ones of the chain.
    parms.set_coeff_modulus(s.CoeffModulus.Create(n, q_bits + p_bits))
    ctx = s.SEALContext(parms, True, s.SEC_LEVEL_TYPE.TC128)
    kg = s.KeyGenerator(ctx)
    pk = s.PublicKey()
    kg.create_public_key(pk)
    rlk = s.RelinKeys()
    kg.create_relin_keys(rlk)
    gk = s.GaloisKeys()
    # The binding takes Galois elements: SEAL's CKKS rotation by k uses 3^k mod 2N
    # (its slot generator), conjugation 2N - 1.
    elts = [pow(3, k, 2 * n) for k in range(1, 17)] + [2 * n - 1]
    kg.create_galois_keys(elts, gk)
    sk = kg.secret_key()
    encoder = s.CKKSEncoder(ctx)
    enc = s.Encryptor(ctx, pk)
    dec = s.Decryptor(ctx, sk)
    ev = s.Evaluator(ctx)
    scale = 2.0 ** 40
    rng = np.random.default_rng(0)
    slots = n // 2
    x = list(rng.uniform(-1, 1, slots))
    y = list(rng.uniform(-1, 1, slots))
    px, py = s.Plaintext(), s.Plaintext()
    encoder.encode(x, scale, px)
    encoder.encode(y, scale, py)
    cx, cy = s.Ciphertext(), s.Ciphertext()
    enc.encrypt(px, cx)
    enc.encrypt(py, cy)
    out = {}

    def encode():
        p = s.Plaintext()
        encoder.encode(x, scale, p)

    out["encode"] = median_ms(reps, encode)

    def encrypt():
        c = s.Ciphertext()
        enc.encrypt(px, c)

    out["encrypt"] = median_ms(reps, encrypt)

    def decrypt():
        p = s.Plaintext()
        dec.decrypt(cx, p)
        encoder.decode_double(p)

    out["decrypt"] = median_ms(reps, decrypt)

    def add():
        c = s.Ciphertext()
        ev.add(cx, cy, c)

    out["add"] = median_ms(reps, add)

    def mul_relin():
        c = s.Ciphertext()
        ev.multiply(cx, cy, c)
        ev.relinearize_inplace(c, rlk)
        return c

    out["mul_relin"] = median_ms(reps, mul_relin)
    prod = mul_relin()

    def rescale():
        c = s.Ciphertext()
        ev.rescale_to_next(prod, c)

    out["rescale"] = median_ms(reps, rescale)

    def mrr():
        c = mul_relin()
        ev.rescale_to_next_inplace(c)

    out["mul_relin_rescale"] = median_ms(reps, mrr)

    def rotate():
        c = s.Ciphertext()
        ev.rotate_vector(cx, 1, gk, c)

    out["rotate"] = median_ms(reps, rotate)

    def rot16():
        for k in range(1, 17):
            c = s.Ciphertext()
            ev.rotate_vector(cx, k, gk, c)

    out["hoisted_rotate16"] = median_ms(max(1, min(reps, 3)), rot16)

    def conj():
        c = s.Ciphertext()
        ev.complex_conjugate(cx, gk, c)

    try:
        out["conjugate"] = median_ms(reps, conj)
    except Exception:  # the conjugation key is only there if SEAL made it
        pass
    # precision after one multiplication with relinearisation and rescale (worst slot)
    c = mul_relin()
    ev.rescale_to_next_inplace(c)
    p = s.Plaintext()
    dec.decrypt(c, p)
    got = np.array(encoder.decode_double(p))
    err = np.max(np.abs(got - np.array(x) * np.array(y)))
    out["mul_relin_rescale_precision_bits"] = float(-np.log2(err))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
