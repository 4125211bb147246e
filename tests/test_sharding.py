"""The batched losses on a batch sharded over a mesh of Auto or Explicit axes."""

import os
import pathlib
import subprocess
import sys

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent

# Runs with two forced CPU devices (the device count is fixed when JAX
# starts, hence a process of its own); prints one line per checked case.
SCRIPT = r"""
import jax, numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
import vaejax
model = vaejax.make_linear_gaussian(jax.random.key(0), 8, 3)
x = model.sample(jax.random.key(1), 16)
key = jax.random.key(2)
# Both losses split their keys the same way: the gradient of one, the value
# of the other.
losses = {
    'elbo': lambda m, b, k: vaejax.negative_elbo(m, b, k, num_samples=2)[0],
    'iwae': lambda m, b, k: vaejax.negative_iwae_bound(m, b, k, num_samples=4)[0]}
for axis_type in (AxisType.Explicit, AxisType.Auto):
  mesh = jax.make_mesh((2,), ('data',), axis_types=(axis_type,))
  sharded = jax.device_put(x, NamedSharding(mesh, P('data')))
  assert len(sharded.sharding.device_set) == 2
  loss = losses['elbo']
  unsharded = jax.value_and_grad(loss)(model, x, key)
  with jax.set_mesh(mesh):  # as JAX asks for Explicit axes
    got = jax.jit(jax.value_and_grad(loss))(model, sharded, key)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5),
               got, unsharded)
  print(axis_type.name, 'elbo', 'equal')
  loss = losses['iwae']
  value = jax.jit(loss)(model, sharded, key)  # no mesh context
  np.testing.assert_allclose(value, loss(model, x, key), rtol=1e-5)
  print(axis_type.name, 'iwae', 'equal')
"""


def test_sharded_batches_give_the_unsharded_loss_and_gradients():
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS=os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=2')
  result = subprocess.run([sys.executable, '-c', SCRIPT], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300, env=env)
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.split('\n')[:-1] == [
      'Explicit elbo equal', 'Explicit iwae equal', 'Auto elbo equal',
      'Auto iwae equal'], result.stdout
