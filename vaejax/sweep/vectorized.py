"""A sweep's members as one padded, stacked, sharded state, trained by one program.

The members' parameters are padded to the largest latent size L
(`padding.embed_latents`), stacked, and one jit-compiled epoch vmaps the
training epoch over them; the members share the batches (one pair of data
keys) unless their data seeds differ. Several members are sharded over all
devices (a Mesh with one axis, padded to a multiple of the device count with
copies of the first, whose results are dropped); a single member is
replicated and its batch is sharded instead (data parallelism), as in a
single run (`vaejax.devices`). The final evaluation runs each device's
members one after another on that device (`jax.shard_map` over the members),
so memory is one member's and every device works; a single member's
evaluations split its examples over the devices.
"""

import dataclasses
import functools
import time

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from vaejax import devices
from vaejax import evaluation
from vaejax import models
from vaejax import rng
from vaejax import step as step_lib
from vaejax import train
from vaejax.sweep import padding

P = devices.P


def _host_stack(*arrays):
  """The members' arrays stacked on the host (keys by JAX)."""
  if jax.dtypes.issubdtype(arrays[0].dtype, jax.dtypes.prng_key):
    return jnp.stack(arrays)
  return np.stack([np.asarray(a) for a in arrays])


def _pick(tree, m):
  return jax.tree.map(lambda a: a[m], tree)


