// The oracle of the cross-entropy tests: smax::cross_entropy's loss and gradient in long double,
// written from CONTRACT.md's formulas one row at a time (no vectors, no fused passes, every sum
// compensated), the budgets the library is held to, the checks that measure a result against
// them, and input generators with fixed seeds. Self-contained: it shares nothing with
// reference.hpp (the softmax oracle).
//
// Formulas. For row i with logits x, p = softmax(x~) and lse = logsumexp(x~), where
// x~_c = cap·tanh(x_c / cap) when softcap = cap > 0 (else x~ = x); class weights w (all 1 when
// empty), label smoothing ε, z-loss coefficient s, K classes:
//   target      q_c = (1 − ε)·[c = y] + ε/K  (label y),   q_c = (1 − ε)·t_c + ε/K  (probabilities
//   t) row loss    l_i = ce_i + z_i,  ce_i = Σ_c w_c q_c (−log p_c)  (a term with w_c q_c = 0 is 0,
//               even where p_c = 0),  z_i = s·lse²;  rows labelled ignore_index have l_i = 0
//   reduction   mean: Σ ce_i / D + Σ z_i / V, with D = Σ_{valid i} w_{y_i} and V = #valid rows
//               for labels, D = V = N for probability targets;  sum: Σ l_i;
//               per row: l_i, and the gradient is that of Σ dloss_i·l_i
//   gradient    ∂/∂x_c = [r_ce·(A·p_c − w_c q_c) + 2·s·r_z·lse·p_c] · sech²(x_c / cap),
//               A = Σ_c w_c q_c;  r_ce = 1/D, r_z = 1/V (mean), 1 (sum), dloss_i (per row);
//               the factor sech² is 1 without soft-capping; ignored rows get 0.
// For labels the entry of the label's class uses the exact identities
//   p_y = 1 − Σ_{c≠y} p_c,   A·p_y − w_y q_y = Σ_{c≠y} w_c q_c − A·Σ_{c≠y} p_c,
// so the reference keeps the tiny gradients of confident predictions (CONTRACT.md: precision)
// that long double's 64 bits could not hold as 1 − p_y.
//
// Budgets: the only place they are stated. eps = std::numeric_limits<T>::epsilon().
//   loss         |loss − exact| <= 1e-5 |exact| (float), 1e-12 |exact| (double), for the reduced
//                loss and for every per-row loss; an infinity or a NaN must match exactly, an
//                ignored row's loss must be exactly 0. The general checks add a floor of
//                8 eps · Σ_i (|r_ce| A_i + |r_z| Z_i) (per row: 8 eps · (A_i + Z_i)): the rounding
//                of the exp sum s >= 1 inside Σ_c w_c q_c (log s − (x_c − max)), which is all of
//                the loss of a confident row with probability targets, and in the z-loss s·lse²,
//                Z_i = 2·s·|lse|·max(|lse|, 1) (lse near 0 is exact to a few ulp of 1, as
//                logsumexp is). (With labels smax computes −log p_y as
//                log1p(Σ_{c≠y} e_c / e_y) and needs no floor: test_cross_entropy_numerics.cpp
//                holds that row to the strict relative budget.)
//   gradient     |g_ic − exact| <= 32 eps · B_i, B_i the largest term of row i's gradient formula
//                (taken before the soft-cap factor sech² <= 1, which only shrinks the entries):
//                  B_i = max( (|r_ce|·A + Z) · max(max_c p_c, P_i),
//                             |r_ce| · max_c w_c q_c,  |r_ce| · Σ_{c≠y} w_c q_c,  Z )
//                with Z = |2 s r_z| · max(|lse|, 1) (lse is accurate to a few ulp of
//                max(|lse|, 1), as logsumexp is) and P_i = Σ_{c≠y} p_c for labels (the two
//                Σ_{c≠y} terms are absent for probability targets). An ignored row (or dloss_i = 0) has B_i = 0: its gradient
//                must be exactly 0.
//   confident    the tiny gradients of confident predictions (entries far below B_i) within
//                tiny_rtol relative: 1e-6 (float) / 1e-12 (double), for logits whose differences
//                x_c − max are exact in T (the rounding of an inexact difference d alone moves
//                exp(d) by |d|·eps/2 relative, 2e-6 at d = −80 in float).
//   finite diff. |g − fd| <= 1e-8 + 1e-6·|g|, fd a double-precision central difference of smax's
//                own returned loss with h = 2^-16 on logits of magnitude < 10 (truncation h²/6·f'''
//                and rounding ~1e-15/h are both below 1e-9 there).
//   layouts      row-major, column-major and strided logits agree within 4 eps · B_i per entry
//                and 4 eps relative for the loss, plus 4 eps of its floor scale (the passes sum
//                in another order).
//   bit for bit  in place (grad is the logits) and out of place; a grad, target or label vector
//                of another layout or type than the logits' own.
#pragma once

