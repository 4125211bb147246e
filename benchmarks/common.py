"""What the benchmarks share: timing, memory, FLOP counts, the GEMM peak."""

import importlib.util
import multiprocessing
import functools
import os
import resource
import statistics
import sys
import time

from absl import flags
from absl import logging
from flax import nnx
import jax
import jax.numpy as jnp

from vaejax import config as config_lib
from vaejax import data
from vaejax import objectives
from vaejax import rng
from vaejax import step as step_lib
from vaejax import train

FLAGS = flags.FLAGS


def define_data_flags():
  flags.DEFINE_string(
      'dataset', 'binarized_mnist',
      'binarized_mnist, or the same data as a PATH.npz (e.g. on a machine '
      'without TFDS); figures are per epoch of its training split.')
  flags.DEFINE_string('tfds_data_dir', None, 'Where TFDS keeps prepared datasets.')
  flags.DEFINE_string('tfds_manual_dir', data.default_manual_dir(),
                      'Root of offline TFDS download files.')


def setup():
  """Quiets library INFO logs, prints the machine, loads `--dataset`."""
  if not FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)
  print(f'machine: {machine()}')
  return data.load(FLAGS.dataset, tfds_data_dir=FLAGS.tfds_data_dir,
                   tfds_manual_dir=FLAGS.tfds_manual_dir)


def flax_example_config(**overrides):
  """The Flax example's model and training on binarized MNIST, as a config.

  784-500-20 MLP, ReLU, Bernoulli pixels, Adam 1e-3, batch 128.
  """
  return config_lib.TrainConfig(**{
      'workdir': 'unused', 'dataset': FLAGS.dataset, 'hidden_dims': (500,),
      'latent_dim': 20, 'activation': 'relu', 'batch_size': 128,
      'learning_rate': 1e-3, **overrides})


def vaejax_step(config, steps_per_epoch):
  """(keys, params, opt_state, train_step) of a run of `config`."""
  keys = rng.RunKeys.of(config)
  graphdef, optimizer, state = train.initial_state(config, steps_per_epoch)
  step_fn = step_lib.make_train_step(
      functools.partial(nnx.merge, graphdef), optimizer,
      objectives.from_config(config, steps_per_epoch))
  return keys, state['params'], state['opt_state'], step_fn


def compiled_epoch(dataset, config):
  """vaejax's compiled epoch; returns (run one epoch, compile seconds)."""
  steps = step_lib.steps_per_epoch(len(dataset.train), config.batch_size)
  keys = rng.RunKeys.of(config)
  graphdef, optimizer, state = train.initial_state(config, steps)
  params, opt_state = state['params'], state['opt_state']
  train_data = jax.device_put(dataset.train)
  lowered = jax.jit(train.build_train_epoch(
      config, functools.partial(nnx.merge, graphdef), optimizer, steps),
                    donate_argnums=(0, 1)).lower(
                        params, opt_state, train_data, jnp.int32(0), keys.train,
                        keys.data)
  compile_seconds = timed(lowered.compile)
  epoch_fn = lowered.compile()
  state = {'params': params, 'opt_state': opt_state, 'epoch': 0}

  def run():
    params, opt_state, stats = epoch_fn(
        state['params'], state['opt_state'], train_data,
        jnp.int32(state['epoch']), keys.train, keys.data)
    jax.block_until_ready(stats)
    state.update(params=params, opt_state=opt_state, epoch=state['epoch'] + 1)

  return run, compile_seconds


def timed(fn):
  """Seconds of one call of `fn` (which must block until its work is done)."""
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def alternate(fns, repeats):
  """Runs each of `fns` (name -> callable) once per round, `repeats` rounds.

  Alternating spreads the machine's slow and fast moments over all
  candidates. Returns name -> list of seconds.
  """
  times = {name: [] for name in fns}
  for _ in range(repeats):
    for name, fn in fns.items():
      times[name].append(timed(fn))
  return times


def torch_or_none():
  """PyTorch set up for its best CPU speed and seeded, or None if not installed.

  Flush-to-zero for denormals, one thread per core, seed 0. Call it only in a
  `Remote` process: PyTorch's OpenMP threads and floating-point mode slow
  the JAX programs of the process they run in.
  """
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  torch.set_flush_denormal(True)
  torch.set_num_threads(os.cpu_count())
  torch.manual_seed(0)
  return torch


def torch_device(torch):
  """The GPU when PyTorch sees one (to compare like with like), else the CPU."""
  return torch.device('cuda' if torch.cuda.is_available() else 'cpu')


def torch_synchronize(torch):
  """Waits for PyTorch's queued GPU work, so that a timing includes it."""
  if torch.cuda.is_available():
    torch.cuda.synchronize()


def torch_installed():
  return importlib.util.find_spec('torch') is not None


def _serve(connection, factory, args):
  run = factory(*args)
  while connection.recv():
    connection.send(run())


