"""Runs FederatedScope's own `federatedscope/main.py` (the FS-G reference code) unchanged, after
one compatibility shim for today's PyTorch Geometric, which `bench/run_fedgraph_reference.sh`
needs to set FS-G's Cora rows beside `ferrolab fedgraph`'s (crates/fed/FEDGRAPH.md).

    python bench/fedgraph_reference_launch.py FS_DIR [main.py arguments ...]

The shim: PyG >= 2.3 declares `BaseTransform.forward` abstract, and FS's graph splitters
(LouvainSplitter, RandomSplitter, ...) and FedSage+'s HideGraph subclass BaseTransform but
override `__call__` only, so they can no longer be instantiated ("Can't instantiate abstract
class LouvainSplitter with abstract method forward"). Their `__call__` is what FS calls;
clearing the stale abstract-method set changes nothing else. And torch >= 2.0's
`Optimizer.zero_grad()` sets gradients to None instead of zero, which FedSage+'s
`update_by_grad` (`value.grad += grads[key]`) cannot add to; the default is put back to
torch 1.x's `set_to_none=False`, the torch FS was written for (requirements: torch 1.10). For
FedAvg's GCN, whose parameters all get a gradient at every step, the two are the same. Everything else (data loading, the split, the GCN, the trainer, the
server's best-result bookkeeping) is FS's code as committed.
"""
import os
import runpy
import sys

fs_dir = os.path.abspath(sys.argv[1])
sys.path.insert(0, fs_dir)
os.chdir(fs_dir)
import torch  # noqa: E402
from torch_geometric.transforms import BaseTransform  # noqa: E402

# Before FS's modules are imported: the classes they define then inherit no abstract method.
BaseTransform.__abstractmethods__ = frozenset()

_zero_grad = torch.optim.Optimizer.zero_grad


def zero_grad_as_torch1(self, set_to_none=False):
    return _zero_grad(self, set_to_none=set_to_none)


torch.optim.Optimizer.zero_grad = zero_grad_as_torch1

# FS_SPLIT=per-seed: FS's get_data has drawn every data split from the fixed seed 12345 since
# da04d7d6 (2022-08), so at this commit all seeds share one node split and one Louvain
# partition and only initialisation and dropout vary. FS-G's table (KDD 2022, from the code
# of early 2022) was made before that: main.py seeded once with the run's seed, so each seed
# drew its own split, as `ferrolab fedgraph` does. per-seed puts that back by drawing the data
# from the run's seed; fixed (the default) runs the commit as it is.
split = os.environ.get("FS_SPLIT", "fixed")
if split == "per-seed":
    import federatedscope.core.auxiliaries.data_builder as data_builder

    source = open(data_builder.__file__).read()
    if source.count("setup_seed(12345)") != 1:
        sys.exit("error: expected one setup_seed(12345) in FS's data_builder.py (not commit 480b67de?)")
    args = sys.argv[2:]
    if "seed" not in args:
        sys.exit("error: FS_SPLIT=per-seed needs the run's `seed K` among the arguments")
    run_seed = int(args[args.index("seed") + 1])
    _setup_seed = data_builder.setup_seed

    def data_seed(seed):
        _setup_seed(run_seed if seed == 12345 else seed)

    data_builder.setup_seed = data_seed
elif split != "fixed":
    sys.exit(f"error: FS_SPLIT must be fixed or per-seed, not {split!r}")
sys.argv = ["federatedscope/main.py"] + sys.argv[2:]
runpy.run_path("federatedscope/main.py", run_name="__main__")