#include <catch2/catch.hpp>

#include <Eigen/Core>
#include <smax/smax.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

namespace ce_ref {

using ld = long double;
using Index = Eigen::Index;
using LMat = Eigen::Matrix<ld, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using LVec = Eigen::Matrix<ld, Eigen::Dynamic, 1>;
using Labels = std::vector<std::int64_t>;
template <class T>
using RowMat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using ColMat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor>;

inline constexpr ld inf = std::numeric_limits<ld>::infinity();
inline constexpr ld nan = std::numeric_limits<ld>::quiet_NaN();

// ---- budgets (see the top of this file) ---------------------------------------------------------

template <class T>
constexpr ld eps = std::numeric_limits<T>::epsilon();
template <class T>
constexpr ld loss_rtol = sizeof(T) == 4 ? 1e-5L : 1e-12L;
inline constexpr ld grad_eps = 32;
template <class T>
constexpr ld tiny_rtol = sizeof(T) == 4 ? 1e-6L : 1e-12L;
inline constexpr double fd_h = 1.0 / 65536;
inline constexpr ld fd_atol = 1e-8L, fd_rtol = 1e-6L;
inline constexpr ld layout_eps = 4;

template <class T>
constexpr const char* type_name() {
  return sizeof(T) == 4 ? "float" : "double";
}
/// The vector width of this build for T (SSE2: 4 / 2, AVX2: 8 / 4; 1 without SIMD).
template <class T>
inline constexpr Index lanes = smax::detail::lanes<smax::detail::vec_t<T, smax::detail::best_arch>>;

// ---- sums ---------------------------------------------------------------------------------------

/// Neumaier's compensated sum: about one rounding of long double whatever the length.
class exact_sum {
 public:
  void add(ld v) {
    const ld t = s_ + v;
    c_ += std::fabs(s_) >= std::fabs(v) ? (s_ - t) + v : (v - t) + s_;
    s_ = t;
  }
  ld value() const { return s_ + c_; }

