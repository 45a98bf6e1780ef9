// The oracle of smax's tests: the softmax family in long double, computed the obvious way (one
// distribution at a time, max subtracted, compensated sums), the accuracy budgets the library is
// held to, the checks that measure a result against them, and input generators with fixed seeds.
//
// Accuracy budgets: the only place they are stated. Per element, against the exact result, with
// b = 8 for float and 16 for double, eps = std::numeric_limits<T>::epsilon(), and ulp(v) the
// spacing of T at the exact |v| (2^(e - digits) for 2^(e-1) <= |v| < 2^e; the smallest
// subnormal when v is subnormal or 0):
//   softmax              (b + log2 K + min(|x_j - max|, C)) ulp(exact). The |x_j - max| term is
//                        the rounding of the shifted argument; C = 104 (float) / 746 (double) is
//                        where exp underflows to 0, so the term stops growing there. An entry
//                        x_j = -inf next to finite ones must be exactly 0 (budget 0).
//   equal logits         a row of K equal logits sums to 1 within 4 ulp(1) (summed exactly).
//   log_softmax          b ulp(max(|exact|, 1)).
//   logsumexp            b ulp(max(|exact|, 1)).
//   softmax_backward     16 eps * |y_j| (|dy_j| + sum_c |y_c dy_c|) + the smallest subnormal (the
//                        last rounding of a result that underflows).
//   log_softmax_backward 16 eps * (|dlogp_j| + exp(logp_j) sum_c |dlogp_c|) + the smallest
//                        subnormal.
//   backward row sums    |sum_j dx_j| <= sum_j (bound of dx_j) + the exact defect of the identity
//                        (|<y, dy>| |1 - sum y| resp. |sum dlogp| |1 - sum exp(logp)|: the inputs
//                        are rounded, so they sum to 1 only approximately).
//   finite differences   |dx_j - fd_j| <= 64 eps * mag_j + 1e-8 (1 + mag_j), mag_j the backward
//                        magnitude above: fd is a double-precision central difference of smax's
//                        own forward pass with h = 2^-16 (truncation ~h^2, rounding ~1e-14/h,
//                        both below 1e-9 for the O(1) inputs used); 64 eps covers the error of the
//                        forward output that the backward pass consumes.
//   exp_nonpos           2 ulp(exact), subnormal results included (tests/test_exp.cpp).
//   16-bit input         (Eigen::bfloat16, Eigen::half; tests/test_half.cpp) computed in float: a
//                        float destination holds the float result of the widened input, bit for
//                        bit; a 16-bit one that result rounded once (its Eigen cast, bit for bit),
//                        so within one 16-bit ulp (half: or 2^-24) plus the float budget above.
// Special values follow CONTRACT.md: the reference yields NaN where smax must yield NaN, and
// exact infinities and zeros where smax must yield exactly those.
#pragma once

#if defined(TWOBLUECUBES_SINGLE_INCLUDE_CATCH_HPP_INCLUDED) && \
    !defined(CATCH_CONFIG_EXTERNAL_INTERFACES)
#error "include reference.hpp before <catch2/catch.hpp>: its listener needs Catch's interfaces"
#endif
#ifndef CATCH_CONFIG_EXTERNAL_INTERFACES
#define CATCH_CONFIG_EXTERNAL_INTERFACES  // for the listener that prints the measured errors
#endif
#include <catch2/catch.hpp>

#include <Eigen/Core>
#include <smax/smax.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <iomanip>
#include <iostream>
#include <limits>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