class Remote:
  """A benchmark candidate that runs in a process of its own.

  `factory(*args)` runs there once and returns the callable that each call
  of this object runs there; its result comes back pickled (and stays in
  `last`). With PyTorch's flush-to-zero set in the JAX process, the JAX
  epochs measured after its runs took 1.10 s against 0.81 s without;
  here its threads and floating-point mode stay with it.
  """

  def __init__(self, factory, *args):
    context = multiprocessing.get_context('spawn')
    self._connection, child = context.Pipe()
    self._process = context.Process(target=_serve,
                                    args=(child, factory, args), daemon=True)
    self._process.start()
    self.last = None

  def __call__(self):
    self._connection.send(True)
    self.last = self._connection.recv()
    return self.last

  def rss_mib(self):
    """The process's current resident memory, MiB."""
    try:
      import psutil  # pylint: disable=g-import-not-at-top
      return psutil.Process(self._process.pid).memory_info().rss / 2**20
    except ImportError:
      return float('nan')

  def close(self):
    self._connection.send(False)
    self._process.join()


def measure(candidates, repeats):
  """A warm-up call of each candidate, then `repeats` alternating rounds.

  Returns (name -> seconds, name -> RSS in MiB after its warm-up).
  """
  memory = {}
  for name, run in candidates.items():  # compiles, caches, allocators
    run()
    memory[name] = run.rss_mib() if isinstance(run, Remote) else rss_mib()
  return alternate(candidates, repeats), memory


def compare_epochs(dataset, configs, repeats, title):
  """Times each config's compiled epoch, alternating, and prints a table.

  `configs`: name -> `TrainConfig`, the first the baseline the others are
  relative to. Prints `title`, then per config the median seconds per
  epoch with the spread, the ratio to the baseline, and the compile time.
  """
  candidates, compile_seconds = {}, {}
  for name, config in configs.items():
    candidates[name], compile_seconds[name] = compiled_epoch(dataset, config)
  times, _ = measure(candidates, repeats)
  base_name = next(iter(configs))
  base = statistics.median(times[base_name])
  width = max(map(len, configs)) + 1
  print(f'\n{title}:')
  print(f'{"":{width}} {"s/epoch (median, min-max)":34} {"of " + base_name:>16} '
        f'{"compile s":>10}')
  for name, seconds in times.items():
    print(f'{name:{width}} {summary(seconds):34} '
          f'{statistics.median(seconds) / base:15.2f}x {compile_seconds[name]:10.2f}')


def summary(seconds):
  """'median s (min-max)' of a list of seconds."""
  return (f'{statistics.median(seconds):.3f} s '
          f'({min(seconds):.3f}-{max(seconds):.3f}, n={len(seconds)})')


def rss_mib():
  """The process's current resident memory, MiB."""
  try:
    import psutil  # pylint: disable=g-import-not-at-top
    return psutil.Process().memory_info().rss / 2**20
  except ImportError:
    return float('nan')


def peak_rss_mib():
  """The process's peak resident memory so far, MiB (Linux reports KiB)."""
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return peak / 2**20 if sys.platform == 'darwin' else peak / 2**10


def device_memory_mib():
  """Peak device memory in use by JAX, MiB, where the backend reports it."""
  stats = jax.devices()[0].memory_stats() or {}
  peak = stats.get('peak_bytes_in_use')
  return None if peak is None else peak / 2**20


def mlp_vae_flops_per_example(data_dim, hidden_dims, latent_dim, num_samples=1):
  """Exact matmul FLOPs of one training example of the MLP VAE.

  Forward: 2 * in * out per Linear layer (the decoder once per sample).
  Backward: the weight gradient of every layer (2 * in * out) and the input
  gradient of every layer but the first (2 * in * out): the data needs none.
  """
  enc = [data_dim, *hidden_dims, 2 * latent_dim]
  dec = [latent_dim, *reversed(hidden_dims), data_dim]
  enc_macs = [a * b for a, b in zip(enc, enc[1:])]
  dec_macs = [a * b for a, b in zip(dec, dec[1:])]
  forward = 2 * (sum(enc_macs) + num_samples * sum(dec_macs))
  weight_grads = forward
  input_grads = forward - 2 * enc_macs[0]
  return forward + weight_grads + input_grads


def gemm_peak_gflops(size=2048, repeats=5):
  """float32 matmul GFLOP/s of a large square GEMM, best of JAX and PyTorch.

  Returns (best, {library: GFLOP/s}).
  """
  results = {}
  a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
  b = jax.random.normal(jax.random.key(1), (size, size), jnp.float32)
  matmul = jax.jit(jnp.matmul)
  matmul(a, b).block_until_ready()
  best = min(timed(lambda: matmul(a, b).block_until_ready()) for _ in range(repeats))
  results['jax'] = 2 * size**3 / best / 1e9
  if torch_installed():
    gemm = Remote(_torch_gemm_seconds, size, repeats)
    results['torch'] = 2 * size**3 / gemm() / 1e9
    gemm.close()
  return max(results.values()), results


def _torch_gemm_seconds(size, repeats):
  torch = torch_or_none()
  device = torch_device(torch)
  a = torch.randn(size, size, device=device)
  b = torch.randn(size, size, device=device)

  def gemm():
    torch.matmul(a, b)
    torch_synchronize(torch)

  gemm()
  return lambda: min(timed(gemm) for _ in range(repeats))


def machine():
  """One line describing the machine."""
  cpu = 'unknown CPU'
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          cpu = line.split(':', 1)[1].strip()
          break
  except OSError:
    pass
  devices = ', '.join(sorted({d.device_kind for d in jax.devices()}))
  return (f'{cpu}, {os.cpu_count()} cores; JAX {jax.__version__} on '
          f'{jax.default_backend()} ({devices})')
