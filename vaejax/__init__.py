"""vaejax: variational autoencoders in JAX and Flax NNX."""

from vaejax import distributions  # noqa: F401  (the module, vaejax.distributions)
from vaejax import bounds  # noqa: F401  (the module, vaejax.bounds)
from vaejax.distributions import DiagonalGaussian
from vaejax.distributions import FullCovarianceGaussian
from vaejax.distributions import MixtureOfDiagonalGaussians
from vaejax.distributions import StandardNormal
from vaejax.distributions import kl_divergence
from vaejax.bounds import ElboTerms
from vaejax.bounds import elbo
from vaejax.bounds import elbo_and_kl_per_layer
from vaejax.bounds import iwae_bound
from vaejax.bounds import log_importance_weights
from vaejax.bounds import negative_elbo
from vaejax.bounds import negative_iwae_bound
from vaejax.bounds import reparameterize
from vaejax.densities import LogDensities
from vaejax.densities import log_densities
from vaejax.estimators import ciwae_bound
from vaejax.estimators import elbo_surrogate
from vaejax.estimators import iwae_surrogate
from vaejax.estimators import miwae_bound
from vaejax.estimators import piwae_surrogate
from vaejax.flows import InverseAutoregressiveFlow
from vaejax.flows import PlanarFlow
from vaejax.inference import Samples
from vaejax.inference import decode
from vaejax.inference import encode
from vaejax.inference import encode_arrays
from vaejax.inference import interpolate
from vaejax.inference import log_prob
from vaejax.inference import reconstruct
from vaejax.inference import sample
from vaejax.inference import traverse
from vaejax.kl import diag_gaussian_kl
from vaejax.kl import gaussian_kl
from vaejax.kl import gaussian_kl_tril
from vaejax.kl import standard_normal_kl
from vaejax.likelihoods import bernoulli_log_prob
from vaejax.likelihoods import gaussian_log_prob
from vaejax.linear_gaussian import LinearGaussian
from vaejax.linear_gaussian import LinearGaussianChain
from vaejax.linear_gaussian import make_linear_gaussian
from vaejax.linear_gaussian import make_linear_gaussian_chain
from vaejax.runs import LoadedRun
from vaejax.runs import load_run

__version__ = "0.1.0"

__all__ = (
    "DiagonalGaussian",
    "ElboTerms",
    "FullCovarianceGaussian",
    "InverseAutoregressiveFlow",
    "LinearGaussian",
    "LinearGaussianChain",
    "LoadedRun",
    "LogDensities",
    "MixtureOfDiagonalGaussians",
    "PlanarFlow",
    "Samples",
    "StandardNormal",
    "bernoulli_log_prob",
    "ciwae_bound",
    "decode",
    "diag_gaussian_kl",
    "elbo",
    "elbo_and_kl_per_layer",
    "elbo_surrogate",
    "encode",
    "encode_arrays",
    "gaussian_kl",
    "gaussian_kl_tril",
    "gaussian_log_prob",
    "interpolate",
    "iwae_bound",
    "iwae_surrogate",
    "kl_divergence",
    "load_run",
    "log_densities",
    "log_importance_weights",
    "log_prob",
    "make_linear_gaussian",
    "make_linear_gaussian_chain",
    "miwae_bound",
    "negative_elbo",
    "negative_iwae_bound",
    "piwae_surrogate",
    "reconstruct",
    "reparameterize",
    "sample",
    "standard_normal_kl",
    "traverse",
)
