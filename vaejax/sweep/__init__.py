"""Latent-size sweeps: one VAE per (latent_dim, seed), trained as one program.

A sweep of two-layer models may vary z_2's size at one size of z instead
(`top_latent_dims`); its members train one after another.

Vectorised (the default on GPU and TPU), the members train together: padded
to the largest latent size and masked (`padding`), stacked and sharded over
the devices, one compiled epoch for all (`vectorized`), through the same
epoch loop as a single run (`vaejax.loop`). Each member has its own folder
with the files of a train run (config.json, metrics.jsonl, checkpoints of
its unpadded state, results.json, images): a sweep resumes member by member,
`vectorize=False` trains the same folders one after another, and
`experiments.train` with a member's flags continues any member. `shard=(i,
n)` keeps every n-th member from the i-th, for independent jobs;
`summarize` merges the folders into results.csv, results.md and plots
(`summary`).

  members.py     the flags, the members and their configs
  padding.py     a member inside the padded model: embed, extract, mask
  vectorized.py  the members as one sharded program (a `loop.Trainer`)
  driver.py      `run`: the members, vectorised or one after another
  summary.py     results.csv, results.md and plots
"""

from vaejax.sweep.driver import run
from vaejax.sweep.members import Member
from vaejax.sweep.members import SWEEP_FILE
from vaejax.sweep.members import SweepFlags
from vaejax.sweep.members import member_config
from vaejax.sweep.members import members_of
from vaejax.sweep.members import parse_shard
from vaejax.sweep.members import vectorizes
from vaejax.sweep.members import with_preset_size
from vaejax.sweep.padding import MaskedLatents
from vaejax.sweep.padding import embed_latents
from vaejax.sweep.padding import extract_latents
from vaejax.sweep.summary import CSV_COLUMNS
from vaejax.sweep.summary import results_markdown
from vaejax.sweep.summary import summarize
from vaejax.sweep.vectorized import VectorizedMembers

__all__ = (
    'CSV_COLUMNS',
    'MaskedLatents',
    'Member',
    'SWEEP_FILE',
    'SweepFlags',
    'VectorizedMembers',
    'embed_latents',
    'extract_latents',
    'member_config',
    'members_of',
    'parse_shard',
    'results_markdown',
    'run',
    'summarize',
    'vectorizes',
    'with_preset_size',
)
