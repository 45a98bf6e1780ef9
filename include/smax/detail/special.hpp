// The special-value policy, in one place (CONTRACT.md "Semantics"). Every kernel finishes a
// distribution through these functions; S is a scalar (one distribution) or a vector (one
// distribution per lane).
//
// With m = max(x) and s = sum(exp(x - shift)):
//   * a fully masked distribution (all -inf) has m = -inf; shifting by 0 instead of m makes every
//     exp(x - shift) = 0 rather than exp(-inf + inf) = NaN, so s = 0, and the finishers below
//     turn s = 0 into probabilities 0, log-probabilities -inf and logsumexp -inf;
//   * a NaN anywhere makes s NaN (exp(NaN) = NaN), which reaches every output of the distribution;
//   * a +inf makes m = +inf and exp(inf - inf) = NaN, so softmax and log_softmax are NaN, while
//     logsumexp is +inf (NaN if the distribution also holds a NaN: see lse_of).
// For finite m, the max element contributes exp(0) = 1 exactly, so s >= 1: no division by zero.
#pragma once

#include "smax/detail/simd.hpp"

#include <limits>

namespace smax::detail {

template <class S>
inline S row_shift(const S& m) noexcept {
  using T = scalar_of<S>;
  return select(m == S(-std::numeric_limits<T>::infinity()), S(T(0)), m);
}

/// 1 / s, and 0 for a fully masked distribution (s = 0): its probabilities are 0, not 0 * inf.
template <class S>
inline S row_reciprocal(const S& s) noexcept {
  using T = scalar_of<S>;
  return select(s == S(T(0)), S(T(0)), S(T(1)) / s);
}

/// log(s) as log_softmax subtracts it: 0 for a fully masked distribution, so that
/// x - shift - log_sum = -inf - 0 - 0 = -inf instead of -inf + inf = NaN.
template <class S>
inline S row_log_sum(const S& s) noexcept {
  using T = scalar_of<S>;
  return select(s == S(T(0)), S(T(0)), detail::log(s));
}

/// logsumexp = shift + log(s): -inf for a fully masked distribution (log 0), NaN when s is NaN.
/// A distribution whose max is +inf has s = NaN; its logsumexp is +inf unless it holds a NaN,
/// which `count_nan()` (called only in that rare case) tells.
template <class S, class CountNaN>
inline S lse_of(const S& m, const S& s, CountNaN&& count_nan) {
  using T = scalar_of<S>;
  const S inf(std::numeric_limits<T>::infinity());
  const S lse = row_shift(m) + detail::log(s);
  if (!any(m == inf)) return lse;
  const S nans = count_nan();
  return select(m == inf, select(nans > S(T(0)), S(std::numeric_limits<T>::quiet_NaN()), inf), lse);
}

}  // namespace smax::detail
