"""The README's code runs as written and does what it says."""

import pathlib
import re

import jax.numpy as jnp

README = pathlib.Path(__file__).resolve().parent.parent / 'README.md'


def python_blocks():
  return re.findall(r'```python\n(.*?)```', README.read_text(), re.DOTALL)


def test_readme_example_runs():
  blocks = python_blocks()
  assert blocks, 'the README has no python example'
  namespace = {'__name__': 'readme_example'}
  for block in blocks:
    exec(compile(block, str(README), 'exec'), namespace)  # pylint: disable=exec-used
  terms, nll, loss, grads = (namespace[k] for k in ('terms', 'nll', 'loss', 'grads'))
  assert terms.elbo.shape == (32,)
  assert jnp.all(jnp.isfinite(terms.elbo)) and jnp.all(terms.kl >= 0)
  # An importance-weighted bound is a tighter bound than the ELBO on average.
  assert nll.shape == (32,) and -nll.mean() > terms.elbo.mean()
  assert jnp.isfinite(loss) and grads.encoder.shape == (20, 784)
  # The NNX model with dropout trains: 20 Adam steps lower its loss.
  losses = namespace['nnx_losses']
  assert all(map(jnp.isfinite, losses)) and losses[-1] < losses[0] - 1