namespace ref {

using ld = long double;
using Eigen::Index;
/// Distributions in rows: every reference and every check works in this orientation; a colwise
/// result is transposed into it before it is checked.
using LMat = Eigen::Matrix<ld, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using Mat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

inline constexpr ld inf = std::numeric_limits<ld>::infinity();
inline constexpr ld nan = std::numeric_limits<ld>::quiet_NaN();

template <class T>
constexpr const char* type_name() {
  return sizeof(T) == 4 ? "float" : "double";
}

/// The vector width of this build (best_arch: SSE2, AVX2, ... or 1 without SIMD).
template <class T>
inline constexpr Index lanes = smax::detail::lanes<smax::detail::vec_t<T, smax::detail::best_arch>>;

// ---- budgets (see the top of this file) -------------------------------------------------------

template <class T>
constexpr ld base_ulps = sizeof(T) == 4 ? 8 : 16;
template <class T>
constexpr ld underflow_arg = sizeof(T) == 4 ? 104 : 746;
template <class T>
constexpr ld eps = std::numeric_limits<T>::epsilon();
template <class T>
constexpr ld denorm = std::numeric_limits<T>::denorm_min();
inline constexpr ld backward_eps = 16;
inline constexpr ld equal_logits_sum_ulps = 4;
inline constexpr ld fd_eps = 64;     // finite differences: 64 eps * mag_j ...
inline constexpr ld fd_abs = 1e-8L;  // ... + 1e-8 (1 + mag_j)
inline constexpr double fd_step = 0x1p-16;
inline constexpr double exp_ulps = 2;

/// The softmax budget in ulps for an entry at distance d = x_j - max from its row's maximum.
template <class T>
ld softmax_budget_ulps(Index k, ld d) {
  if (std::isnan(d) || std::isinf(d)) return 0;  // masked entry or special row: exact
  return base_ulps<T> + std::log2(static_cast<ld>(k)) + std::min(std::fabs(d), underflow_arg<T>);
}

// ---- ulps and errors
// ------------------------------------------------------------------------------

/// The spacing of T at the exact value v (see the top of this file).
template <class T>
ld ulp(ld v) {
  v = std::fabs(v);
  if (!(v >= std::numeric_limits<T>::min())) return denorm<T>;
  int e = 0;
  std::frexp(v, &e);  // v = f 2^e, 0.5 <= f < 1
  return std::ldexp(1.0L, e - std::numeric_limits<T>::digits);
}

/// |got - exact|, where NaN matches NaN, an infinity matches itself, and an exact value beyond
/// T's range matches the infinity it rounds to; any other disagreement is infinite.
template <class T>
ld abs_error(ld got, ld exact) {
  if (std::isnan(exact)) return std::isnan(got) ? 0 : inf;
  const T rounded = static_cast<T>(exact);
  if (std::isinf(rounded)) return got == static_cast<ld>(rounded) ? 0 : inf;
  if (!std::isfinite(got)) return inf;
  return std::fabs(got - exact);
}

// ---- sums
// -------------------------------------------------------------------------------------------

/// Neumaier's compensated sum: about one rounding of long double whatever the length, so the
/// reference's sums are exact for the purposes of float and double.
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

// ---- the reference, one distribution x[0..k) at a time ----------------------------------------

struct row_info {
  bool nan = false, pos_inf = false;
  ld max = -inf;  // -inf for a fully masked row or k = 0
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

/// sum_j exp(x_j - max) for a row that is neither poisoned nor fully masked.
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

/// dx_j = y_j (dy_j - <y, dy>); mag_j = |y_j| (|dy_j| + sum_c |y_c dy_c|).
inline void softmax_backward(const ld* y, const ld* dy, Index k, ld* dx, ld* mag) {
  exact_sum dot, abs_dot;
  for (Index c = 0; c < k; ++c) {
    dot.add(y[c] * dy[c]);
    abs_dot.add(std::fabs(y[c] * dy[c]));
  }
  for (Index j = 0; j < k; ++j) {
    dx[j] = y[j] * (dy[j] - dot.value());
    mag[j] = std::fabs(y[j]) * (std::fabs(dy[j]) + abs_dot.value());
  }
}

/// dx_j = dlogp_j - exp(logp_j) sum_c dlogp_c; mag_j = |dlogp_j| + exp(logp_j) sum_c |dlogp_c|.
inline void log_softmax_backward(const ld* logp, const ld* dlogp, Index k, ld* dx, ld* mag) {
  exact_sum s, abs_s;
  for (Index c = 0; c < k; ++c) {
    s.add(dlogp[c]);
    abs_s.add(std::fabs(dlogp[c]));
  }
  for (Index j = 0; j < k; ++j) {
    const ld p = std::exp(logp[j]);
    dx[j] = dlogp[j] - p * s.value();
    mag[j] = std::fabs(dlogp[j]) + p * abs_s.value();
  }
}

// ---- the reference over matrices whose rows are distributions -------------------------------

template <class F>
LMat per_row(const LMat& x, F&& f) {
  LMat y(x.rows(), x.cols());
  // Row pointers by arithmetic: x(i, 0) of a matrix with no columns is a null reference.
  for (Index i = 0; i < x.rows(); ++i) f(x.data() + i * x.cols(), x.cols(), y.data() + i * y.cols());
  return y;
}
inline LMat softmax(const LMat& x) {
  return per_row(x, [](const ld* a, Index k, ld* b) { softmax(a, k, b); });
}
inline LMat log_softmax(const LMat& x) {
  return per_row(x, [](const ld* a, Index k, ld* b) { log_softmax(a, k, b); });
}
inline LMat logsumexp(const LMat& x) {
  LMat out(x.rows(), 1);
  for (Index i = 0; i < x.rows(); ++i) out(i, 0) = logsumexp(x.row(i).data(), x.cols());
  return out;
}

/// Converts any Eigen object to long double, transposed when its distributions are columns.
template <class Derived>
LMat to_ld(const Eigen::DenseBase<Derived>& m, bool transpose = false) {
  const Eigen::Matrix<ld, Eigen::Dynamic, Eigen::Dynamic> a = m.derived().template cast<ld>();
  if (transpose) return a.transpose();
  return a;
}

// ---- checks
// -----------------------------------------------------------------------------------------

/// The largest errors measured by every check, per operation and type; printed at the end of
/// the run by the listener below (the README quotes them).
struct measured {
  double worst_ulps = 0;   // largest error in the check's unit (ulps, or eps * magnitude)
  double worst_ratio = 0;  // largest error / budget
  long long elements = 0;
};
inline std::map<std::string, measured>& measurements() {
  static std::map<std::string, measured> m;
  return m;
}

/// The outcome of comparing every element of one result with the reference.
class verdict {
 public:
  verdict(std::string op, const char* type) : op_(std::move(op)), type_(type) {}

