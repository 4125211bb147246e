r"""The training epoch of each posterior and prior family, side by side.

  python -m benchmarks.families --tfds_manual_dir=../shared/data

The Flax example's model (784-500-L MLP, ReLU, Bernoulli pixels, Adam 1e-3,
batch 128) on binarized MNIST, one compiled epoch (vaejax.step) at a time,
at latent sizes 20 and 200, with:

  diagonal        q = N(mean, diag(exp(log_var))), p = N(0, I) (the default);
  full_covariance q = N(mean, L L^T): L (L + 3) / 2 encoder outputs and O(L^3)
                  per example for the KL's triangular factors;
  learned_prior   a diagonal prior with learned mean and log-variance;
  vamp            the VampPrior with 500 pseudo-inputs (sampled KL): the
                  encoder also runs on the 500 pseudo-inputs every step
                  (at latent size 20 only, unless --vamp_latent_dims says);
  planar          the diagonal Gaussian through 10 planar maps (sampled KL);
  iaf             through 2 IAF steps, MADEs 320-320, context 32 (sampled
                  KL); the flows at latent size 20 only, unless
                  --flow_latent_dims says.

They alternate epoch by epoch for --repeats rounds after a warm-up epoch
each; the script prints the median seconds per epoch, the spread and each
family's time relative to the diagonal posterior of the same latent size.
"""

from absl import app
from absl import flags

from benchmarks import common

common.define_data_flags()
flags.DEFINE_integer('repeats', 3, 'Timed epochs per family.')
flags.DEFINE_list('latent_dims', ['20', '200'], 'Latent sizes.')
flags.DEFINE_list('vamp_latent_dims', ['20'], 'Latent sizes that also time the '
                  'VampPrior (at 200 its epoch takes about 100 s here).')
flags.DEFINE_list('flow_latent_dims', ['20'], 'Latent sizes that also time the '
                  'flows.')
FLAGS = flags.FLAGS

FAMILIES = {
    'diagonal': {},
    'full_covariance': dict(posterior='full_covariance'),
    'learned_prior': dict(prior='learned_diagonal'),
    'vamp': dict(prior='vamp', vamp_components=500, analytic_kl=False),
    'planar': dict(posterior='planar', flow_steps=10, analytic_kl=False),
    'iaf': dict(posterior='iaf', flow_steps=2, analytic_kl=False),
}
# Each family timed only at the latent sizes its flag names.
ONLY_AT = {'vamp': 'vamp_latent_dims', 'planar': 'flow_latent_dims',
           'iaf': 'flow_latent_dims'}


def main(argv):
  del argv
  dataset = common.setup()
  for latent_dim in map(int, FLAGS.latent_dims):
    configs = {
        name: common.flax_example_config(latent_dim=latent_dim, **overrides)
        for name, overrides in FAMILIES.items()
        if name not in ONLY_AT or str(latent_dim) in FLAGS[ONLY_AT[name]].value}
    common.compare_epochs(dataset, configs, FLAGS.repeats,
                          f'latent size {latent_dim}')


if __name__ == '__main__':
  app.run(main)
