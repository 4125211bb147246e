"""The README's code runs as written and does what it says."""

import json
import os
import pathlib
import re
import shlex
import subprocess
import sys

import jax.numpy as jnp
import numpy as np

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
README = REPO_ROOT / 'README.md'
# The pages the README links, whose code blocks run too.
DOCS = sorted((REPO_ROOT / 'docs').glob('*.md'))


def python_blocks(page=README):
  return re.findall(r'```python\n(.*?)```', page.read_text(), re.DOTALL)


def run_blocks(page):
  """Runs a page's python blocks in order, in one namespace, and returns it."""
  namespace = {'__name__': 'readme_example'}
  for block in python_blocks(page):
    exec(compile(block, str(page), 'exec'), namespace)  # pylint: disable=exec-used
  return namespace


def test_readme_example_runs():
  assert python_blocks(), 'the README has no python example'
  namespace = run_blocks(README)
  terms, nll, loss, grads = (namespace[k] for k in ('terms', 'nll', 'loss', 'grads'))
  assert terms.elbo.shape == (32,)
  assert jnp.all(jnp.isfinite(terms.elbo)) and jnp.all(terms.kl >= 0)
  # An importance-weighted bound is a tighter bound than the ELBO on average.
  assert nll.shape == (32,) and -nll.mean() > terms.elbo.mean()
  assert jnp.isfinite(loss) and grads.encoder.shape == (20, 784)
  # The loaded run gives its own results' figures.
  assert namespace['run'].epoch == 2 and namespace['loaded_log_p'].shape == (8,)
  assert namespace['path'].shape[:2] == (4, 7)


def test_the_docs_pages_examples_run():
  pages = {page.name: run_blocks(page) for page in DOCS if python_blocks(page)}
  assert 'api.md' in pages, sorted(pages)
  # The NNX model with dropout trains: 20 Adam steps lower its loss.
  losses = pages['api.md']['nnx_losses']
  assert all(map(jnp.isfinite, losses)) and losses[-1] < losses[0] - 1
  # The planar flow as a user's posterior: its draws, and an ELBO below log p(x).
  api = pages['api.md']
  assert api['z'].shape == (5, 3) and api['log_q'].shape == (5,)
  assert float(api['terms'].elbo) < float(api['decoder'].log_marginal(api['x']))


def test_readme_own_data_example_runs(tmp_path):
  # The shell lines that write mine.npz and train on it, run in an empty
  # directory with this interpreter.
  (block,) = [b for b in re.findall(r'```sh\n(.*?)```', README.read_text(), re.DOTALL)
              if 'mine.npz' in b]
  env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
  for line in block.strip().splitlines():
    command = shlex.split(line.replace('.venv/bin/python', sys.executable))
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
  results = json.loads((tmp_path / 'runs' / 'mine' / 'results.json').read_text())
  # The pixels are independent Bernoulli(0.3): log p(x) is -64 H(0.3) on
  # average, 39.09 nats; the per-example spread over 100 test images gives a
  # standard error of 0.31, and the model's bound lies above the truth.
  entropy = -64 * (0.3 * np.log(0.3) + 0.7 * np.log(0.7))
  assert entropy - 1.5 < results['test_nll_iwae'] < entropy + 1.5
