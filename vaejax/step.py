"""The compiled training step and epoch.

An epoch is ONE jit-compiled program: the training set stays on the device
and `jax.lax.scan` runs over its batches. Its randomness comes from keys it
is given: the data order from `fold_in(shuffle, epoch)`, the dynamic
binarization from `fold_in(binarize, step)` and the objective's draws from
`fold_in(train, step)`, so a resumed run draws exactly the numbers of an
uninterrupted one. Nothing here reads a config: the loss, the optimiser and
the sizes are arguments.
"""

import jax
import jax.numpy as jnp
import optax


def make_train_step(model_fn, optimizer, loss_fn, *, skip_nonfinite=False):
  """Builds `train_step(params, opt_state, x, train_key, step, *model_args)`.

  One optimiser step on the float inputs `x` `[B, ...]` for
  `loss_fn(model, x, fold_in(train_key, step), step) -> (loss, aux)` (see
  `vaejax.objectives`). `model_fn(params, *model_args)` returns the model
  (for NNX, `nnx.merge` with the graphdef; a sweep adds a latent mask).
  `optimizer.update` gets the global step as `step=` (`vaejax.optim`).

  Returns:
    (params, opt_state, {'loss', 'finite'}): `finite` is whether the loss
    and every gradient are finite, computed in the step so that nothing waits
    on the host; with `skip_nonfinite` a step that is not leaves params and
    opt_state as they were (the learning-rate schedule, a function of the
    step, still moves on). A sweep vmaps it over its members.
  """

  def train_step(params, opt_state, x, train_key, step, *model_args):

    def loss_of(params):
      model = model_fn(params, *model_args)
      loss, _ = loss_fn(model, x, jax.random.fold_in(train_key, step), step)
      return loss

    loss, grads = jax.value_and_grad(loss_of)(params)
    finite = jnp.isfinite(loss)
    for grad in jax.tree.leaves(grads):
      finite &= jnp.all(jnp.isfinite(grad))
    updates, new_opt_state = optimizer.update(grads, opt_state, params,
                                              step=step)
    new_params = optax.apply_updates(params, updates)
    if skip_nonfinite:
      keep = lambda new, old: jnp.where(finite, new, old)
      new_params = jax.tree.map(keep, new_params, params)
      new_opt_state = jax.tree.map(keep, new_opt_state, opt_state)
    return new_params, new_opt_state, {'loss': loss, 'finite': finite}

  return train_step


def make_train_epoch(train_step, *, steps_per_epoch, batch_size, preprocess,
                     batch_sharding=None):
  """Builds `train_epoch(params, opt_state, train_data, epoch, train_key, data_keys, *model_args)`.

  One epoch as one program: a `lax.scan` over `steps_per_epoch` batches of
  `batch_size` from the on-device training set. `data_keys` holds the
  'shuffle' and 'binarize' keys (`rng.RunKeys.data`): the members of a sweep
  that share them see the same batches. `preprocess(x, key)` turns stored
  examples into model inputs (`data.to_inputs`). With `batch_sharding`, each
  batch is laid out over the devices by it (data parallelism).

  Returns:
    (params, opt_state, the steps' {'loss', 'finite'}, each `[steps]`); jit
    it with params and opt_state donated.
  """

  def train_epoch(params, opt_state, train_data, epoch, train_key, data_keys,
                  *model_args):
    order = jax.random.permutation(
        jax.random.fold_in(data_keys['shuffle'], epoch), train_data.shape[0])
    batches = order[:steps_per_epoch * batch_size].reshape(
        steps_per_epoch, batch_size)
    steps = epoch * steps_per_epoch + jnp.arange(steps_per_epoch)

    def body(carry, inputs):
      params, opt_state = carry
      indices, step = inputs
      x = preprocess(jnp.take(train_data, indices, axis=0),
                     jax.random.fold_in(data_keys['binarize'], step))
      if batch_sharding is not None:
        x = jax.lax.with_sharding_constraint(x, batch_sharding)
      params, opt_state, stats = train_step(params, opt_state, x, train_key,
                                            step, *model_args)
      return (params, opt_state), stats

    (params, opt_state), stats = jax.lax.scan(
        body, (params, opt_state), (batches, steps))
    return params, opt_state, stats

  return train_epoch


def steps_per_epoch(num_examples, batch_size):
  """Steps of an epoch: whole batches only, the last partial one dropped."""
  return num_examples // batch_size
