r"""Test NLL by the importance-weighted bound: vaejax against batched PyTorch.

  python -m benchmarks.iwae_eval --tfds_manual_dir=../shared/data \
      --num_samples=1000 --num_examples=1000

The Flax example's model (784-500-20 MLP, ReLU, Bernoulli; its initial
weights, copied into PyTorch, so both estimate the same log p(x)), K
importance samples for each of the first --num_examples binarized-MNIST test
images, at most --chunk_size (examples x samples) log-weights at once in both:
vaejax's `evaluation.make_iwae` (one jit program) against a straightforward
batched PyTorch implementation under `torch.no_grad`, in a process of its
own (common.Remote). Alternating rounds;
prints seconds, GFLOP/s of the decoder matmuls, the two estimates, memory.
"""

import functools
import math

from absl import app
from absl import flags
from flax import nnx
import jax
import numpy as np

from benchmarks import common
from vaejax import evaluation
from vaejax import models
from vaejax import train

common.define_data_flags()
flags.DEFINE_integer('num_samples', 1000, 'K.')
flags.DEFINE_integer('num_examples', 1000, 'Test images evaluated.')
flags.DEFINE_integer('chunk_size', 1 << 16, 'Examples x samples at once.')
flags.DEFINE_integer('repeats', 3, 'Timed rounds.')
FLAGS = flags.FLAGS

HIDDEN, LATENT = 500, 20


def torch_iwae(layers, x, num_samples, chunk_size):
  """A batched PyTorch IWAE estimate; run it in a `Remote`.

  `layers`: the (kernel, bias) NumPy arrays of the four Linear layers.
  """
  torch = common.torch_or_none()
  device = common.torch_device(torch)
  weights = [(torch.from_numpy(kernel.T.copy()).to(device),
              torch.from_numpy(bias).to(device)) for kernel, bias in layers]
  linear = lambda i, h: torch.nn.functional.linear(h, *weights[i])
  x = torch.from_numpy(x.reshape(len(x), -1)).to(device)
  per_chunk = max(1, chunk_size // num_samples)
  log_2pi = math.log(2 * math.pi)

  def run():
    bounds = []
    with torch.no_grad():
      for start in range(0, len(x), per_chunk):
        xb = x[start:start + per_chunk]
        mean, log_var = linear(1, torch.relu(linear(0, xb))).chunk(2, dim=-1)
        eps = torch.randn(len(xb), num_samples, LATENT, device=device)
        z = mean[:, None] + torch.exp(0.5 * log_var)[:, None] * eps
        logits = linear(3, torch.relu(linear(2, z)))
        log_px = -torch.nn.functional.binary_cross_entropy_with_logits(
            logits, xb[:, None].expand_as(logits), reduction='none').sum(-1)
        log_pz = -0.5 * (z**2 + log_2pi).sum(-1)
        log_qz = -0.5 * (eps**2 + log_2pi + log_var[:, None]).sum(-1)
        bounds.append(torch.logsumexp(log_px + log_pz - log_qz, dim=1)
                      - math.log(num_samples))
    return torch.cat(bounds).cpu().numpy()

  return run


def main(argv):
  del argv
  dataset = common.setup()
  config = common.flax_example_config(eval_iwae_samples=FLAGS.num_samples,
                                      iwae_chunk_size=FLAGS.chunk_size)
  graphdef, params = nnx.split(
      models.build_model(config, jax.random.key(0)), nnx.Param)
  x = train.eval_inputs(dataset.test[:FLAGS.num_examples], config, 1)
  flops = 2 * (LATENT * HIDDEN + HIDDEN * 784) * FLAGS.num_samples * len(x)
  peak, _ = common.gemm_peak_gflops()
  print(f'IWAE, K={FLAGS.num_samples}, {len(x)} test images, chunks of '
        f'{FLAGS.chunk_size} log-weights: {flops / 1e9:.1f} GFLOP of decoder '
        f'matmuls; float32 GEMM peak {peak:.1f} GFLOP/s')

  iwae = jax.jit(evaluation.make_iwae(functools.partial(nnx.merge, graphdef),
                                      FLAGS.num_samples, FLAGS.chunk_size))
  key = jax.random.key(1)
  compile_seconds = common.timed(
      lambda: iwae.lower(params, x, key).compile())
  estimates = {}

  def vaejax_run():
    estimates['vaejax'] = np.asarray(iwae(params, x, key))

  candidates = {'vaejax': vaejax_run}
  if common.torch_installed():
    layers = [(np.array(layer['kernel'][...]), np.array(layer['bias'][...]))
              for layer in (params['encoder']['layers'][1],
                            params['encoder']['layers'][3],
                            params['decoder']['layers'][0],
                            params['decoder']['layers'][2])]
    candidates['pytorch'] = common.Remote(torch_iwae, layers, np.asarray(x),
                                          FLAGS.num_samples, FLAGS.chunk_size)
  else:
    print('pytorch: skipped, torch is not installed')
  times, memory = common.measure(candidates, FLAGS.repeats)
  if 'pytorch' in candidates:
    estimates['pytorch'] = candidates['pytorch'].last
    candidates['pytorch'].close()
  base = np.median(times['vaejax'])
  print(f'\n{"":8} {"seconds (median, min-max)":34} {"GFLOP/s":>8} '
        f'{"of peak":>8} {"vaejax is":>10} {"NLL":>9} {"RSS MiB":>8}')
  for name, seconds in times.items():
    median = float(np.median(seconds))
    nll = -float(np.mean(estimates[name]))
    print(f'{name:8} {common.summary(seconds):34} {flops / median / 1e9:8.1f} '
          f'{flops / median / 1e9 / peak:8.0%} {median / base:9.2f}x '
          f'{nll:9.3f} {memory[name]:8.0f}')
  print(f'\nvaejax compile: {compile_seconds:.2f} s (excluded above); process '
        f'peak RSS {common.peak_rss_mib():.0f} MiB')


if __name__ == '__main__':
  app.run(main)
