# vaejax: `make install` sets up .venv; `make test` runs the suite (installing
# first when .venv is missing or older than pyproject.toml).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# Test processes (pytest-xdist), one per core: each compiles on its own core
# (on 2 cores, 3 workers were slower than 2).
PYTEST_WORKERS ?= $(shell nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null || echo 2)
# Offline copies of the TFDS download files, one folder per dataset; empty to
# let TFDS download.
TFDS_MANUAL_DIR ?= $(if $(wildcard ../shared/data),../shared/data,)
WORKDIR ?= runs/flax_example
SWEEP_WORKDIR ?= runs/sweep
SWEEP_FLAGS ?= --latent_dims=2,5,10,20,50,200 --seeds=0,1,2 --eval_iwae_samples=100

# Reproductions of published results (docs/results.md): each target runs a
# preset of experiments/flags/ at the paper's budget; extra flags, e.g.
# --num_epochs=40 for a reduced budget, go in KW_FLAGS, BURDA_FLAGS and
# PYTHAE_FLAGS.
RESULTS_DIR ?= runs/results
KW_FLAGS ?=
BURDA_FLAGS ?=
PYTHAE_FLAGS ?=
FAMILY_FLAGS ?= --num_epochs=10 --eval_iwae_samples=100
FLOW_FLAGS ?= --num_epochs=10
MANUAL_DIR_FLAG = $(if $(TFDS_MANUAL_DIR),--tfds_manual_dir=$(TFDS_MANUAL_DIR))

.PHONY: install test train sweep bench snr clean kingma_welling kingma_welling_frey burda burda_ablation burda_two_layer burda_two_layer_ablation burda_estimators pythae families flows

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --editable '.[dev]'
	touch $(STAMP)

# float32 suite, then the float64 numerics in their own process.
test: $(STAMP)
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadscope --no-loadscope-reorder $(PYTEST_ARGS)
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --x64 $(PYTEST_ARGS)

# The Flax example's setup on binarized MNIST, 10 epochs; resumes if rerun.
train: $(STAMP)
	$(BIN)/python -m experiments.train \
	  --flagfile=experiments/flags/flax_example.flags --workdir=$(WORKDIR) \
	  $(if $(TFDS_MANUAL_DIR),--tfds_manual_dir=$(TFDS_MANUAL_DIR))

# The main job: the Flax example's model at six latent sizes and three seeds;
# results.md and plots in SWEEP_WORKDIR.
sweep: $(STAMP)
	$(BIN)/python -m experiments.sweep \
	  --flagfile=experiments/flags/flax_example.flags \
	  --workdir=$(SWEEP_WORKDIR) $(SWEEP_FLAGS) \
	  $(if $(TFDS_MANUAL_DIR),--tfds_manual_dir=$(TFDS_MANUAL_DIR))

# Benchmarks: figures printed, alternatives measured in the same run. The
# bench extra (torch, the PyTorch baseline) is installed first, once.
BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet --editable '.[dev,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m benchmarks.train_throughput \
	  $(if $(TFDS_MANUAL_DIR),--tfds_manual_dir=$(TFDS_MANUAL_DIR))
	$(BIN)/python -m benchmarks.sweep_throughput \
	  $(if $(TFDS_MANUAL_DIR),--tfds_manual_dir=$(TFDS_MANUAL_DIR))
	$(BIN)/python -m benchmarks.iwae_eval --num_samples=1000 --num_examples=10000 \
	  --repeats=2 $(if $(TFDS_MANUAL_DIR),--tfds_manual_dir=$(TFDS_MANUAL_DIR))
	$(BIN)/python -m benchmarks.families \
	  $(if $(TFDS_MANUAL_DIR),--tfds_manual_dir=$(TFDS_MANUAL_DIR))
	$(BIN)/python -m benchmarks.two_layer \
	  $(if $(TFDS_MANUAL_DIR),--tfds_manual_dir=$(TFDS_MANUAL_DIR))
	$(BIN)/python -m benchmarks.estimators \
	  $(if $(TFDS_MANUAL_DIR),--tfds_manual_dir=$(TFDS_MANUAL_DIR))

# The gradients' signal-to-noise ratio against K for each estimator
# (docs/snr.png, docs/results.md).
snr: $(STAMP)
	$(BIN)/python -m benchmarks.snr $(MANUAL_DIR_FLAG)

# Kingma & Welling (2013), Figure 2: a sweep over latent sizes 3 to 200.
kingma_welling: $(STAMP)
	$(BIN)/python -m experiments.sweep \
	  --flagfile=experiments/flags/kingma_welling_fig2.flags \
	  --workdir=$(RESULTS_DIR)/kingma_welling $(MANUAL_DIR_FLAG) $(KW_FLAGS)

