"""Observation models log p(x | decoder output), for one example at a time.

Each function sums over all data dimensions of ONE example and returns a
scalar log density (or log mass) in nats; batch with `jax.vmap`.
"""

import math

import jax
import jax.numpy as jnp

from vaejax import checks

_LOG_2PI = math.log(2.0 * math.pi)


def _check_same_shape(function, name, output, x):
  """A one-line ValueError unless x has the shape of the decoder's `output`.

  Broadcasting would sum a wrong density silently (a mean `[28, 28, 1]`
  against x `[784]` sums a `[28, 28, 784]` array).
  """
  if jnp.shape(x) != jnp.shape(output):
    raise ValueError(
        f'{function}: x is {checks.shape_of(x)} and {name} '
        f'{checks.shape_of(output)}; expected the same shape (reshape the '
        "decoder's output to the data's)")


def bernoulli_log_prob(logits, x):
  """log p(x | logits) of independent Bernoulli pixels.

    log p(x) = sum_i [x_i log sigmoid(l_i) + (1 - x_i) log sigmoid(-l_i)]
             = -sum_i [x_i softplus(-l_i) + (1 - x_i) softplus(l_i)],

  each branch a softplus, log(1 + e^t), which is accurate to float rounding
  in both tails: at a very negative logit, log p(x=0) = -softplus(l) ~ -e^l
  keeps its relative accuracy (the one-term form log sigmoid(l) - (1 - x) l
  cancels there: 0.8% off at l = -10 in float32, and exactly 0 from
  l = -17), and every finite logit gives a finite value (a form through
  log(1 - sigmoid(l)) underflows to log 0 at l >= 17 and gives NaN at
  l >= 88 in float32). For x in [0, 1] rather than {0, 1} this is the
  negative binary cross-entropy, the usual objective for grey levels read as
  probabilities.

  Args:
    logits: `[...]` decoder logits, any shape.
    x: data of the same shape (a one-line ValueError otherwise), in {0, 1}
      (or [0, 1]); any dtype.

  Returns:
    The scalar sum over all dimensions.
  """
  _check_same_shape('bernoulli_log_prob', 'logits', logits, x)
  x = jnp.asarray(x, logits.dtype)
  return -jnp.sum(x * jax.nn.softplus(-logits)
                  + (1 - x) * jax.nn.softplus(logits))


def gaussian_log_prob(mean, log_var, x):
  """log N(x; mean, diag(exp(log_var))), a true log density.

    log p(x) = -1/2 sum_i [log(2 pi) + log_var_i + (x_i - mean_i)^2 exp(-log_var_i)].

  Args:
    mean: `[...]` mean, any shape.
    log_var: log-variance, of the shape of `mean` or a scalar (one shared
      variance).
    x: data of the shape of `mean` (a one-line ValueError otherwise).

  Returns:
    The scalar sum over all dimensions.
  """
  _check_same_shape('gaussian_log_prob', 'mean', mean, x)
  if jnp.ndim(log_var) and jnp.shape(log_var) != jnp.shape(mean):
    raise ValueError(
        f'gaussian_log_prob: log_var is {checks.shape_of(log_var)} and mean '
        f'{checks.shape_of(mean)}; expected {checks.shape_of(mean)} or a scalar')
  x = jnp.asarray(x, mean.dtype)
  log_var = jnp.broadcast_to(log_var, mean.shape)
  scaled_diff = (x - mean) * jnp.exp(-0.5 * log_var)
  return -0.5 * jnp.sum(_LOG_2PI + log_var + jnp.square(scaled_diff))
