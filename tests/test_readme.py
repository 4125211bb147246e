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
