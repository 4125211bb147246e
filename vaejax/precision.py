"""Full float32 matrix products for the closed-form densities and KLs.

JAX multiplies float32 matrices at the platform's default precision: full
float32 on CPU, TF32 (a 10-bit mantissa) on recent NVIDIA GPUs, bfloat16
passes on TPU. That is the right trade for the networks, whose cost is the
matrix products, and it is the user's to change
(`jax_default_matmul_precision`, or `$JAX_DEFAULT_MATMUL_PRECISION`).

The distributions' formulas are different: their products are of L x L
factors and L-vectors, cheap beside the networks, and their results are log
densities and KLs of tens of nats whose differences matter. In TF32 a draw
z = mean + L eps and its log density disagree by thousandths of a nat (seen
on an H100), so the functions wrapped here trace their products at
'highest' precision on every platform, whatever the default.
"""

import functools

import jax


def highest(fn):
  """`fn` with its matrix products traced at 'highest' precision."""

  @functools.wraps(fn)
  def wrapped(*args, **kwargs):
    with jax.default_matmul_precision('highest'):
      return fn(*args, **kwargs)

  return wrapped
