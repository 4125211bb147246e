"""The batched losses on a batch sharded over a mesh of Auto or Explicit axes.

The device count is fixed when JAX starts, so the check runs in a process
of its own with forced CPU devices: the one process of
`test_sweep.py::test_four_devices_give_the_results_of_one`, which appends
SHARDED_LOSSES to its script and reads SHARDED_LOSSES_PRINT from its output
(one process for every multi-device check, not one each).
"""

# Over all the process's devices (4); prints one line per checked case.
SHARDED_LOSSES = r"""
import jax, numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
import vaejax
count = jax.device_count()
model = vaejax.make_linear_gaussian(jax.random.key(0), 8, 3)
x = model.sample(jax.random.key(1), 4 * count)
key = jax.random.key(2)
# Both losses split their keys the same way: the gradient of one, the value
# of the other.
losses = {
    'elbo': lambda m, b, k: vaejax.negative_elbo(m, b, k, num_samples=2)[0],
    'iwae': lambda m, b, k: vaejax.negative_iwae_bound(m, b, k, num_samples=4)[0]}
for axis_type in (AxisType.Explicit, AxisType.Auto):
  mesh = jax.make_mesh((count,), ('data',), axis_types=(axis_type,))
  sharded = jax.device_put(x, NamedSharding(mesh, P('data')))
  assert len(sharded.sharding.device_set) == count
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

SHARDED_LOSSES_PRINT = ['Explicit elbo equal', 'Explicit iwae equal',
                        'Auto elbo equal', 'Auto iwae equal']