  /// One element (i, j) of the logical result: error against `bound`, reported in `unit`s.
  template <class T>
  void add(Index i, Index j, ld got, ld exact, ld unit, ld bound) {
    const ld err = abs_error<T>(got, exact);
    ++count_;
    const bool ok = err == 0 || err <= bound;  // a NaN bound (NaN inputs) needs an exact match
    if (!ok && failures_++ == 0) first_failure_ = where(i, j, got, exact, err, unit, bound);
    if (std::isinf(err) || err == 0) return;
    const double ulps = static_cast<double>(err / unit);
    const double ratio = static_cast<double>(err / bound);
    worst_ulps_ = std::max(worst_ulps_, ulps);
    if (ratio > worst_ratio_) {
      worst_ratio_ = ratio;
      worst_ = where(i, j, got, exact, err, unit, bound);
    }
  }
  /// A result of the wrong shape.
  void wrong_shape(Index rows, Index cols, Index want_rows, Index want_cols) {
    ++failures_;
    first_failure_ = "shape " + std::to_string(rows) + "x" + std::to_string(cols) + ", expected " +
                     std::to_string(want_rows) + "x" + std::to_string(want_cols);
  }

  /// Whether every element is within budget; also adds this verdict to measurements().
  bool ok() const {
    auto& m = measurements()[op_ + "<" + type_ + ">"];
    m.worst_ulps = std::max(m.worst_ulps, worst_ulps_);
    m.worst_ratio = std::max(m.worst_ratio, worst_ratio_);
    m.elements += count_;
    return failures_ == 0;
  }
  std::string describe() const {
    std::ostringstream s;
    s << op_ << "<" << type_ << ">: " << count_ << " elements, " << failures_
      << " over budget; worst " << worst_ulps_ << " units (" << worst_ratio_ << " of budget)";
    if (!worst_.empty()) s << " at " << worst_;
    if (failures_ != 0) s << "; first failure at " << first_failure_;
    return s.str();
  }

 private:
  static std::string where(Index i, Index j, ld got, ld exact, ld err, ld unit, ld bound) {
    std::ostringstream s;
    s << std::setprecision(21) << "(" << i << ", " << j << "): got " << got << ", exact " << exact
      << ", error " << static_cast<double>(err / unit) << " units, budget "
      << static_cast<double>(bound / unit);
    return s.str();
  }

