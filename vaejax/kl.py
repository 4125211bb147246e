"""Closed-form KL divergences between Gaussians, for one example at a time.

Every function here takes the parameters of ONE pair of distributions and
returns a scalar; batch them with `jax.vmap`. All are pure and work under
`jax.jit`, `jax.vmap` and `jax.grad`, in float32 and float64.

The derivation: for P = N(m_P, S_P) and Q = N(m_Q, S_Q) in d dimensions, the
trace trick E_P[x^T A x] = tr(A S_P) + m_P^T A m_P gives

  KL(P||Q) = 1/2 [tr(S_Q^-1 S_P) + (m_Q - m_P)^T S_Q^-1 (m_Q - m_P) - d
                  + log det S_Q - log det S_P].

With Cholesky factors S = L L^T every term is a triangular solve or a sum of
logs of a diagonal: tr(S_Q^-1 S_P) = ||L_Q^-1 L_P||_F^2,
(m_Q - m_P)^T S_Q^-1 (m_Q - m_P) = ||L_Q^-1 (m_Q - m_P)||^2 and
log det S = 2 sum_k log |L_kk|. No inverse or determinant is formed.
"""

import jax
import jax.numpy as jnp

from vaejax import checks
from vaejax import precision


@precision.highest
def gaussian_kl_tril(mean_p, scale_tril_p, mean_q, scale_tril_q):
  """KL(P||Q) between Gaussians given lower-triangular factors of the covariances.

  KL = 1/2 [||L_Q^-1 L_P||_F^2 + ||L_Q^-1 (m_Q - m_P)||^2 - d
            + 2 sum log |diag L_Q| - 2 sum log |diag L_P|].

  This is the form to use when a network predicts a full-covariance posterior
  through its Cholesky factor. Entries above the diagonal are ignored.

  Args:
    mean_p: `[D]` mean of P.
    scale_tril_p: `[D, D]` lower-triangular L_P with S_P = L_P L_P^T.
    mean_q: `[D]` mean of Q.
    scale_tril_q: `[D, D]` lower-triangular L_Q with S_Q = L_Q L_Q^T.

  Returns:
    The scalar KL(P||Q) in nats.
  """
  checks.one_example('gaussian_kl_tril',
                     (('mean_p', mean_p), ('mean_q', mean_q)),
                     (('scale_tril_p', scale_tril_p), ('scale_tril_q', scale_tril_q)))
  dim = mean_p.shape[-1]
  scale_tril_p = jnp.tril(scale_tril_p)
  scale_tril_q = jnp.tril(scale_tril_q)
  # L_Q^-1 L_P and L_Q^-1 (m_Q - m_P), by forward substitution.
  whitened_scale = jax.scipy.linalg.solve_triangular(
      scale_tril_q, scale_tril_p, lower=True)
  whitened_diff = jax.scipy.linalg.solve_triangular(
      scale_tril_q, mean_q - mean_p, lower=True)
  trace_term = jnp.sum(jnp.square(whitened_scale))
  mahalanobis = jnp.sum(jnp.square(whitened_diff))
  # 1/2 (log det S_Q - log det S_P) = sum log |diag L_Q| - sum log |diag L_P|.
  half_log_det_ratio = (
      jnp.sum(jnp.log(jnp.abs(jnp.diagonal(scale_tril_q))))
      - jnp.sum(jnp.log(jnp.abs(jnp.diagonal(scale_tril_p)))))
  return 0.5 * (trace_term + mahalanobis - dim) + half_log_det_ratio


@precision.highest
def gaussian_kl(mean_p, cov_p, mean_q, cov_q):
  """KL(P||Q) between full-covariance Gaussians P = N(m_P, S_P), Q = N(m_Q, S_Q).

  KL = 1/2 [tr(S_Q^-1 S_P) + (m_Q - m_P)^T S_Q^-1 (m_Q - m_P) - d
            + log det S_Q - log det S_P],

  evaluated from the Cholesky factors of S_P and S_Q (see `gaussian_kl_tril`).
  A covariance that is not symmetric positive definite has no Cholesky factor
  and gives NaN.

  Args:
    mean_p: `[D]` mean of P.
    cov_p: `[D, D]` covariance of P, symmetric positive definite.
    mean_q: `[D]` mean of Q.
    cov_q: `[D, D]` covariance of Q, symmetric positive definite.

  Returns:
    The scalar KL(P||Q) in nats.
  """
  checks.one_example('gaussian_kl', (('mean_p', mean_p), ('mean_q', mean_q)),
                     (('cov_p', cov_p), ('cov_q', cov_q)))
  return gaussian_kl_tril(mean_p, jnp.linalg.cholesky(cov_p),
                          mean_q, jnp.linalg.cholesky(cov_q))


def diag_gaussian_kl(mean_p, log_var_p, mean_q, log_var_q):
  """KL(P||Q) between diagonal Gaussians given their log-variances.

  With S = diag(exp(log_var)) the determinant is the product of the diagonal,
  and the general formula becomes, with r_k = log_var_p,k - log_var_q,k,

    KL = 1/2 sum_k [exp(r_k) - 1 - r_k + (m_q,k - m_p,k)^2 exp(-log_var_q,k)],

  where exp(r) - 1 - r is evaluated as expm1(r) - r, exact near r = 0.

  Args:
    mean_p: `[D]` mean of P.
    log_var_p: `[D]` log-variances of P.
    mean_q: `[D]` mean of Q.
    log_var_q: `[D]` log-variances of Q.

  Returns:
    The scalar KL(P||Q) in nats.
  """
  checks.one_example('diag_gaussian_kl', (
      ('mean_p', mean_p), ('log_var_p', log_var_p), ('mean_q', mean_q),
      ('log_var_q', log_var_q)))
  log_ratio = log_var_p - log_var_q
  scaled_diff = (mean_q - mean_p) * jnp.exp(-0.5 * log_var_q)
  return 0.5 * jnp.sum(jnp.expm1(log_ratio) - log_ratio + jnp.square(scaled_diff))


def standard_normal_kl(mean, log_var):
  """KL(N(mean, diag(exp(log_var))) || N(0, I)), the VAE's prior term.

    KL = 1/2 sum_k (exp(log_var_k) + mean_k^2 - 1 - log_var_k),

  with exp(v) - 1 evaluated as expm1(v): exactly 0 at mean = 0, log_var = 0,
  and finite with a finite gradient for log_var in [-80, 80] in float32.

  Args:
    mean: `[D]` posterior mean.
    log_var: `[D]` posterior log-variance.

  Returns:
    The scalar KL in nats.
  """
  checks.one_example('standard_normal_kl', (('mean', mean), ('log_var', log_var)))
  return 0.5 * jnp.sum(jnp.expm1(log_var) - log_var + jnp.square(mean))