 private:
  ld s_ = 0, c_ = 0;
};

// ---- the reference ------------------------------------------------------------------------------

/// How the per-row losses are reduced: smax::cross_entropy with Reduction::mean or ::sum, or
/// smax::cross_entropy_per_row with an upstream dloss.
enum class Mode { mean, sum, per_row };

inline const char* name(Mode m) {
  return m == Mode::mean ? "mean" : m == Mode::sum ? "sum" : "per-row with dloss";
}

struct Result {
  ld loss = 0;        // mean or sum: the returned loss; per row: Σ dloss_i·l_i
  LVec row_loss;      // l_i; 0 for ignored rows
  LMat grad;          // the exact gradient of `loss`
  LVec bound;         // B_i (see the top of this file); 0 for ignored rows
  LVec row_scale;     // A_i + Z_i (below): the loss floor of row i is 8 eps (A_i + Z_i)
  ld loss_scale = 0;  // Σ_i |r_ce| A_i + |r_z| Z_i: the floor of the reduced loss
  std::vector<bool> valid;
};

/// Any Eigen matrix, as long double in its logical (row = sample) orientation.
template <class D>
LMat to_ld(const Eigen::DenseBase<D>& x) {
  LMat r(x.rows(), x.cols());
  for (Index i = 0; i < x.rows(); ++i)
    for (Index j = 0; j < x.cols(); ++j) r(i, j) = static_cast<ld>(x(i, j));
  return r;
}

namespace detail {

inline ld weight(const smax::CrossEntropyOptions& o, Index c) {
  return o.class_weights.size() == 0 ? 1.0L : static_cast<ld>(o.class_weights(c));
}

/// The two parts of a row's loss: ce_i and z_i.
struct row_loss {
  ld ce, z;
  /// The z-loss term's share of the loss floor: s·lse² with lse exact to a few ulp of
  /// max(|lse|, 1) (like logsumexp) is exact to 2·s·|lse|·max(|lse|, 1) of those ulp.
  ld z_scale = 0;
};

/// One valid row: its loss, gradient (written into g), B_i and A_i. `q` is the smoothed target,
/// `y` the label (−1 for probability targets).
inline row_loss one_row(const ld* x, const std::vector<ld>& q, Index y, Index k,
                        const smax::CrossEntropyOptions& o, ld r_ce, ld r_z, ld* g, ld& bound,
                        ld& a_sum) {
  const ld cap = o.softcap, s = o.z_loss;
  std::vector<ld> xt(static_cast<std::size_t>(k));
  bool poisoned = false;
  ld m = -inf;
  for (Index c = 0; c < k; ++c) {
    xt[c] = cap > 0 ? cap * std::tanh(x[c] / cap) : x[c];
    if (std::isnan(xt[c]) || xt[c] == inf) poisoned = true;
    if (!std::isnan(xt[c])) m = std::max(m, xt[c]);
  }
  if (poisoned || m == -inf) {
    // A NaN or +inf logit makes the loss NaN (CONTRACT.md); a fully masked row has
    // −log p_c = +inf for every class and no defined gradient. Neither is checked entry-wise.
    for (Index c = 0; c < k; ++c) g[c] = nan;
    bound = nan;
    a_sum = 0;
    return {poisoned ? nan : inf, 0};
  }
  // Shift by the max, then divide: lse = m + log s would absorb log s when |m| is huge.
  exact_sum se;
  for (Index c = 0; c < k; ++c) se.add(std::exp(xt[c] - m));
  const ld total = se.value(), log_s = std::log(total), lse = m + log_s;
  std::vector<ld> p(static_cast<std::size_t>(k));
  exact_sum ce, a, p_other, wq_other;
  ld p_max = 0, wq_max = 0;
  for (Index c = 0; c < k; ++c) {
    p[c] = std::exp(xt[c] - m) / total;
    p_max = std::max(p_max, p[c]);
    const ld wq = weight(o, c) * q[c];
    wq_max = std::max(wq_max, std::fabs(wq));
    a.add(wq);
    if (wq != 0) ce.add(wq * (log_s - (xt[c] - m)));  // −log p_c; 0 · log 0 = 0
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
      d = r_ce * (A * p[c] - weight(o, c) * q[c]) + zg * p[c];
    }
    if (cap > 0) {
      const ld ch = std::cosh(x[c] / cap);
      d /= ch * ch;  // sech², accurate where 1 − tanh² would cancel
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

/// The common driver: `target_row(i, q)` fills the smoothed target of row i and returns its
/// label (−1 for probability targets); `valid(i)` tells whether row i counts; `weight_of(i)` is
/// its weight in mean's denominator.
template <class TargetRow, class Valid, class RowWeight>
Result run(const LMat& x, const smax::CrossEntropyOptions& o, Mode mode, const LVec& dloss,
           TargetRow&& target_row, Valid&& valid, RowWeight&& weight_of) {
  const Index n = x.rows(), k = x.cols();
  Result r;
  r.row_loss = LVec::Zero(n);
  r.grad = LMat::Zero(n, k);
  r.bound = LVec::Zero(n);
  r.row_scale = LVec::Zero(n);
  r.valid.assign(static_cast<std::size_t>(n), false);
  exact_sum denom;
  Index n_valid = 0;
  for (Index i = 0; i < n; ++i) {
    r.valid[i] = valid(i);
    if (!r.valid[i]) continue;
    ++n_valid;
    denom.add(weight_of(i));
  }
  const ld d_ce = denom.value(), d_z = static_cast<ld>(n_valid);
  exact_sum ce_total, z_total, total, scale;
  std::vector<ld> q(static_cast<std::size_t>(k)), row(static_cast<std::size_t>(k)),
      g(static_cast<std::size_t>(k));
  for (Index i = 0; i < n; ++i) {
    if (!r.valid[i]) continue;
    const Index y = target_row(i, q);
    ld r_ce = 1, r_z = 1;
    if (mode == Mode::mean) {
      r_ce = 1 / d_ce;
      r_z = 1 / d_z;
    } else if (mode == Mode::per_row) {
      r_ce = r_z = dloss(i);
    }
    for (Index c = 0; c < k; ++c) row[c] = x(i, c);
    ld b = 0, a_sum = 0;
    const row_loss l = one_row(row.data(), q, y, k, o, r_ce, r_z, g.data(), b, a_sum);
    r.row_scale(i) = a_sum + l.z_scale;
    scale.add(std::fabs(r_ce) * a_sum + std::fabs(r_z) * l.z_scale);
    for (Index c = 0; c < k; ++c) r.grad(i, c) = g[c];
    r.bound(i) = b;
    r.row_loss(i) = l.ce + l.z;
    ce_total.add(l.ce);
    z_total.add(l.z);
    total.add(mode == Mode::per_row ? dloss(i) * (l.ce + l.z) : l.ce + l.z);
  }
  if (mode == Mode::mean) {
    r.loss = ce_total.value() / d_ce + (o.z_loss != 0 ? z_total.value() / d_z : 0.0L);
  } else {
    r.loss = total.value();
  }
  r.loss_scale = scale.value();
  return r;
}

}  // namespace detail

/// The reference with class-index labels.
inline Result cross_entropy(const LMat& x, const Labels& y, const smax::CrossEntropyOptions& o,
                            Mode mode = Mode::mean, const LVec& dloss = LVec()) {
  const Index k = x.cols();
  const ld eps_ = o.label_smoothing;
  return detail::run(
      x, o, mode, dloss,
      [&](Index i, std::vector<ld>& q) {
        for (Index c = 0; c < k; ++c) q[c] = (c == y[i] ? 1 - eps_ : 0) + eps_ / k;
        return static_cast<Index>(y[i]);
      },
      [&](Index i) { return y[i] != o.ignore_index; },
      [&](Index i) { return detail::weight(o, static_cast<Index>(y[i])); });
}

/// The reference with probability targets t (N x K).
inline Result cross_entropy(const LMat& x, const LMat& t, const smax::CrossEntropyOptions& o,
                            Mode mode = Mode::mean, const LVec& dloss = LVec()) {
  const Index k = x.cols();
  const ld eps_ = o.label_smoothing;
  return detail::run(
      x, o, mode, dloss,
      [&](Index i, std::vector<ld>& q) {
        for (Index c = 0; c < k; ++c) q[c] = (1 - eps_) * t(i, c) + eps_ / k;
        return Index{-1};
      },
      [](Index) { return true; }, [](Index) { return 1.0L; });
}

/// softmax of one row in long double, and the mass of the classes other than y.
inline std::vector<ld> softmax_row(const LMat& x, Index i) {
  const Index k = x.cols();
  ld m = -inf;
  for (Index c = 0; c < k; ++c) m = std::max(m, x(i, c));
  exact_sum s;
  for (Index c = 0; c < k; ++c) s.add(std::exp(x(i, c) - m));
  std::vector<ld> p(static_cast<std::size_t>(k));
  for (Index c = 0; c < k; ++c) p[c] = std::exp(x(i, c) - m) / s.value();
  return p;
}

// ---- measuring a result against the reference -------------------------------------------------

/// The worst errors seen by this binary, printed when it exits: the loss's relative error in
/// units of its budget, and gradient errors in units of eps · B_i.
struct worst_errors {
  ld loss_rel[2] = {0, 0};
  ld grad_units[2] = {0, 0};
  ld tiny_rel[2] = {0, 0};
  template <class T>
  static int slot() {
    return sizeof(T) == 4 ? 0 : 1;
  }
  ~worst_errors() {
    if (loss_rel[0] + loss_rel[1] + grad_units[0] + grad_units[1] + tiny_rel[0] + tiny_rel[1] == 0)
      return;
    std::printf(
        "cross-entropy worst errors: loss rel. float %.3Lg, double %.3Lg; gradient in eps*B_i "
        "float %.3Lg, double %.3Lg; tiny gradients rel. float %.3Lg, double %.3Lg\n",
        loss_rel[0], loss_rel[1], grad_units[0], grad_units[1], tiny_rel[0], tiny_rel[1]);
  }
};
inline worst_errors worst;

struct Verdict {
  bool ok = true;
  std::string detail;
};

/// CHECK a Verdict, with its detail as the failure message.
#define CE_CHECK(...)                 \
  do {                                \
    const auto ce_v_ = (__VA_ARGS__); \
    INFO(ce_v_.detail);               \
    CHECK(ce_v_.ok);                  \
  } while (false)

inline constexpr ld loss_floor_eps = 8;

/// A loss (scalar) against the exact one: relative budget, plus 8 eps · scale (see the top).
template <class T>
Verdict check_loss(ld exact, T got, ld scale = 0, const char* what = "loss") {
  Verdict v;
  const ld g = static_cast<ld>(got);
  std::ostringstream os;
  os.precision(21);
  if (std::isnan(exact) || std::isinf(exact)) {
    v.ok = std::isnan(exact) ? std::isnan(g) : g == exact;
  } else {
    const ld err = std::fabs(g - exact);
    const ld rel = exact == 0 ? (err == 0 ? 0 : inf) : err / std::fabs(exact);
    const ld floor = loss_floor_eps * eps<T> * scale;
    if (err > floor) {  // the relative error that the floor does not excuse
      ld& w = worst.loss_rel[worst_errors::slot<T>()];
      w = std::max(w, rel);
    }
    v.ok = err <= loss_rtol<T> * std::fabs(exact) + floor;
    os << " (relative error " << rel << ", budget " << loss_rtol<T> << " + floor " << floor << ")";
  }
  std::ostringstream d;
  d.precision(21);
  d << what << ": smax " << g << ", exact " << exact << os.str();
  v.detail = d.str();
  return v;
}

/// Per-row losses (any vector) against the reference's l_i; ignored rows must be exactly 0.
template <class T, class V>
Verdict check_row_losses(const Result& r, const V& got) {
  Verdict v;
  if (got.size() != r.row_loss.size()) {
    v.ok = false;
    v.detail = "losses has " + std::to_string(got.size()) + " entries, expected " +
               std::to_string(r.row_loss.size());
    return v;
  }
  for (Index i = 0; i < got.size(); ++i) {
    const Verdict one =
        check_loss<T>(r.row_loss(i), static_cast<T>(got(i)), r.row_scale(i), "row loss");
    if (!one.ok && v.ok) {
      v.ok = false;
      v.detail = "row " + std::to_string(i) + ": " + one.detail;
    }
  }
  return v;
}

/// A gradient (any layout, logical N x K) against the reference: |g − exact| <= units eps B_i.
template <class T, class G>
Verdict check_grad(const Result& r, const G& got, ld units = grad_eps) {
  Verdict v;
  if (got.rows() != r.grad.rows() || got.cols() != r.grad.cols()) {
    v.ok = false;
    v.detail = "grad has the wrong shape";
    return v;
  }
  ld worst_here = 0;  // in eps · B_i
  Index wi = -1, wj = -1;
  for (Index i = 0; i < got.rows(); ++i) {
    if (std::isnan(r.bound(i))) continue;  // a NaN row or a fully masked one: checked elsewhere
    for (Index j = 0; j < got.cols(); ++j) {
      const ld g = static_cast<ld>(got(i, j)), e = r.grad(i, j);
      const ld err = std::fabs(g - e), scale = eps<T> * r.bound(i);
      const ld u = err == 0 ? 0 : scale > 0 ? err / scale : inf;  // NaN when g is NaN
      if (!(u <= worst_here)) {
        worst_here = std::isnan(u) ? inf : u;
        wi = i;
        wj = j;
      }
      if (!(u <= units) && v.ok) {
        v.ok = false;
        std::ostringstream d;
        d.precision(21);
        d << "grad(" << i << ", " << j << ") = " << g << ", exact " << e << ", error " << err
          << " = " << u << " eps * B_i > " << units << " (B_i = " << r.bound(i) << ")";
        v.detail = d.str();
      }
    }
  }
  ld& w = worst.grad_units[worst_errors::slot<T>()];
  if (std::isfinite(worst_here)) w = std::max(w, worst_here);
  if (v.ok) {
    std::ostringstream d;
    d << "worst gradient error " << worst_here << " eps * B_i at (" << wi << ", " << wj << ")";
    v.detail = d.str();
  }
  return v;
}

// ---- inputs -------------------------------------------------------------------------------------

/// A seed from a test's parameters.
inline std::uint64_t seed_of(std::uint64_t a, std::uint64_t b = 0, std::uint64_t c = 0,
                             std::uint64_t d = 0) {
  std::uint64_t h = 0x9e3779b97f4a7c15ull;
  for (std::uint64_t v : {a, b, c, d}) h = (h ^ v) * 0x100000001b3ull + (h >> 29);
  return h;
}

/// N x K logits ~ Normal(0, scale), rounded to T.
template <class T>
RowMat<T> logits(Index n, Index k, std::uint64_t seed, double scale = 3.0) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, scale);
  RowMat<T> x(n, k);
  for (Index i = 0; i < n; ++i)
    for (Index j = 0; j < k; ++j) x(i, j) = static_cast<T>(normal(rng));
  return x;
}

/// N labels in [0, K); about `ignored` of the rows (at least one when N > 1 and ignored > 0)
/// carry `ignore` instead.
inline Labels labels(Index n, Index k, std::uint64_t seed, double ignored = 0.0,
                     std::int64_t ignore = -100) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<std::int64_t> cls(0, k - 1);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  Labels y(static_cast<std::size_t>(n));
  for (auto& v : y) {
    v = cls(rng);
    if (u(rng) < ignored) v = ignore;
  }
  if (ignored > 0 && n > 1) y[static_cast<std::size_t>(n / 2)] = ignore;
  return y;
}