  std::string op_;
  const char* type_;
  Index count_ = 0, failures_ = 0;
  double worst_ulps_ = 0, worst_ratio_ = 0;
  std::string worst_, first_failure_;
};

/// CHECK that a verdict holds, printing the worst and the first failing element either way.
#define REF_CHECK(verdict_expr)                   \
  do {                                            \
    const ::ref::verdict ref_v_ = (verdict_expr); \
    INFO(ref_v_.describe());                      \
    CHECK(ref_v_.ok());                           \
  } while (0)

inline bool same_shape(verdict& v, const LMat& got, Index rows, Index cols) {
  if (got.rows() == rows && got.cols() == cols) return true;
  v.wrong_shape(got.rows(), got.cols(), rows, cols);
  return false;
}

/// x: the logits (rows are distributions); got: smax's probabilities, same orientation.
template <class T>
verdict check_softmax(const LMat& x, const LMat& got) {
  verdict v("softmax", type_name<T>());
  if (!same_shape(v, got, x.rows(), x.cols())) return v;
  // The error near the maximum, where the shifted argument is (nearly) exact, is measured apart:
  // it is the error of the kernel itself, which the |x_j - max| term would hide.
  verdict near("softmax, |x_j - max| <= 1", type_name<T>());
  const LMat exact = softmax(x);
  for (Index i = 0; i < x.rows(); ++i) {
    const row_info r = inspect(x.row(i).data(), x.cols());
    for (Index j = 0; j < x.cols(); ++j) {
      const ld d = r.poisoned() ? nan : x(i, j) - r.max;
      const ld unit = ulp<T>(exact(i, j));
      const ld bound = softmax_budget_ulps<T>(x.cols(), d) * unit;
      v.add<T>(i, j, got(i, j), exact(i, j), unit, bound);
      if (std::fabs(d) <= 1) near.add<T>(i, j, got(i, j), exact(i, j), unit, bound);
    }
  }
  (void)near.ok();  // records the measurement; its elements are checked through v
  return v;
}

template <class T>
verdict check_log_softmax(const LMat& x, const LMat& got) {
  verdict v("log_softmax", type_name<T>());
  if (!same_shape(v, got, x.rows(), x.cols())) return v;
  const LMat exact = log_softmax(x);
  for (Index i = 0; i < x.rows(); ++i)
    for (Index j = 0; j < x.cols(); ++j) {
      const ld unit = ulp<T>(std::max<ld>(std::fabs(exact(i, j)), 1));
      v.add<T>(i, j, got(i, j), exact(i, j), unit, base_ulps<T> * unit);
    }
  return v;
}

/// got: one value per distribution, as an n x 1 or 1 x n matrix.
template <class T>
verdict check_logsumexp(const LMat& x, LMat got) {
  verdict v("logsumexp", type_name<T>());
  if (got.rows() == 1 && got.cols() != 1) got.transposeInPlace();
  if (!same_shape(v, got, x.rows(), 1)) return v;
  const LMat exact = logsumexp(x);
  for (Index i = 0; i < x.rows(); ++i) {
    const ld unit = ulp<T>(std::max<ld>(std::fabs(exact(i, 0)), 1));
    v.add<T>(i, 0, got(i, 0), exact(i, 0), unit, base_ulps<T> * unit);
  }
  return v;
}

/// The backward reference: exact results and magnitudes of a whole matrix.
struct backward_ref {
  LMat dx, mag;
};
template <class F>
backward_ref backward(const LMat& a, const LMat& b, F&& f) {
  backward_ref r{LMat(a.rows(), a.cols()), LMat(a.rows(), a.cols())};
  for (Index i = 0; i < a.rows(); ++i)
    f(a.row(i).data(), b.row(i).data(), a.cols(), r.dx.row(i).data(), r.mag.row(i).data());
  return r;
}
inline backward_ref softmax_backward(const LMat& y, const LMat& dy) {
  return backward(y, dy, [](auto... a) { softmax_backward(a...); });
}
inline backward_ref log_softmax_backward(const LMat& logp, const LMat& dlogp) {
  return backward(logp, dlogp, [](auto... a) { log_softmax_backward(a...); });
}

template <class T>
ld backward_bound(ld mag) {
  return backward_eps * eps<T> * mag + denorm<T>;
}

template <class T>
verdict check_backward(const char* op, const backward_ref& r, const LMat& got) {
  verdict v(op, type_name<T>());
  if (!same_shape(v, got, r.dx.rows(), r.dx.cols())) return v;
  for (Index i = 0; i < got.rows(); ++i)
    for (Index j = 0; j < got.cols(); ++j) {
      const ld unit = std::max(eps<T> * r.mag(i, j), denorm<T>);
      v.add<T>(i, j, got(i, j), r.dx(i, j), unit, backward_bound<T>(r.mag(i, j)));
    }
  return v;
}
template <class T>
verdict check_softmax_backward(const LMat& y, const LMat& dy, const LMat& got) {
  return check_backward<T>("softmax_backward", softmax_backward(y, dy), got);
}
template <class T>
verdict check_log_softmax_backward(const LMat& logp, const LMat& dlogp, const LMat& got) {
  return check_backward<T>("log_softmax_backward", log_softmax_backward(logp, dlogp), got);
}

/// The identity sum_j dx_j = 0, per row (j = -1 in the report), for rows that are distributions
/// (a fully masked row, whose weights are all 0, has nothing to sum to 1). `weights` are y for
/// softmax_backward (defect <y, dy> (1 - sum y)) and exp(logp) for log_softmax_backward
/// (defect sum dlogp (1 - sum exp(logp))); `up` is dy resp. dlogp. Errors are reported in units
/// of eps sum_j mag_j.
template <class T>
verdict check_rows_sum_to_zero(const char* op, const backward_ref& r, const LMat& weights,
                               const LMat& up, bool weighted_dot, const LMat& got) {
  verdict v(std::string(op) + " row sums", type_name<T>());
  if (!same_shape(v, got, r.dx.rows(), r.dx.cols())) return v;
  for (Index i = 0; i < got.rows(); ++i) {
    exact_sum sum, bound, mag, w, coefficient;
    for (Index j = 0; j < got.cols(); ++j) {
      sum.add(got(i, j));
      bound.add(backward_bound<T>(r.mag(i, j)));
      mag.add(r.mag(i, j));
      w.add(weights(i, j));
      coefficient.add(weighted_dot ? weights(i, j) * up(i, j) : up(i, j));
    }
    if (w.value() == 0) continue;
    const ld defect = std::fabs(coefficient.value()) * std::fabs(1 - w.value());
    v.add<T>(i, -1, sum.value(), 0, std::max(eps<T> * mag.value(), denorm<T>),
             bound.value() + defect);
  }
  return v;
}

// ---- random and adversarial inputs
// ----------------------------------------------------------------

/// Fixed-seed random numbers defined bit for bit by the standard (mt19937_64 and plain
/// arithmetic, no std::*_distribution), so every platform sees the same inputs.
class rng {
 public:
  explicit rng(std::uint64_t seed) : g_(seed) {}
  ld uniform() { return static_cast<ld>(g_() >> 11) * 0x1p-53L; }  // [0, 1)
  ld uniform(ld lo, ld hi) { return lo + (hi - lo) * uniform(); }
  Index below(Index n) { return static_cast<Index>(g_() % static_cast<std::uint64_t>(n)); }
  std::uint64_t bits() { return g_(); }

