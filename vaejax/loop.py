"""The one epoch loop: train, check, evaluate, record, checkpoint; then finish.

A single run and a sweep's vectorised members differ in what they train, not
in how epochs, checkpoints and the final evaluation follow each other: both
implement `Trainer` for a list of members (one, for a single run), each with
its `rundir.RunDir`, and `run_epochs` then `finish` drive them.
"""

import dataclasses
import sys
import time
from typing import Protocol

import numpy as np
import tqdm

from vaejax import evaluation
from vaejax import files
from vaejax import rundir


class Trainer(Protocol):
  """Members trained together; every list holds one entry per member, in order."""
  configs: list
  steps_per_epoch: int
  compile_seconds: float
  test_inputs: np.ndarray  # the test split as model inputs, on the host

  def train_epoch(self, epoch: int) -> list:
    """Trains epoch `epoch` (0-based); each member's {'loss', 'finite'} `[steps]`, host."""

  def evaluate(self, split: str) -> list:
    """Each member's mean `ElboTerms` on 'valid' or 'test', host."""

  def states(self) -> list:
    """Each member's {'params', 'opt_state'} in its own shapes, to checkpoint."""

  def final_evaluation(self) -> list:
    """Each member's `evaluation.make_final_evaluation` figures, host arrays."""

  def models(self) -> list:
    """Each member's model in its own shapes, for its images."""

  def set_states(self, states: list):
    """Replaces each member's state, given in its own shapes."""


@dataclasses.dataclass
class Progress:
  """A tqdm bar on stderr when it is a terminal; a printed line per epoch."""
  num_epochs: int
  start_epoch: int
  enabled: bool = True

  def __post_init__(self):
    enabled = self.enabled and sys.stderr.isatty() and files.is_primary()
    self.bar = tqdm.tqdm(total=self.num_epochs, initial=self.start_epoch,
                         unit='epoch', file=sys.stderr, disable=not enabled,
                         dynamic_ncols=True)

  def update(self, configs, records):
    """Reports an epoch: one member's figures, or every member's test ELBO."""
    first = records[0]
    self.bar.set_postfix(loss=f'{first["train_loss"]:.2f}',
                         valid_elbo=f'{first["valid_elbo"]:.2f}')
    self.bar.update(1)
    head = f'epoch {first["epoch"]}/{self.num_epochs}  '
    if len(records) == 1:
      self.write(head + f'train_loss {first["train_loss"]:.3f}  '
                 f'valid_elbo {first["valid_elbo"]:.3f}  '
                 f'test_elbo {first["test_elbo"]:.3f}  '
                 f'{first["epoch_seconds"]:.2f} s '
                 f'({first["examples_per_second"]:,.0f} examples/s)')
      return
    elbos = ', '.join(f'{c.latent_dim}: {r["test_elbo"]:.2f}'
                      for c, r in zip(configs, records))
    rate = len(records) * first['examples_per_second']
    self.write(head + f'{first["epoch_seconds"]:.2f} s ({rate:,.0f} '
               f'member-examples/s)  test ELBO by latent_dim {{{elbos}}}')

  def write(self, line):
    if not files.is_primary():
      return
    if self.bar.disable:
      print(line, flush=True)
    else:
      tqdm.tqdm.write(line, file=sys.stderr)

  def close(self):
    self.bar.close()


def run_epochs(trainer, run_dirs, start_epoch, progress):
  """Trains `trainer`'s members from `start_epoch` to their `num_epochs`.

  After each epoch: a non-finite step stops the run (`rundir.check_finite`),
  then each member's validation and test ELBO are recorded in its
  metrics.jsonl and its state is checkpointed (`rundir.RunDir.end_epoch`).
  """
  configs = trainer.configs
  for epoch in range(start_epoch, configs[0].num_epochs):
    start = time.perf_counter()
    stats = trainer.train_epoch(epoch)
    epoch_seconds = time.perf_counter() - start
    for config, run_dir, member_stats in zip(configs, run_dirs, stats):
      where = f' in member {run_dir.name}' if len(configs) > 1 else ''
      rundir.check_finite(member_stats, epoch, where,
                          config.skip_nonfinite_updates, run_dir.latest_epoch())
    valid, test = trainer.evaluate('valid'), trainer.evaluate('test')
    records = [
        rundir.epoch_record(config, epoch, member_stats, epoch_seconds,
                            valid_terms, test_terms, trainer.steps_per_epoch)
        for config, member_stats, valid_terms, test_terms
        in zip(configs, stats, valid, test)]
    for run_dir, record, state in zip(run_dirs, records, trainer.states()):
      run_dir.end_epoch(record, state)
    progress.update(configs, records)


def finish(trainer, run_dirs, dataset, samples_keys):
  """The final evaluation of every member: results.json and images.

  Args:
    trainer: the trained `Trainer`.
    run_dirs: the members' `RunDir`s.
    dataset: the loaded `data.Dataset` (its test split and true NLL, if any).
    samples_keys: each member's key of the prior draws of samples.png.

  Returns:
    Each member's results dict, as written to its results.json.
  """
  all_results = []
  states = trainer.states()
  chosen = [d.final_params(s) for d, s in zip(run_dirs, states)]
  if any(c.final_model != 'last' for c in trainer.configs):
    trainer.set_states([{**s, 'params': params}
                        for s, (_, params) in zip(states, chosen)])
  finals = trainer.final_evaluation()
  models = trainer.models()
  spec = trainer.configs[0].spec
  if spec.pixels == 'real':
    value_range = (float(dataset.test.min()), float(dataset.test.max()))
  else:
    value_range = (0.0, 1.0)
  test_x = trainer.test_inputs
  for config, run_dir, final, model, key, (epoch, _) in zip(
      trainer.configs, run_dirs, finals, models, samples_keys, chosen):
    results = evaluation.results_of(config, final, dataset.test_log_marginal)
    results['final_epoch'] = epoch
    results['compile_seconds'] = trainer.compile_seconds
    results['train_seconds'] = sum(r['epoch_seconds'] for r in run_dir.metrics())
    if files.is_primary():
      evaluation.save_images(run_dir.path, model, test_x, key,
                             config.latent_dim, value_range)
    run_dir.write_results(results)
    all_results.append(results)
  return all_results


def results_line(results):
  """The final figures of a run in one line."""
  return (f'test ELBO {results["test_elbo"]:.3f} nats, test NLL (IWAE, '
          f'K={results["iwae_samples"]}) {results["test_nll_iwae"]:.3f} nats, '
          f'active units {_active_units(results)}')


def _active_units(results):
  """'a/L', or per layer 'a1/L1, a2/L2 (by layer)' for two stochastic layers."""
  per_layer = results.get('active_units_per_layer')
  if not per_layer:
    return f'{results["active_units"]}/{results["latent_dim"]}'
  sizes = (results['latent_dim'], results['top_latent_dim'])
  return ', '.join(f'{a}/{n}' for a, n in zip(per_layer, sizes)) + ' (by layer)'