/// Probability targets: about a third of the entries 0, rows normalized, except every fourth
/// row, which sums to 0.75 (targets need not sum to 1).
template <class T>
RowMat<T> probs(Index n, Index k, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  RowMat<T> t(n, k);
  for (Index i = 0; i < n; ++i) {
    double s = 0;
    std::vector<double> v(static_cast<std::size_t>(k));
    for (auto& e : v) {
      e = u(rng) < 0.33 ? 0.0 : u(rng);
      s += e;
    }
    if (s == 0) v[0] = s = 1;
    const double scale = i % 4 == 3 ? 0.75 : 1.0;
    for (Index j = 0; j < k; ++j) t(i, j) = static_cast<T>(scale * v[j] / s);
  }
  return t;
}

/// K class weights in [1/16, 3], multiples of 1/16 (exact in float, as the kernels use them).
inline Eigen::VectorXd weights(Index k, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> u(1, 48);
  Eigen::VectorXd w(k);
  for (Index j = 0; j < k; ++j) w(j) = u(rng) / 16.0;
  return w;
}

/// Labels as an Eigen vector of integer type I.
template <class I = std::int64_t>
Eigen::Matrix<I, Eigen::Dynamic, 1> to_eigen(const Labels& y) {
  Eigen::Matrix<I, Eigen::Dynamic, 1> v(static_cast<Index>(y.size()));
  for (Index i = 0; i < v.size(); ++i) v(i) = static_cast<I>(y[static_cast<std::size_t>(i)]);
  return v;
}

