// The long double oracle of the fuzz targets: the softmax family and cross-entropy computed the
// obvious way, one distribution at a time, and the accuracy budgets they are held to.
//
// The formulas and budgets are those of tests/reference.hpp (softmax family) and
// tests/ce_reference.hpp (cross-entropy), which are the only place the budgets are stated; they
// are restated here because those headers are Catch2 test headers (they register a listener and
// need a test main), while a fuzz target must build without Catch. Differences, all because the
// fuzzer feeds inputs the unit tests never do:
//   * sums keep infinities apart from the compensated finite part (Neumaier's compensation turns
//     inf - inf into NaN), so that a reference with an infinite input follows IEEE arithmetic;
//   * the cross-entropy of a fully masked row (every logit -inf) is the sum of its terms under
//     the oracle's own convention "a term with w_c q_c = 0 is 0": +inf when some w_c q_c > 0, else
//     0 (ce_reference.hpp returns +inf whatever the weights, as its inputs never have zeros there).
#pragma once

#include "fuzz_common.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace smax_fuzz::ref {

inline constexpr ld inf = std::numeric_limits<ld>::infinity();
inline constexpr ld nan = std::numeric_limits<ld>::quiet_NaN();

// ---- budgets (tests/reference.hpp and tests/ce_reference.hpp) -----------------------------------

template <class T>
constexpr ld base_ulps = sizeof(T) == 4 ? 8 : 16;
template <class T>
constexpr ld underflow_arg = sizeof(T) == 4 ? 104 : 746;
template <class T>
constexpr ld eps = std::numeric_limits<T>::epsilon();
template <class T>
constexpr ld denorm = std::numeric_limits<T>::denorm_min();
inline constexpr ld backward_eps = 16;
template <class T>
constexpr ld loss_rtol = sizeof(T) == 4 ? 1e-5L : 1e-12L;
inline constexpr ld grad_eps = 32;
inline constexpr ld loss_floor_eps = 8;

/// softmax: (b + log2 K + min(|x_j - max|, C)) ulp(exact); 0 for masked or poisoned entries.
template <class T>
ld softmax_budget_ulps(Index k, ld d) {
  if (std::isnan(d) || std::isinf(d)) return 0;
  return base_ulps<T> + std::log2(static_cast<ld>(k)) + std::min(std::fabs(d), underflow_arg<T>);
}

/// The spacing of T at the exact value v (the smallest subnormal for subnormal v or 0).
template <class T>
ld ulp(ld v) {
  v = std::fabs(v);
  if (!(v >= std::numeric_limits<T>::min())) return denorm<T>;
  int e = 0;
  std::frexp(v, &e);
  return std::ldexp(1.0L, e - std::numeric_limits<T>::digits);
}

// ---- sums ---------------------------------------------------------------------------------------

/// Neumaier's compensated sum of the finite terms; infinite and NaN terms are kept apart and
/// decide the result as IEEE addition would (NaN for NaN or for +inf and -inf together).
class exact_sum {
 public:
  void add(ld v) {
    if (std::isnan(v)) {
      nan_ = true;
      return;
    }
    if (std::isinf(v)) {
      (v > 0 ? pos_ : neg_) = true;
      return;
    }
    const ld t = s_ + v;
    c_ += std::fabs(s_) >= std::fabs(v) ? (s_ - t) + v : (v - t) + s_;
    s_ = t;
  }
  ld value() const {
    if (nan_ || (pos_ && neg_)) return nan;
    if (pos_) return inf;
    if (neg_) return -inf;
    return s_ + c_;
  }

 private:
  ld s_ = 0, c_ = 0;
  bool nan_ = false, pos_ = false, neg_ = false;
};

// ---- the softmax family, one distribution x[0..k) ------------------------------------------------

struct row_info {
  bool nan = false, pos_inf = false;
  ld max = -inf;
  bool poisoned() const { return nan || pos_inf; }
};

