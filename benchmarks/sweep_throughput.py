r"""A latent-size sweep: its members trained as one program or one by one.

  python -m benchmarks.sweep_throughput --tfds_manual_dir=../shared/data

The Flax example's model and training (784-500-z MLP, ReLU, Bernoulli
pixels, Adam 1e-3, batch 128) on binarized MNIST, one seed, at each of
--latent_dims, one epoch at a time:

  vectorized  vaejax.sweep.VectorizedMembers: the members padded to the
              largest latent size, stacked, one jit program vmapping the
              compiled epoch over them (what `experiments.sweep` runs);
  sequential  each member's own compiled epoch (vaejax.train's, what
              `experiments.sweep --vectorize=false` runs), one after another.

The two alternate for --repeats rounds after one warm-up epoch each; the
script prints seconds per sweep epoch, member-examples per second, GFLOP/s
from the exact matmul count (the members' own, and what the padding adds),
the ratio, compile times and memory.
"""

from absl import app
from absl import flags
import jax
import numpy as np

from benchmarks import common
from vaejax import step as step_lib
from vaejax import sweep
from vaejax import train

common.define_data_flags()
flags.DEFINE_list('latent_dims', ['2', '5', '10', '20', '50', '200'],
                  'The members\' latent sizes.')
flags.DEFINE_integer('repeats', 3, 'Timed sweep epochs per implementation.')
FLAGS = flags.FLAGS


def vectorized(dataset, configs):
  """All members as one program; returns (run one epoch, compile seconds)."""
  steps = step_lib.steps_per_epoch(len(dataset.train), configs[0].batch_size)
  states = [jax.tree.map(np.asarray, train.initial_state(c, steps)[2])
            for c in configs]
  members = sweep.VectorizedMembers(configs, states, dataset)
  epoch = iter(range(1 << 30))
  return lambda: members.train_epoch(next(epoch)), members.compile_seconds


def sequential(dataset, configs):
  """Each member's compiled epoch in turn; returns (run, compile seconds)."""
  runs, compile_seconds = zip(*[common.compiled_epoch(dataset, c)
                                for c in configs])

  def run():
    for member_run in runs:
      member_run()

  return run, sum(compile_seconds)


def main(argv):
  del argv
  dataset = common.setup()
  latent_dims = [int(z) for z in FLAGS.latent_dims]
  configs = [common.flax_example_config(latent_dim=z) for z in latent_dims]
  base = configs[0]
  steps = len(dataset.train) // base.batch_size
  examples = steps * base.batch_size * len(configs)
  flop_count = lambda z: common.mlp_vae_flops_per_example(
      784, base.hidden_dims, z) * steps * base.batch_size
  flops = sum(flop_count(z) for z in latent_dims)
  padded_flops = len(latent_dims) * flop_count(max(latent_dims))
  peak, _ = common.gemm_peak_gflops()
  print(f'{len(configs)} members, latent_dims {latent_dims}, seed 0; one '
        f'epoch: {examples:,} member-examples, {flops / 1e9:.1f} GFLOP of '
        f'matmuls ({padded_flops / 1e9:.1f} padded to latent_dim '
        f'{max(latent_dims)}); float32 GEMM peak {peak:.1f} GFLOP/s')

  candidates, compile_seconds = {}, {}
  candidates['vectorized'], compile_seconds['vectorized'] = vectorized(
      dataset, configs)
  candidates['sequential'], compile_seconds['sequential'] = sequential(
      dataset, configs)
  times, memory = common.measure(candidates, FLAGS.repeats)

  base_time = np.median(times['vectorized'])
  print(f'\n{"":10} {"s/sweep epoch (median, min-max)":34} '
        f'{"member-ex/s":>12} {"GFLOP/s":>8} {"of peak":>8} '
        f'{"time vs vectorized":>19} {"compile s":>10} {"RSS MiB":>8}')
  for name, seconds in times.items():
    median = float(np.median(seconds))
    print(f'{name:10} {common.summary(seconds):34} {examples / median:12,.0f} '
          f'{flops / median / 1e9:8.1f} {flops / median / 1e9 / peak:8.0%} '
          f'{median / base_time:18.2f}x {compile_seconds[name]:10.2f} '
          f'{memory[name]:8.0f}')
  print('\nGFLOP/s counts each member\'s own matmuls, not the padding; '
        f'process peak RSS {common.peak_rss_mib():.0f} MiB'
        + (f', device peak {common.device_memory_mib():.0f} MiB'
           if common.device_memory_mib() is not None else ''))


if __name__ == '__main__':
  app.run(main)