/// Per-row upstream gradients: mixed signs, some exactly 0.
template <class T>
Eigen::Matrix<T, Eigen::Dynamic, 1> dloss(Index n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(-2.0, 2.0);
  Eigen::Matrix<T, Eigen::Dynamic, 1> d(n);
  for (Index i = 0; i < n; ++i) d(i) = i % 5 == 2 ? T(0) : static_cast<T>(u(rng));
  return d;
}

// ---- options ------------------------------------------------------------------------------------

/// One combination of options: each on or off, and which rows are ignored.
struct Combo {
  bool weighted = false, smoothed = false, z = false, capped = false;
  int ignore = 0;  // 0: no row ignored; 1: rows labelled −100 (the default); 2: ignore_index = 1
  std::string describe() const {
    std::string s;
    s += weighted ? "weights " : "";
    s += smoothed ? "smoothing " : "";
    s += z ? "z-loss " : "";
    s += capped ? "softcap " : "";
    s += ignore == 1 ? "ignore(-100) " : ignore == 2 ? "ignore_index=1 " : "";
    return s.empty() ? "defaults" : s;
  }
};

/// Every combination: 2^4 option sets x 3 ignore variants.
inline std::vector<Combo> all_combos() {
  std::vector<Combo> v;
  for (int m = 0; m < 48; ++m) {
    Combo c;
    c.weighted = m & 1;
    c.smoothed = m & 2;
    c.z = m & 4;
    c.capped = m & 8;
    c.ignore = m >> 4;
    v.push_back(c);
  }
  return v;
}