inline row_info inspect(const ld* x, Index k) {
  row_info r;
  for (Index j = 0; j < k; ++j) {
    if (std::isnan(x[j])) {
      r.nan = true;
    } else {
      if (x[j] == inf) r.pos_inf = true;
      r.max = std::max(r.max, x[j]);
    }
  }
  return r;
}

inline ld shifted_exp_sum(const ld* x, Index k, ld max) {
  exact_sum s;
  for (Index j = 0; j < k; ++j) s.add(std::exp(x[j] - max));
  return s.value();
}

inline void softmax(const ld* x, Index k, ld* y) {
  const row_info r = inspect(x, k);
  if (r.poisoned() || r.max == -inf) {
    for (Index j = 0; j < k; ++j) y[j] = r.poisoned() ? nan : 0;
    return;
  }
  const ld s = shifted_exp_sum(x, k, r.max);
  for (Index j = 0; j < k; ++j) y[j] = std::exp(x[j] - r.max) / s;
}

inline void log_softmax(const ld* x, Index k, ld* y) {
  const row_info r = inspect(x, k);
  if (r.poisoned() || r.max == -inf) {
    for (Index j = 0; j < k; ++j) y[j] = r.poisoned() ? nan : -inf;
    return;
  }
  const ld log_s = std::log(shifted_exp_sum(x, k, r.max));
  for (Index j = 0; j < k; ++j) y[j] = (x[j] - r.max) - log_s;
}

inline ld logsumexp(const ld* x, Index k) {
  const row_info r = inspect(x, k);
  if (r.nan) return nan;
  if (r.pos_inf) return inf;
  if (r.max == -inf) return -inf;
  return r.max + std::log(shifted_exp_sum(x, k, r.max));
}

/// What a backward reference gives for one distribution: the exact result, the magnitudes of the
/// budget, and whether a T computation of the formula could overflow where long double does not
/// (then the row is outside the checked domain: IEEE overflow depends on the summation order).
struct backward_row {
  std::vector<ld> dx, mag;
  bool may_overflow = false;
};

/// dx_j = y_j (dy_j - <y, dy>); mag_j = |y_j| (|dy_j| + sum_c |y_c dy_c|).
template <class T>
backward_row softmax_backward(const ld* y, const ld* dy, Index k) {
  backward_row r{std::vector<ld>(static_cast<std::size_t>(k)),
                 std::vector<ld>(static_cast<std::size_t>(k))};
  exact_sum dot, abs_dot;
  for (Index c = 0; c < k; ++c) {
    dot.add(y[c] * dy[c]);
    abs_dot.add(std::fabs(y[c] * dy[c]));
  }
  const ld big = static_cast<ld>(std::numeric_limits<T>::max()) / 4;
  // Finite products whose sum (in any order) or difference with dy could leave T's range.
  ld finite_abs = 0;
  for (Index c = 0; c < k; ++c) {
    const ld p = std::fabs(y[c] * dy[c]);
    if (std::isfinite(p)) finite_abs += p;
  }
  if (finite_abs > big) r.may_overflow = true;
  for (Index j = 0; j < k; ++j) {
    r.dx[j] = y[j] * (dy[j] - dot.value());
    r.mag[j] = std::fabs(y[j]) * (std::fabs(dy[j]) + abs_dot.value());
    if (std::isfinite(dy[j]) && std::fabs(dy[j]) + finite_abs > big) r.may_overflow = true;
    if (std::isfinite(r.mag[j]) && r.mag[j] > big) r.may_overflow = true;
  }
  return r;
}