# Kingma & Welling (2013), Figure 2 (Frey Face) and Figure 4(a): a sweep over
# latent sizes 2 to 20 with the Gaussian decoder.
kingma_welling_frey: $(STAMP)
	$(BIN)/python -m experiments.sweep \
	  --flagfile=experiments/flags/kingma_welling_frey.flags \
	  --workdir=$(RESULTS_DIR)/kingma_welling_frey $(MANUAL_DIR_FLAG) $(KW_FLAGS)

# Burda et al. (2015), Table 1: VAE and IWAE at K = 1, 5, 50, one run each;
# burda_rows runs the six from preset $(1) into $(RESULTS_DIR)/$(2)_<objective>_k<K>.
define burda_rows
for objective in 'elbo --noanalytic_kl' iwae; do for k in 1 5 50; do \
  $(BIN)/python -m experiments.train \
    --flagfile=experiments/flags/$(1).flags \
    --objective=$$objective --num_samples=$$k \
    --workdir=$(RESULTS_DIR)/$(2)_$${objective%% *}_k$$k \
    $(MANUAL_DIR_FLAG) $(BURDA_FLAGS) || exit 1; \
done; done
endef

burda: $(STAMP)
	$(call burda_rows,burda_table1,burda)

# Burda et al.'s protocol one change at a time (docs/results.md): 40 epochs
# from the earlier protocol (BURDA_BEFORE) with one flag of the reference
# code's changed, then the preset as it is, and the preset with optax's Adam;
# and a table of them all. burda_ablation_runs takes the preset $(1), the
# objective's flags $(2) and the folder $(3) that gets one run per change.
BURDA_BEFORE := --num_validation=10000 --output_bias=zero --adam_b1=0.9 \
  --adam_eps=1e-4 --adam_variant=standard
BURDA_ABLATION_FLAGS ?= --num_epochs=40 --eval_iwae_samples=1000
burda_ablation_train = $(BIN)/python -m experiments.train \
  --flagfile=experiments/flags/$(1).flags $(2) $(MANUAL_DIR_FLAG) $(BURDA_ABLATION_FLAGS)
define burda_ablation_runs
for change in before num_validation=400 output_bias=data_mean adam_b1=0.99 \
    adam_eps=5e-6 adam_variant=iwae_code; do \
  $(call burda_ablation_train,$(1),$(2)) \
    $(BURDA_BEFORE) $$(test $$change = before || echo --$$change) \
    --workdir=$(3)/$$(echo $$change | tr = _) || exit 1; \
done
$(call burda_ablation_train,$(1),$(2)) --workdir=$(3)/preset
$(call burda_ablation_train,$(1),$(2)) --adam_variant=standard --adam_eps=5e-6 \
  --workdir=$(3)/preset_with_optax_adam
$(BIN)/python -m experiments.compare --output_dir=$(3) \
  --workdirs=$$(ls -d $(3)/*/ | paste -sd, -)
endef

# The one-layer IWAE at K = 5, into $(RESULTS_DIR)/burda_ablation/<change>.
burda_ablation: $(STAMP)
	$(call burda_ablation_runs,burda_table1,--objective=iwae --num_samples=5,$(RESULTS_DIR)/burda_ablation)

# The two-layer model at K = 1 (where VAE and IWAE coincide), into
# $(RESULTS_DIR)/burda_two_layer_ablation/<change>.
burda_two_layer_ablation: $(STAMP)
	$(call burda_ablation_runs,burda_table1_two_layer,--objective=iwae --num_samples=1,$(RESULTS_DIR)/burda_two_layer_ablation)

# Gradient estimators and Rainforth et al.'s bounds on Burda et al.'s
# one-layer preset (docs/results.md), into $(RESULTS_DIR)/burda_estimators/
# <run>: the IWAE at K = 5 and 50 with each estimator, MIWAE and PIWAE at
# M = 8, K = 8 and CIWAE at beta = 0.05 over the same 64 draws; then a table
# of them all. ESTIMATOR_FLAGS sets the budget.
ESTIMATOR_FLAGS ?= --num_epochs=40
ESTIMATOR_RUNS := \
  'iwae_k5 --objective=iwae --num_samples=5' \
  'iwae_k5_stl --objective=iwae --num_samples=5 --gradient_estimator=stl' \
  'iwae_k5_dreg --objective=iwae --num_samples=5 --gradient_estimator=dreg' \
  'iwae_k50_stl --objective=iwae --num_samples=50 --gradient_estimator=stl' \
  'iwae_k50_dreg --objective=iwae --num_samples=50 --gradient_estimator=dreg' \
  'iwae_k50 --objective=iwae --num_samples=50' \
  'miwae_m8_k8 --objective=miwae --num_groups=8 --num_samples=8' \
  'ciwae_k64 --objective=ciwae --ciwae_beta=0.05 --num_samples=64' \
  'piwae_m8_k8 --objective=piwae --num_groups=8 --num_samples=8'

burda_estimators: $(STAMP)
	for run in $(ESTIMATOR_RUNS); do \
	  $(BIN)/python -m experiments.train \
	    --flagfile=experiments/flags/burda_table1.flags $${run#* } \
	    --workdir=$(RESULTS_DIR)/burda_estimators/$${run%% *} --noprogress \
	    $(MANUAL_DIR_FLAG) $(ESTIMATOR_FLAGS) || exit 1; \
	done
	$(BIN)/python -m experiments.compare --output_dir=$(RESULTS_DIR)/burda_estimators \
	  --workdirs=$$(ls -d $(RESULTS_DIR)/burda_estimators/*/ | paste -sd, -)

