"""Run the reference's CartPole code (bamos/taskmet, branch omd, commit 8ffbf5a, omd/cartpole)
unedited on today's JAX stack. Invoked by bench/run_taskmet_cartpole_reference.sh as

    python bench/taskmet_cartpole_reference_launch.py REF_DIR key=value ...

The reference was written for jax 0.2/0.3. Three names it calls are gone from the pinned
jax 0.4.23; each shim below is the documented replacement and leaves the arithmetic alone:

* jax.tree_multimap     -> jax.tree_util.tree_map (same call, several trees)
* jax.ops.index_update  -> x.at[idx].set(y) (the functional update it was renamed to)
* chex.assert_max_traces -> no-op: the guard counts compilations, and jaxopt 0.8's custom_root
  traces the model solver twice, which trips it without any value changing.

One change of speed, not of values: the reference's replay buffer keeps its transitions in
immutable jax arrays and rebuilds each whole array on every `add` (fine on its GPU; on a CPU
it copies the buffer, 27 MB per array at 50k steps and 64 distractors, six times a step, which
made 1,000 steps take minutes here). The patched buffer stores the same float32 rows in numpy
arrays written in place and returns jnp arrays from `sample`, drawing its indices with the same
`np.random.choice` call, so every sampled batch holds the same values in the same order.
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
import numpy as np  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import replay_buffer  # noqa: E402


def _init(self, obs_shape, capacity):
    self.capacity = capacity
    self.obses = np.empty((capacity, *obs_shape), dtype=np.float32)
    self.next_obses = np.empty((capacity, *obs_shape), dtype=np.float32)
    self.actions = np.empty((capacity, 1), dtype=np.float32)
    self.rewards = np.empty((capacity, 1), dtype=np.float32)
    self.not_dones = np.empty((capacity, 1), dtype=np.float32)
    self.not_dones_no_max = np.empty((capacity, 1), dtype=np.float32)
    self.idx = 0
    self.full = False


def _add(self, obs, action, reward, next_obs, done, done_no_max):
    self.obses[self.idx] = np.asarray(obs)
    self.actions[self.idx] = np.asarray(action)
    self.rewards[self.idx] = np.asarray(reward)
    self.next_obses[self.idx] = np.asarray(next_obs)
    self.not_dones[self.idx] = not done
    self.not_dones_no_max[self.idx] = not done_no_max
    self.idx = (self.idx + 1) % self.capacity
    self.full = self.full or self.idx == 0


def _sample(self, batch_size, replace=False):
    idxs = np.random.choice(len(self), size=batch_size, replace=replace)
    return tuple(
        jnp.asarray(a[idxs])
        for a in (self.obses, self.actions, self.rewards, self.next_obses, self.not_dones,
                  self.not_dones_no_max)
    )


replay_buffer.ReplayBuffer.__init__ = _init
replay_buffer.ReplayBuffer.add = _add
replay_buffer.ReplayBuffer.sample = _sample
runpy.run_path("main.py", run_name="__main__")