/// dx_j = dlogp_j - exp(logp_j) sum_c dlogp_c; mag_j = |dlogp_j| + exp(logp_j) sum_c |dlogp_c|.
template <class T>
backward_row log_softmax_backward(const ld* logp, const ld* dlogp, Index k) {
  backward_row r{std::vector<ld>(static_cast<std::size_t>(k)),
                 std::vector<ld>(static_cast<std::size_t>(k))};
  exact_sum s, abs_s;
  ld finite_abs = 0;
  for (Index c = 0; c < k; ++c) {
    s.add(dlogp[c]);
    abs_s.add(std::fabs(dlogp[c]));
    if (std::isfinite(dlogp[c])) finite_abs += std::fabs(dlogp[c]);
  }
  const ld big = static_cast<ld>(std::numeric_limits<T>::max()) / 4;
  if (finite_abs > big) r.may_overflow = true;
  for (Index j = 0; j < k; ++j) {
    const ld p = std::exp(logp[j]);
    r.dx[j] = dlogp[j] - p * s.value();
    r.mag[j] = std::fabs(dlogp[j]) + p * abs_s.value();
    if (std::isfinite(r.mag[j]) && r.mag[j] > big) r.may_overflow = true;
    if (std::isfinite(p) && p * finite_abs > big) r.may_overflow = true;
  }
  return r;
}

template <class T>
ld backward_bound(ld mag) {
  return backward_eps * eps<T> * mag + denorm<T>;
}

// ---- cross-entropy (tests/ce_reference.hpp) ------------------------------------------------------

/// How the per-row losses are reduced.
enum class mode { mean, sum, per_row };

struct ce_options {
  ld smoothing = 0, z = 0, cap = 0;
  /// T's largest value: rows whose loss needs a larger intermediate in T are flagged (below).
  ld t_max = inf;
  std::vector<ld> weights;  // empty: all 1
  ld weight(Index c) const { return weights.empty() ? 1.0L : weights[static_cast<std::size_t>(c)]; }
};

struct ce_result {
  ld loss = 0;                 // mean or sum: the reduced loss; per row: unused
  std::vector<ld> row_loss;    // l_i; 0 for ignored rows
  std::vector<ld> grad;        // row-major N x K, the exact gradient
  std::vector<ld> bound;       // B_i; NaN for a poisoned or fully masked row (not checked)
  std::vector<ld> row_scale;   // A_i = sum_c w_c q_c, plus Z_i (row_loss::z_scale)
  std::vector<bool> valid;     // the row counts (not ignored)
  std::vector<bool> poisoned;  // a NaN or +inf (capped) logit in a valid row: loss NaN
  /// The row's loss, as the kernels compute it, has an intermediate beyond t_max although the
  /// loss itself may not be: a shifted logit x_c - max, a product w_c q_c (x_c - max) or, with
  /// smoothing, the sum of w_c (x_c - max) before its scaling by eps/K. Known finding 4.
  std::vector<bool> overflow;
  ld loss_scale = 0;           // sum_i |r_ce| A_i + |r_z| Z_i: the floor of the reduced loss
  ld denominator = 0;          // mean's D (labels: sum of the valid rows' label weights)
  Index valid_rows = 0;
};

