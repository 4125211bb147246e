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

__version__ = "0.1.0"

__all__ = (
    "DiagonalGaussian",
    "ElboTerms",
    "FullCovarianceGaussian",
    "LinearGaussian",
    "LinearGaussianChain",
    "LogDensities",
    "MixtureOfDiagonalGaussians",
    "StandardNormal",
    "bernoulli_log_prob",
    "diag_gaussian_kl",
    "elbo",
    "elbo_and_kl_per_layer",
    "gaussian_kl",
    "gaussian_kl_tril",
    "gaussian_log_prob",
    "iwae_bound",
    "kl_divergence",
    "log_densities",
    "log_importance_weights",
    "make_linear_gaussian",
    "make_linear_gaussian_chain",
    "negative_elbo",
    "negative_iwae_bound",
    "reparameterize",
    "standard_normal_kl",
)