# The same six rows with two stochastic layers (burda_table1_two_layer.flags).
burda_two_layer: $(STAMP)
	$(call burda_rows,burda_table1_two_layer,burda_two_layer)

# pythae's VAE benchmark on statically binarized MNIST; then the test NLL as
# pythae estimates it (the mean of five K = 200 estimates), beside
# results.json's K = 5000.
pythae: $(STAMP)
	$(BIN)/python -m experiments.train \
	  --flagfile=experiments/flags/pythae_binarized_mnist.flags \
	  --workdir=$(RESULTS_DIR)/pythae_binarized_mnist $(MANUAL_DIR_FLAG) \
	  $(PYTHAE_FLAGS)
	$(BIN)/python -m experiments.evaluate \
	  --workdir=$(RESULTS_DIR)/pythae_binarized_mnist --iwae_samples=200 --repeats=5

# Posterior and prior families (docs/results.md): exact answers on the
# correlated linear-Gaussian data, then the Flax example's model on binarized
# MNIST with each posterior and prior at the same budget (FAMILY_FLAGS).
families: $(STAMP)
	$(BIN)/python -m experiments.linear_gaussian_families \
	  --workdir=$(RESULTS_DIR)/families_exact
	for family in '--posterior=diagonal' '--posterior=diagonal --noanalytic_kl' \
	    '--prior=learned_diagonal' '--prior=vamp --noanalytic_kl' \
	    '--posterior=full_covariance' \
	    '--posterior=full_covariance --prior=learned_diagonal'; do \
	  name=$$(echo $$family | tr -d '-' | tr ' =' '__'); \
	  $(BIN)/python -m experiments.train \
	    --flagfile=experiments/flags/flax_example.flags $$family \
	    --workdir=$(RESULTS_DIR)/families_mnist/$$name \
	    $(MANUAL_DIR_FLAG) $(FAMILY_FLAGS) || exit 1; \
	done
	$(BIN)/python -m experiments.compare --output_dir=$(RESULTS_DIR)/families_mnist \
	  --workdirs=$$(ls -d $(RESULTS_DIR)/families_mnist/*/ | paste -sd, -)

# The flow posteriors beside the Gaussians on the Flax example's model, at
# equal epochs (docs/results.md), and the exact-families experiment with
# them; FLOW_FLAGS for another budget.
flows: $(STAMP)
	for family in '--posterior=diagonal' '--posterior=full_covariance' \
	    '--posterior=planar --flow_steps=10 --noanalytic_kl' \
	    '--posterior=iaf --flow_steps=2 --noanalytic_kl'; do \
	  name=$$(echo $$family | cut -d' ' -f1-2 | tr -d '-' | tr ' =' '__'); \
	  $(BIN)/python -m experiments.train \
	    --flagfile=experiments/flags/flax_example.flags $$family \
	    --workdir=$(RESULTS_DIR)/flows_mnist/$$name --noprogress \
	    $(MANUAL_DIR_FLAG) $(FLOW_FLAGS) || exit 1; \
	done
	$(BIN)/python -m experiments.compare --output_dir=$(RESULTS_DIR)/flows_mnist \
	  --workdirs=$$(ls -d $(RESULTS_DIR)/flows_mnist/*/ | paste -sd, -)
	$(BIN)/python -m experiments.linear_gaussian_families \
	  --workdir=$(RESULTS_DIR)/flows_exact

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