namespace detail {

struct row_loss {
  ld ce, z;
  /// The z-loss term's share of the loss floor: s·lse² with lse exact to a few ulp of
  /// max(|lse|, 1) (like logsumexp) is exact to 2·s·|lse|·max(|lse|, 1) of those ulp.
  ld z_scale = 0;
};

/// One valid row (ce_reference.hpp's one_row, with the fully masked row as in the header above).
inline row_loss one_row(const ld* x, const std::vector<ld>& q, Index y, Index k,
                        const ce_options& o, ld r_ce, ld r_z, ld* g, ld& bound, ld& a_sum,
                        bool& poisoned, bool& overflow) {
  const ld cap = o.cap, s = o.z;
  std::vector<ld> xt(static_cast<std::size_t>(k));
  poisoned = false;
  ld m = -inf;
  for (Index c = 0; c < k; ++c) {
    xt[c] = cap > 0 ? cap * std::tanh(x[c] / cap) : x[c];
    if (std::isnan(xt[c]) || xt[c] == inf) poisoned = true;
    if (!std::isnan(xt[c])) m = std::max(m, xt[c]);
  }
  if (poisoned || m == -inf) {
    for (Index c = 0; c < k; ++c) g[c] = nan;
    bound = nan;
    a_sum = 0;
    if (poisoned) return {nan, 0};
    exact_sum ce;
    for (Index c = 0; c < k; ++c)
      if (o.weight(c) * q[c] != 0) ce.add(o.weight(c) * q[c] * inf);
    return {ce.value(), 0};  // lse = -inf: the z-loss of a fully masked row is not defined either
  }
  overflow = false;
  ld smooth_sum = 0, loss_terms = 0;
  for (Index c = 0; c < k; ++c) {
    if (!std::isfinite(xt[c])) continue;
    const ld d = m - xt[c];
    if (d > o.t_max) overflow = true;
    smooth_sum += std::fabs(o.weight(c)) * d;
    loss_terms += std::fabs(o.weight(c) * q[c]) * d;
  }
  if ((o.smoothing > 0 && smooth_sum > o.t_max) || loss_terms > o.t_max) overflow = true;
  exact_sum se;
  for (Index c = 0; c < k; ++c) se.add(std::exp(xt[c] - m));
  const ld total = se.value(), log_s = std::log(total), lse = m + log_s;
  std::vector<ld> p(static_cast<std::size_t>(k));
  exact_sum ce, a, p_other, wq_other;
  ld p_max = 0, wq_max = 0;
  for (Index c = 0; c < k; ++c) {
    p[c] = std::exp(xt[c] - m) / total;
    p_max = std::max(p_max, p[c]);
    const ld wq = o.weight(c) * q[c];
    wq_max = std::max(wq_max, std::fabs(wq));
    a.add(wq);
    if (wq != 0) ce.add(wq * (log_s - (xt[c] - m)));  // -log p_c; 0 log 0 = 0
    if (c != y) {
      p_other.add(p[c]);
      wq_other.add(wq);
    }
  }
  const ld A = a.value(), zg = 2 * s * r_z * lse;
  a_sum = A;
  for (Index c = 0; c < k; ++c) {
    ld d;
    if (c == y) {
      d = r_ce * (wq_other.value() - A * p_other.value()) + zg * (1 - p_other.value());
    } else {
      d = r_ce * (A * p[c] - o.weight(c) * q[c]) + zg * p[c];
    }
    if (cap > 0) {
      const ld ch = std::cosh(x[c] / cap);
      d /= ch * ch;
    }
    g[c] = d;
  }
  const bool labels = y >= 0;
  // The z-loss term at lse's own accuracy: like logsumexp, lse is exact to a few ulp of
  // max(|lse|, 1) (log s for s near 1 is accurate in absolute terms only).
  const ld zb = std::fabs(2 * s * r_z) * std::max(std::fabs(lse), 1.0L);
  bound = (std::fabs(r_ce) * A + zb) * std::max(p_max, labels ? p_other.value() : 0.0L);
  bound = std::max({bound, std::fabs(r_ce) * wq_max, zb});
  if (labels) bound = std::max(bound, std::fabs(r_ce) * wq_other.value());
  return {ce.value(), s != 0 ? s * lse * lse : 0.0L,
          s != 0 ? 2 * s * std::fabs(lse) * std::max(std::fabs(lse), 1.0L) : 0.0L};
}

/// x: row-major N x K. target_row(i, q) fills row i's smoothed target and returns its label (-1
/// for probability targets); valid(i) and weight_of(i) give the rows that count and their weight
/// in mean's denominator.
template <class TargetRow, class Valid, class RowWeight>
ce_result run(const std::vector<ld>& x, Index n, Index k, const ce_options& o, mode md,
              const std::vector<ld>& dloss, TargetRow&& target_row, Valid&& valid,
              RowWeight&& weight_of) {
  ce_result r;
  const auto un = static_cast<std::size_t>(n);
  r.row_loss.assign(un, 0);
  r.grad.assign(un * static_cast<std::size_t>(k), 0);
  r.bound.assign(un, 0);
  r.row_scale.assign(un, 0);
  r.valid.assign(un, false);
  r.poisoned.assign(un, false);
  r.overflow.assign(un, false);
  exact_sum denom;
  for (Index i = 0; i < n; ++i) {
    r.valid[i] = valid(i);
    if (!r.valid[i]) continue;
    ++r.valid_rows;
    denom.add(weight_of(i));
  }
  const ld d_ce = denom.value(), d_z = static_cast<ld>(r.valid_rows);
  r.denominator = d_ce;
  exact_sum ce_total, z_total, total, scale;
  std::vector<ld> q(static_cast<std::size_t>(k)), g(static_cast<std::size_t>(k));
  for (Index i = 0; i < n; ++i) {
    if (!r.valid[i]) continue;
    const Index y = target_row(i, q);
    ld r_ce = 1, r_z = 1;
    if (md == mode::mean) {
      r_ce = 1 / d_ce;
      r_z = 1 / d_z;
    } else if (md == mode::per_row) {
      r_ce = r_z = dloss[static_cast<std::size_t>(i)];
    }
    ld b = 0, a_sum = 0;
    bool poisoned = false, overflow = false;
    const row_loss l =
        one_row(x.data() + i * k, q, y, k, o, r_ce, r_z, g.data(), b, a_sum, poisoned, overflow);
    r.poisoned[i] = poisoned;
    r.overflow[i] = overflow;
    r.row_scale[i] = a_sum + l.z_scale;
    scale.add(std::fabs(r_ce) * a_sum + std::fabs(r_z) * l.z_scale);
    for (Index c = 0; c < k; ++c) r.grad[static_cast<std::size_t>(i * k + c)] = g[c];
    r.bound[i] = b;
    r.row_loss[i] = l.ce + l.z;
    ce_total.add(l.ce);
    z_total.add(l.z);
    total.add(l.ce + l.z);
  }
  if (md == mode::mean)
    r.loss = ce_total.value() / d_ce + (o.z != 0 ? z_total.value() / d_z : 0.0L);
  else
    r.loss = total.value();
  r.loss_scale = scale.value();
  return r;
}

}  // namespace detail