/// The options of a combination for K classes (weights drawn from `seed`), and the labels
/// that go with it.
inline smax::CrossEntropyOptions options_of(const Combo& c, Index k, std::uint64_t seed,
                                            Mode mode = Mode::mean) {
  smax::CrossEntropyOptions o;
  o.reduction = mode == Mode::sum ? smax::Reduction::sum : smax::Reduction::mean;
  if (c.weighted) o.class_weights = weights(k, seed);
  if (c.smoothed) o.label_smoothing = 0.1;
  if (c.z) o.z_loss = 0.02;
  if (c.capped) o.softcap = 5.0;
  if (c.ignore == 2) o.ignore_index = 1;
  return o;
}
inline Labels labels_of(const Combo& c, Index n, Index k, std::uint64_t seed) {
  return labels(n, k, seed, c.ignore ? 0.3 : 0.0, c.ignore == 2 ? 1 : -100);
}

// ---- calling smax
// --------------------------------------------------------------------------------

template <class T>
using Vec = Eigen::Matrix<T, Eigen::Dynamic, 1>;

/// What one call of smax returned.
template <class T>
struct Output {
  T loss = 0;      // mean or sum: the returned loss (per row: unused)
  RowMat<T> grad;  // logical N x K
  Vec<T> losses;   // per row
};

