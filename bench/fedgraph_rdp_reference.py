"""Reference epsilons for the fedgraph privacy accountant's unit tests
(crates/fed/src/fedgraph/privacy.rs), from Google's dp-accounting RDP accountant.

    python3 -m venv /tmp/dpvenv && /tmp/dpvenv/bin/pip install dp-accounting
    /tmp/dpvenv/bin/python bench/fedgraph_rdp_reference.py

Orders: Opacus's default list (1.1..10.9 by 0.1, then 12..63) for q = 1; the integer orders
2..63 for q < 1 (our accountant evaluates the sampled Gaussian at integer orders only).
"""
import dp_accounting
from dp_accounting import rdp

FRAC = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))
INT = list(range(2, 64))

CASES = [
    # (q, sigma, steps, delta, orders)
    (1.0, 0.4, 50, 1e-5, FRAC),
    (1.0, 0.8, 50, 1e-5, FRAC),
    (1.0, 1.6, 50, 1e-5, FRAC),
    (1.0, 1.0, 1, 1e-5, FRAC),
    (0.01, 1.1, 10000, 1e-5, INT),
    (0.2, 1.6, 100, 1e-5, INT),
]

for q, sigma, steps, delta, orders in CASES:
    acc = rdp.RdpAccountant(orders)
    ev = dp_accounting.GaussianDpEvent(sigma)
    if q < 1.0:
        ev = dp_accounting.PoissonSampledDpEvent(q, ev)
    acc.compose(ev, steps)
    eps, order = acc.get_epsilon_and_optimal_order(delta)
    name = "frac" if orders is FRAC else "int"
    print(f"q={q} sigma={sigma} steps={steps} delta={delta} orders={name}: eps={eps:.10f} order={order}")