class VectorizedMembers:
  """Members trained as one program: a `loop.Trainer`.

  Args:
    configs: the members' configs (the same flags but latent_dim, seed,
      data_seed).
    states: each member's state in its own shapes, {'params', 'opt_state'}
      of host arrays (as `train.initial_state` or a checkpoint gives it).
    dataset: the loaded `data.Dataset`.
  """

  def __init__(self, configs, states, dataset):
    base = configs[0]
    self.configs = configs
    self.max_latent = max(c.latent_dim for c in configs)
    self.steps_per_epoch = step_lib.steps_per_epoch(len(dataset.train),
                                                    base.batch_size)
    graphdef, optimizer, padded_like = train.state_shapes(
        dataclasses.replace(base, latent_dim=self.max_latent),
        self.steps_per_epoch)
    self._standalone = states
    self._member_states = None
    self.keys = [rng.RunKeys.of(c) for c in configs]

    mesh = devices.mesh()
    self.num_devices = mesh.devices.size
    replicated = devices.replicated(mesh)
    self.batch_sharding = example_sharding = None
    if len(configs) == 1:  # as a single run (`train.SingleRun`)
      count, by_member = 1, replicated
      self.batch_sharding = devices.batch_sharding(mesh, base.batch_size)
      example_sharding = devices.example_sharding(mesh)
    else:
      count = -(-len(configs) // self.num_devices) * self.num_devices
      by_member = jax.sharding.NamedSharding(mesh, P(devices.AXIS))
    index = list(range(len(configs))) + [0] * (count - len(configs))
    stack = lambda items: devices.put(jax.tree.map(
        _host_stack, *[items[i] for i in index]), by_member)
    self._stack = stack
    self._padded_like = padded_like
    self.set_states(states)
    self._mask = stack([
        (np.arange(self.max_latent) < c.latent_dim).astype(np.float32)
        for c in configs])
    self._train_key = stack([k.train for k in self.keys])
    self._eval_keys = {split: stack([getattr(k, split) for k in self.keys])
                       for split in ('valid', 'test', 'iwae')}
    independent = len({c.data_seed for c in configs}) > 1
    if independent:
      self._data_keys = stack([k.data for k in self.keys])
    else:
      self._data_keys = devices.put(self.keys[0].data, replicated)
    self._train_data = devices.put(dataset.train, replicated)
    self.test_inputs = np.asarray(train.eval_inputs(dataset.test, base, 1))
    self._eval_x = {
        'valid': devices.put(train.eval_inputs(dataset.valid, base, 0), replicated),
        'test': devices.put(self.test_inputs, replicated),
        'train': devices.put(train.first_train_inputs(dataset, base), replicated)}

    model_fn = lambda params, mask: padding.MaskedLatents(
        nnx.merge(graphdef, params), mask)
    epoch_fn = train.build_train_epoch(base, model_fn, optimizer,
                                      self.steps_per_epoch,
                                      batch_sharding=self.batch_sharding)

    def members_epoch(state, train_data, epoch, train_key, data_keys, mask):
      params, opt_state, stats = jax.vmap(
          epoch_fn, in_axes=(0, 0, None, None, 0, 0 if independent else None, 0))(
              state['params'], state['opt_state'], train_data, epoch, train_key,
              data_keys, mask)
      return {'params': params, 'opt_state': opt_state}, stats

    compile_start = time.perf_counter()
    # The compiled epoch of all members; `.as_text()` shows its per-device shapes.
    self.epoch_program = jax.jit(members_epoch, donate_argnums=0).lower(
        self.state, self._train_data, jnp.int32(0), self._train_key,
        self._data_keys, self._mask).compile()
    self.compile_seconds = time.perf_counter() - compile_start
    self._evaluate = jax.jit(jax.vmap(
        evaluation.make_evaluate(model_fn, base.eval_batch_size,
                                 example_sharding=example_sharding),
        in_axes=(0, None, 0, 0)))

    final = evaluation.make_final_evaluation(
        model_fn, batch_size=base.eval_batch_size,
        iwae_samples=base.eval_iwae_samples,
        iwae_chunk_size=base.iwae_chunk_size, example_sharding=example_sharding)

    def members_final(params, x, train_x, test_key, iwae_key, mask):
      return jax.lax.map(lambda a: final(a[0], x, train_x, *a[1:]),
                         (params, test_key, iwae_key, mask))

    if by_member is not replicated:
      members_final = jax.shard_map(
          members_final, mesh=mesh, in_specs=(by_member.spec, P(), P(),
                                              *[by_member.spec] * 3),
          out_specs=by_member.spec)
    self._final = jax.jit(members_final)

  def train_epoch(self, epoch):
    """Trains every member one epoch; each one's {'loss', 'finite'} `[steps]`, host."""
    self.state, stats = self.epoch_program(self.state, self._train_data,
                                    jnp.int32(epoch), self._train_key,
                                    self._data_keys, self._mask)
    self._member_states = None
    stats = devices.to_host(stats)
    return [_pick(stats, m) for m in range(len(self.configs))]

  def evaluate(self, split):
    """Each member's mean `ElboTerms` on 'valid' or 'test', host."""
    terms = devices.to_host(self._evaluate(self.state['params'], self._eval_x[split],
                                    self._eval_keys[split], self._mask))
    return [_pick(terms, m) for m in range(len(self.configs))]

  def states(self):
    """Each member's state in its own shapes, host arrays."""
    if self._member_states is None:
      host = devices.to_host(self.state)
      self._member_states = [
          jax.tree.map(np.asarray, padding.extract_latents(
              _pick(host, m), like, c.latent_dim, self.max_latent,
              self._blocks(c)))
          for m, (c, like) in enumerate(zip(self.configs, self._standalone))]
    return self._member_states

  def final_evaluation(self):
    """Each member's final figures (`evaluation.make_final_evaluation`), host."""
    finals = devices.to_host(self._final(self.state['params'], self._eval_x['test'],
                                  self._eval_x['train'],
                                  self._eval_keys['test'],
                                  self._eval_keys['iwae'], self._mask))
    return [_pick(finals, m) for m in range(len(self.configs))]

  def set_states(self, states):
    """Replaces each member's state, given in its own shapes."""
    self.state = self._stack([
        padding.embed_latents(state, self._padded_like, c.latent_dim,
                              self.max_latent, self._blocks(c))
        for c, state in zip(self.configs, states)])
    self._member_states = None

  def _blocks(self, config):
    """A member's and the padded model's posterior blocks (`vaejax.heads`),
    or None where the model has no posterior head."""
    small = _posterior_blocks(config)
    large = _posterior_blocks(dataclasses.replace(config, latent_dim=self.max_latent))
    return None if small is None or large is None else (small, large)

  def models(self):
    """Each member's model in its own shapes."""
    return [nnx.merge(_graphdef(c), state['params'])
            for c, state in zip(self.configs, self.states())]


@functools.lru_cache(maxsize=64)
def _posterior_blocks(config):
  return models.adapt(models.abstract_model(config)).posterior_blocks


@functools.lru_cache(maxsize=64)
def _graphdef(config):
  return models.graphdef_of(config)