/// Class-index labels (already known valid or equal to ignore).
inline ce_result cross_entropy_labels(const std::vector<ld>& x, Index n, Index k,
                                      const std::vector<std::int64_t>& y, std::int64_t ignore,
                                      const ce_options& o, mode md,
                                      const std::vector<ld>& dloss = {}) {
  const ld e = o.smoothing;
  return detail::run(
      x, n, k, o, md, dloss,
      [&](Index i, std::vector<ld>& q) {
        for (Index c = 0; c < k; ++c) q[c] = (c == y[i] ? 1 - e : 0) + e / k;
        return static_cast<Index>(y[i]);
      },
      [&](Index i) { return y[i] != ignore; },
      [&](Index i) { return o.weight(static_cast<Index>(y[i])); });
}

/// Probability targets t (row-major N x K).
inline ce_result cross_entropy_probs(const std::vector<ld>& x, Index n, Index k,
                                     const std::vector<ld>& t, const ce_options& o, mode md,
                                     const std::vector<ld>& dloss = {}) {
  const ld e = o.smoothing;
  return detail::run(
      x, n, k, o, md, dloss,
      [&](Index i, std::vector<ld>& q) {
        for (Index c = 0; c < k; ++c) q[c] = (1 - e) * t[static_cast<std::size_t>(i * k + c)] + e / k;
        return Index{-1};
      },
      [](Index) { return true; }, [](Index) { return 1.0L; });
}

}  // namespace smax_fuzz::ref