 private:
  std::mt19937_64 g_;
};

/// A seed from the parameters of a case (splitmix64 of their combination).
inline std::uint64_t seed_of(std::uint64_t a, std::uint64_t b = 0, std::uint64_t c = 0,
                             std::uint64_t d = 0) {
  std::uint64_t z = 0x5eed5eed5eed5eedULL;
  for (std::uint64_t v : {a, b, c, d}) {
    z += v + 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
  }
  return z;
}

/// A NaN of T with (random) payload bits and sign, not just the default quiet NaN.
template <class T>
T nan_with_payload(rng& g) {
  using U = std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint64_t>;
  constexpr int mantissa = std::numeric_limits<T>::digits - 1;
  const U exponent = ((U(1) << (sizeof(T) * 8 - 1 - mantissa)) - 1) << mantissa;
  const U quiet = U(1) << (mantissa - 1);
  const U payload = static_cast<U>(g.bits()) & (quiet - 1);
  const U sign = (g.bits() & 1) ? U(1) << (sizeof(T) * 8 - 1) : U(0);
  const U b = sign | exponent | quiet | payload;
  T out;
  std::memcpy(&out, &b, sizeof out);
  return out;
}

enum class scenario {
  standard,       // uniform in [-8, 8]
  spread,         // uniform in [-(C + 16), 0]: probabilities down to subnormal and 0
  offset_up,      // 1e4 + uniform in [-8, 8]
  offset_down,    // -1e4 + uniform in [-8, 8]
  offset_huge,    // 1e30 + uniform in [-1e24, 1e24]: gaps of >= 1e14 (double) / 7e22 (float), ties
  near_overflow,  // max<T>, -max<T>, max<T> * [0.5, 1), and [-8, 8], a quarter each
  masked,         // row 0 of every 4 fully -inf, the others -inf with probability 1/3
  poisoned,       // rows cycle: a NaN (with payload), clean, a +inf, a NaN and a +inf
  mixed,          // rows cycle through all the kinds above, so that neighbours in one vector differ
};
inline const char* name(scenario s) {
  switch (s) {
    case scenario::standard:
      return "standard";
    case scenario::spread:
      return "spread";
    case scenario::offset_up:
      return "offset +1e4";
    case scenario::offset_down:
      return "offset -1e4";
    case scenario::offset_huge:
      return "offset 1e30";
    case scenario::near_overflow:
      return "near overflow";
    case scenario::masked:
      return "masked";
    case scenario::poisoned:
      return "NaN/+inf rows";
    case scenario::mixed:
      return "mixed";
  }
  return "?";
}
inline std::vector<scenario> all_scenarios() {
  return {scenario::standard,    scenario::spread,      scenario::offset_up,
          scenario::offset_down, scenario::offset_huge, scenario::near_overflow,
          scenario::masked,      scenario::poisoned,    scenario::mixed};
}

/// n distributions of k logits (rows), filled according to the scenario.
template <class T>
Mat<T> logits(scenario s, Index n, Index k, std::uint64_t seed) {
  rng g(seed);
  const T big = std::numeric_limits<T>::max();
  const T minus_inf = -std::numeric_limits<T>::infinity();
  Mat<T> x(n, k);
  // Row i, filled as `kind`; `pattern` picks the fully masked and the poisoned variants.
  auto fill_row = [&](Index i, scenario kind, Index pattern) {
    for (Index j = 0; j < k; ++j) {
      T v = static_cast<T>(g.uniform(-8, 8));
      switch (kind) {
        case scenario::spread:
          v = static_cast<T>(g.uniform(-(underflow_arg<T> + 16), 0));
          break;
        case scenario::offset_up:
          v = static_cast<T>(1e4L + g.uniform(-8, 8));
          break;
        case scenario::offset_down:
          v = static_cast<T>(-1e4L + g.uniform(-8, 8));
          break;
        case scenario::offset_huge:
          v = static_cast<T>(1e30L + g.uniform(-1e24L, 1e24L));
          break;
        case scenario::near_overflow: {
          const Index which = g.below(4);
          if (which == 0) v = big;
          if (which == 1) v = -big;
          if (which == 2) v = static_cast<T>(big * g.uniform(0.5, 1));
          break;
        }
        case scenario::masked:
          if (pattern % 4 == 0 || g.below(3) == 0) v = minus_inf;
          break;
        default:
          break;
      }
      x(i, j) = v;
    }
    if (kind == scenario::poisoned && k > 0) {
      const Index what = pattern % 4;
      if (what == 0 || what == 3) x(i, g.below(k)) = nan_with_payload<T>(g);
      if (what == 2 || what == 3) x(i, g.below(k)) = std::numeric_limits<T>::infinity();
    }
  };
  static const scenario cycle[] = {
      scenario::poisoned,      scenario::standard,    scenario::masked,   scenario::spread,
      scenario::near_overflow, scenario::offset_huge, scenario::offset_up};
  for (Index i = 0; i < n; ++i) {
    if (s != scenario::mixed)
      fill_row(i, s, i);
    else  // each kind's variants in turn: NaN and +inf, NaN, clean, +inf; partly or fully masked
      fill_row(i, cycle[i % 7], i / 7 + 3);
  }
  return x;
}

/// Inputs of the backward passes: y = softmax and logp = log_softmax of `s` logits, rounded to T
/// (so that they are what smax's forward pass returns, up to its error), and upstream gradients
/// dy, dlogp uniform in [-1, 1].
template <class T>
struct backward_inputs {
  Mat<T> y, dy, logp, dlogp;
};
template <class T>
backward_inputs<T> make_backward_inputs(scenario s, Index n, Index k, std::uint64_t seed) {
  const LMat x = logits<T>(s, n, k, seed).template cast<ld>();
  backward_inputs<T> in{softmax(x).template cast<T>(), Mat<T>(n, k),
                        log_softmax(x).template cast<T>(), Mat<T>(n, k)};
  rng g(seed ^ 0xd1ffULL);
  for (Index i = 0; i < n; ++i)
    for (Index j = 0; j < k; ++j) {
      in.dy(i, j) = static_cast<T>(g.uniform(-1, 1));
      in.dlogp(i, j) = static_cast<T>(g.uniform(-1, 1));
    }
  return in;
}

/// The K of the issue: 1, 2, 3, the SIMD tails around lanes, 16 and 64 vectors (the summation
/// blocks) and the vocabulary sizes 1000 and 50257; also 16 and 17, either side of the largest K
/// that the kernels process with rows in lanes. Sorted, without duplicates.
template <class T>
std::vector<Index> class_counts() {
  const Index l = lanes<T>;
  std::vector<Index> k = {1,  2,  3,          l - 1,      l,    l + 1, 2 * l + 1,
                          16, 17, 16 * l - 1, 64 * l + 3, 1000, 50257};
  std::sort(k.begin(), k.end());
  k.erase(std::unique(k.begin(), k.end()), k.end());
  k.erase(std::remove_if(k.begin(), k.end(), [](Index v) { return v < 1; }), k.end());
  return k;
}

/// Batch sizes N: 0, 1 and sizes that are not multiples of lanes (column-major rows are
/// vectorized across rows); fewer for the largest K to keep the run short.
template <class T>
std::vector<Index> batch_sizes(Index k) {
  const Index l = lanes<T>;
  std::vector<Index> n;
  if (k > 1000)
    n = {l + 1};  // one vector of rows and a remainder; N = 1 is covered by the equal-logits test
  else if (k >= 200)
    n = {0, 1, l + 1, 2 * l + 3};
  else
    n = {0, 1, 2, l - 1, l, 2 * l + 1, 3 * l + 2};
  std::sort(n.begin(), n.end());
  n.erase(std::unique(n.begin(), n.end()), n.end());
  n.erase(std::remove_if(n.begin(), n.end(), [](Index v) { return v < 0; }), n.end());
  return n;
}

// ---- layouts
// ----------------------------------------------------------------------------------------

/// Calls f(storage, axis) with storage an integral_constant holding Eigen::RowMajor or
/// Eigen::ColMajor and axis smax::rowwise or smax::colwise, as chosen at run time.
template <class F>
void for_layout(bool row_major, bool colwise, F&& f) {
  auto with_axis = [&](auto storage) {
    if (colwise)
      f(storage, smax::colwise);
    else
      f(storage, smax::rowwise);
  };
  if (row_major)
    with_axis(std::integral_constant<int, Eigen::RowMajor>{});
  else
    with_axis(std::integral_constant<int, Eigen::ColMajor>{});
}

/// The logical matrix (rows are distributions) stored for smax: itself for rowwise, its
/// transpose for colwise, in the given storage order.
template <int Storage, class T>
Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Storage> stored(const Mat<T>& logical,
                                                                 bool colwise) {
  using M = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Storage>;
  return colwise ? M(logical.transpose()) : M(logical);
}

// ---- the report ---------------------------------------------------------------------------------

/// Prints the worst errors measured in the run (per operation and type) after the last test.
struct accuracy_listener : Catch::TestEventListenerBase {
  using TestEventListenerBase::TestEventListenerBase;
  void testRunEnded(Catch::TestRunStats const& stats) override {
    if (!measurements().empty()) {
      std::cout << "\nsmax measured accuracy (" << smax::detail::best_arch::name() << ", "
                << lanes<float> << " float lanes):\n";
      for (const auto& [op, m] : measurements())
        std::cout << "  " << std::left << std::setw(34) << op << " worst " << std::setw(10)
                  << std::setprecision(4) << m.worst_ulps << " units = " << std::setw(10)
                  << m.worst_ratio << " of budget, " << m.elements << " elements\n";
      std::cout << std::flush;
    }
    TestEventListenerBase::testRunEnded(stats);
  }
};
CATCH_REGISTER_LISTENER(accuracy_listener)

}  // namespace ref