/// Calls smax on x stored with `Storage` (Eigen::RowMajor or Eigen::ColMajor) and `target`
/// (an integer label vector, or probabilities as RowMat<T>, stored like x): the loss and
/// gradient for mean and sum, the per-row losses and the dloss-scaled gradient for per_row.
/// `in_place` passes the logits object itself as grad.
template <int Storage, class T, class Target>
Output<T> call(const RowMat<T>& x, const Target& target, const smax::CrossEntropyOptions& opt,
               Mode mode, const Vec<typename RowMat<T>::Scalar>& dl = {}, bool in_place = false) {
  using M = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Storage>;
  smax::CrossEntropyOptions o = opt;
  o.reduction = mode == Mode::sum ? smax::Reduction::sum : smax::Reduction::mean;
  M xs = x;
  M g = M::Constant(x.rows(), x.cols(), T(-7));
  Output<T> out;
  const auto go = [&](const auto& t) {
    M& grad = in_place ? xs : g;
    if (mode == Mode::per_row) {
      out.losses = Vec<T>::Constant(x.rows(), T(-7));
      smax::cross_entropy_per_row(xs, t, out.losses, dl, grad, o);
    } else {
      out.loss = smax::cross_entropy(xs, t, grad, o);
    }
    out.grad = grad;
  };
  if constexpr (std::is_floating_point<typename Target::Scalar>::value) {
    const M t = target;
    go(t);
  } else {
    go(target);
  }
  return out;
}

/// Equal bit for bit (NaNs included), and of the same shape.
template <class A, class B>
bool same_bits(const A& a, const B& b) {
  if (a.rows() != b.rows() || a.cols() != b.cols()) return false;
  for (Index i = 0; i < a.rows(); ++i)
    for (Index j = 0; j < a.cols(); ++j) {
      const auto x = a(i, j);
      const decltype(x) y = b(i, j);
      if (std::memcmp(&x, &y, sizeof x) != 0) return false;
    }
  return true;
}
template <class T>
bool same_bits_scalar(T a, T b) {
  return std::memcmp(&a, &b, sizeof a) == 0;
}

}  // namespace ce_ref
