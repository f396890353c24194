"""Run the reference's CartPole code (bamos/taskmet, branch omd, commit 8ffbf5a, omd/cartpole)
unedited on today's JAX stack. Invoked by bench/run_taskmet_cartpole_reference.sh as

    python bench/taskmet_cartpole_reference_launch.py REF_DIR key=value ...

The reference was written for jax 0.2/0.3. Three names it calls are gone from the pinned
jax 0.4.23; each shim below is the documented replacement and leaves the arithmetic alone:

* jax.tree_multimap     -> jax.tree_util.tree_map (same call, several trees)
* jax.ops.index_update  -> x.at[idx].set(y) (the functional update it was renamed to)
* chex.assert_max_traces -> no-op: the guard counts compilations, and jaxopt 0.8's custom_root
  traces the model solver twice, which trips it without any value changing.
"""

import os
import runpy
import sys

import chex
import jax
import jax.ops
import jax.tree_util

if not hasattr(jax, "tree_multimap"):
    jax.tree_multimap = jax.tree_util.tree_map
if not hasattr(jax.ops, "index_update"):
    jax.ops.index_update = lambda x, idx, y: x.at[idx].set(y)


def _no_trace_limit(fn=None, n=None):
    return fn if fn is not None else (lambda f: f)


chex.assert_max_traces = _no_trace_limit

if len(sys.argv) < 2:
    sys.exit("usage: taskmet_cartpole_reference_launch.py REF_DIR key=value ...")
ref = os.path.abspath(sys.argv[1])
os.chdir(ref)
sys.path.insert(0, ref)
sys.argv = ["main.py"] + sys.argv[2:]
runpy.run_path("main.py", run_name="__main__")
