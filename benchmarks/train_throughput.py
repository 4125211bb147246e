r"""Training throughput of the Flax example's VAE on binarized MNIST, three ways.

  python -m benchmarks.train_throughput --tfds_manual_dir=../shared/data

The model of the Flax VAE example (784-500-20 MLP, ReLU, Bernoulli pixels,
Adam 1e-3, batch 128), one epoch (390 steps) at a time, trained by:

  vaejax     the compiled epoch: one jit program, lax.scan over the batches
             of the on-device training set (vaejax.step.make_train_epoch);
  jit-step   the same jit-compiled train step called from a Python loop on
             host NumPy batches (the Flax example's pattern, with its jit);
  pytorch    an eager PyTorch implementation of the identical model and loss
             (torch.set_flush_denormal, one thread per core, batches sliced
             from one tensor), when torch is installed, in a process of its
             own (common.Remote).

The three alternate, epoch by epoch, for --repeats rounds after one warm-up
epoch each; the script prints medians, spreads, examples/s, GFLOP/s from the
exact matmul FLOP count, the fraction of the float32 GEMM peak it measures in
the same run, ratios, compile time and memory.
"""

from absl import app
from absl import flags
import jax
import numpy as np

from benchmarks import common

common.define_data_flags()
flags.DEFINE_integer('repeats', 5, 'Timed epochs per implementation.')
FLAGS = flags.FLAGS

HIDDEN, LATENT, BATCH = 500, 20, 128


def jit_step_loop(dataset, config, steps):
  """The jit-compiled step from a Python loop over host NumPy batches."""
  keys, params, opt_state, step_fn = common.vaejax_step(config, steps)
  step_jit = jax.jit(step_fn, donate_argnums=(0, 1))
  host = dataset.train.reshape(len(dataset.train), 28, 28, 1).astype(np.float32)
  rng = np.random.default_rng(0)
  state = {'params': params, 'opt_state': opt_state, 'step': 0}

  def run():
    order = rng.permutation(len(host))
    params, opt_state = state['params'], state['opt_state']
    for i in range(steps):
      batch = host[order[i * BATCH:(i + 1) * BATCH]]
      params, opt_state, stats = step_jit(params, opt_state, batch, keys.train,
                                          np.int32(state['step'] + i))
    jax.block_until_ready(stats)
    state.update(params=params, opt_state=opt_state, step=state['step'] + steps)

  return run


def pytorch_epoch(train_images, steps):
  """The identical model and loss in eager PyTorch; run it in a `Remote`."""
  torch = common.torch_or_none()
  nn = torch.nn

  class VAE(nn.Module):

    def __init__(self):
      super().__init__()
      self.enc1, self.enc2 = nn.Linear(784, HIDDEN), nn.Linear(HIDDEN, 2 * LATENT)
      self.dec1, self.dec2 = nn.Linear(LATENT, HIDDEN), nn.Linear(HIDDEN, 784)

    def forward(self, x):
      mean, log_var = self.enc2(torch.relu(self.enc1(x))).chunk(2, dim=-1)
      z = mean + torch.exp(0.5 * log_var) * torch.randn_like(mean)
      logits = self.dec2(torch.relu(self.dec1(z)))
      rec = nn.functional.binary_cross_entropy_with_logits(
          logits, x, reduction='none').sum(-1)
      kl = 0.5 * (torch.expm1(log_var) - log_var + mean**2).sum(-1)
      return (rec + kl).mean()

  device = common.torch_device(torch)
  model = VAE().to(device)
  optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
  train_x = torch.from_numpy(train_images.reshape(len(train_images), 784)
                             .astype(np.float32)).to(device)

  def run():
    order = torch.randperm(len(train_x), device=device)
    for i in range(steps):
      x = train_x[order[i * BATCH:(i + 1) * BATCH]]
      optimizer.zero_grad(set_to_none=True)
      loss = model(x)
      loss.backward()
      optimizer.step()
    common.torch_synchronize(torch)

  return run


def main(argv):
  del argv
  dataset = common.setup()
  config = common.flax_example_config()
  steps = len(dataset.train) // BATCH
  examples = steps * BATCH
  peak, gemms = common.gemm_peak_gflops()
  print('float32 GEMM 2048^3: ' + ', '.join(
      f'{k} {v:.1f} GFLOP/s' for k, v in gemms.items()) + f' (peak: {peak:.1f})')
  flops = common.mlp_vae_flops_per_example(784, (HIDDEN,), LATENT) * examples
  print(f'one epoch: {steps} steps of {BATCH}, {flops / 1e9:.1f} GFLOP of matmuls')

  candidates = {}
  candidates['vaejax'], compile_seconds = common.compiled_epoch(dataset, config)
  candidates['jit-step'] = jit_step_loop(dataset, config, steps)
  if common.torch_installed():
    candidates['pytorch'] = common.Remote(pytorch_epoch, dataset.train, steps)
  else:
    print('pytorch: skipped, torch is not installed (pip install torch)')
  times, memory = common.measure(candidates, FLAGS.repeats)
  if 'pytorch' in candidates:
    candidates['pytorch'].close()

  base = np.median(times['vaejax'])
  print(f'\n{"":10} {"s/epoch (median, min-max)":34} {"examples/s":>11} '
        f'{"GFLOP/s":>8} {"of peak":>8} {"vaejax is":>10} {"RSS MiB":>8}')
  for name, seconds in times.items():
    median = float(np.median(seconds))
    print(f'{name:10} {common.summary(seconds):34} {examples / median:11,.0f} '
          f'{flops / median / 1e9:8.1f} {flops / median / 1e9 / peak:8.0%} '
          f'{median / base:9.2f}x {memory[name]:8.0f}')
  print(f'\nvaejax compile: {compile_seconds:.2f} s (excluded above); '
        f'process peak RSS {common.peak_rss_mib():.0f} MiB'
        + (f', device peak {common.device_memory_mib():.0f} MiB'
           if common.device_memory_mib() is not None else ''))


if __name__ == '__main__':
  app.run(main)
