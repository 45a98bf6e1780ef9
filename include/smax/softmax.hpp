// softmax, log_softmax, logsumexp and their backward passes over any dense Eigen expression.
//
// Every function takes its arguments as Eigen expressions (matrices, arrays, blocks, Maps of raw
// buffers, products...), float or double, row- or column-major, and returns either a lazy proxy
// that writes straight into the destination of an assignment (`y = smax::softmax(x)` makes no
// temporary; `y = smax::softmax(y)` is correct) or, for logsumexp of a vector, a scalar.
//
// Special values (one policy for every function; see detail/special.hpp):
//   * max(x) is subtracted before exp, so huge finite inputs (up to the type's max) are exact;
//   * a -inf entry next to finite ones gets probability exactly 0 and log-probability -inf;
//   * a fully masked distribution (all -inf) gives softmax 0, log_softmax -inf and logsumexp
//     -inf, never NaN;
//   * a NaN or +inf anywhere in a distribution makes its softmax and log_softmax NaN; its
//     logsumexp is NaN for NaN and +inf for +inf (NaN when both occur). Other distributions are
//     untouched;
//   * one class gives softmax 1 and log_softmax 0; an empty input gives an empty result, and the
//     logsumexp of zero classes is -inf.
#pragma once

#include <Eigen/Core>

#include "smax/detail/eigen_bridge.hpp"

#include <type_traits>

namespace smax {

/// Distributions run along rows: an N x K matrix holds N distributions of K classes (samples in
/// rows, like `x.rowwise()` in Eigen). The default for matrices.
struct rowwise_t {
  static constexpr bool by_rows = true;
};
/// Distributions run along columns: a K x N matrix holds N distributions of K classes.
struct colwise_t {
  static constexpr bool by_rows = false;
};
inline constexpr rowwise_t rowwise{};
inline constexpr colwise_t colwise{};

namespace detail {

template <class Axis>
inline constexpr bool is_axis_v =
    std::is_same<Axis, rowwise_t>::value || std::is_same<Axis, colwise_t>::value;

struct softmax_kernel {
  static constexpr const char* name = "smax::softmax";
  static constexpr bool elementwise = true;
  template <class X, class Y>
  static void apply(index_t n, index_t k, strided<const X> x, strided<Y> y) noexcept {
    detail::softmax<best_arch>(n, k, x, y, thread_count());
  }
};
struct log_softmax_kernel {
  static constexpr const char* name = "smax::log_softmax";
  static constexpr bool elementwise = true;
  template <class X, class Y>
  static void apply(index_t n, index_t k, strided<const X> x, strided<Y> y) noexcept {
    detail::log_softmax<best_arch>(n, k, x, y, thread_count());
  }
};
struct logsumexp_kernel {
  static constexpr const char* name = "smax::logsumexp";
  static constexpr bool elementwise = false;
  template <class X, class Y>
  static void apply(index_t n, index_t k, strided<const X> x, per_dist<Y> out) noexcept {
    detail::logsumexp<best_arch>(n, k, x, out, thread_count());
  }
};
struct softmax_backward_kernel {
  static constexpr const char* name = "smax::softmax_backward";
  static constexpr bool elementwise = true;
  template <class T>
  static void apply(index_t n, index_t k, strided<const T> y, strided<const T> dy,
                    strided<T> dx) noexcept {
    detail::softmax_backward<best_arch>(n, k, y, dy, dx, thread_count());
  }
};
struct log_softmax_backward_kernel {
  static constexpr const char* name = "smax::log_softmax_backward";
  static constexpr bool elementwise = true;
  template <class T>
  static void apply(index_t n, index_t k, strided<const T> logp, strided<const T> dlogp,
                    strided<T> dx) noexcept {
    detail::log_softmax_backward<best_arch>(n, k, logp, dlogp, dx, thread_count());
  }
};

template <class Kernel, class Axis, class X>
auto elementwise_proxy(const X& x) {
  check_scalar<X>();
  static_assert(is_axis_v<Axis>, "smax: the axis is smax::rowwise or smax::colwise");
  return proxy<Kernel, typename X::PlainObject, X>(by_rows<X>(Axis::by_rows), x.rows(), x.cols(),
                                                   x);
}

template <class Kernel, class Axis, class Y, class DY>
auto backward_proxy(const char* fn, const Y& y, const DY& dy) {
  check_real_scalar<Y>();
  static_assert(std::is_same<scalar_t<Y>, scalar_t<DY>>::value,
                "smax: both arguments of a backward pass have the same scalar type");
  static_assert(is_axis_v<Axis>, "smax: the axis is smax::rowwise or smax::colwise");
  require_same_shape(fn, "y", y, "dy", dy);
  return proxy<Kernel, typename Y::PlainObject, Y, DY>(by_rows<Y>(Axis::by_rows), y.rows(),
                                                       y.cols(), y, dy);
}

}  // namespace detail

/// Probabilities: softmax(x)_j = exp(x_j - max) / sum_c exp(x_c - max), per distribution.
///
/// @param x     any dense Eigen expression of float or double; a compile-time vector is one
///              distribution, a matrix holds one per row (smax::rowwise, default) or column.
/// @return      a proxy to assign to a writable dense object of x's shape (resized when it is a
///              plain Matrix/Array); `x = softmax(x)` is allowed.
/// Accuracy: each element within (8 + log2 K + |x_j - max|) ulp (float) or
///   (16 + log2 K + |x_j - max|) ulp (double) of the exact value; the |x_j - max| term is the
///   rounding of the shifted argument. Each distribution sums to 1 within a few ulp.
/// Special values: see the top of this header (masked rows give 0, NaN/+inf rows give NaN).
/// Throws std::invalid_argument when assigned to a destination of another shape that cannot be
///   resized.
template <class Derived, class Axis = rowwise_t>
auto softmax(const Eigen::DenseBase<Derived>& x, Axis axis = {}) {
  (void)axis;
  return detail::elementwise_proxy<detail::softmax_kernel, Axis>(x.derived());
}

/// Log-probabilities: log_softmax(x)_j = (x_j - max) - log(sum_c exp(x_c - max)).
///
/// Arguments and result as softmax.
/// Accuracy: within 8 ulp (float) / 16 ulp (double) of max(|result|, 1).
/// Special values: -inf entries give -inf; a fully masked distribution gives -inf everywhere;
///   NaN/+inf poison the distribution (NaN). log_softmax([FLT_MAX, 1]) = [0, -FLT_MAX].
template <class Derived, class Axis = rowwise_t>
auto log_softmax(const Eigen::DenseBase<Derived>& x, Axis axis = {}) {
  (void)axis;
  return detail::elementwise_proxy<detail::log_softmax_kernel, Axis>(x.derived());
}

/// log(sum_j exp(x_j)), computed as max + log(sum_j exp(x_j - max)).
///
/// @return for a compile-time vector, the scalar; for a matrix, a proxy for a column vector
///         (rowwise: one value per row) or a row vector (colwise: one per column).
/// Accuracy: within 8 ulp (float) / 16 ulp (double) of max(|result|, 1).
/// Special values: -inf for a fully masked distribution or zero classes; NaN if any entry is
///   NaN; +inf if any entry is +inf (and none is NaN).
template <class Derived, class Axis = rowwise_t>
auto logsumexp(const Eigen::DenseBase<Derived>& x, Axis axis = {}) {
  (void)axis;
  using X = Derived;
  using T = detail::scalar_t<X>;
  detail::check_scalar<X>();
  static_assert(detail::is_axis_v<Axis>, "smax: the axis is smax::rowwise or smax::colwise");
  if constexpr (X::IsVectorAtCompileTime) {
    const Eigen::Matrix<detail::compute_t<T>, 1, 1> r =
        detail::proxy<detail::logsumexp_kernel, Eigen::Matrix<T, 1, 1>, X>(detail::by_rows<X>(true),
                                                                           1, 1, x.derived());
    return r(0);
  } else if constexpr (Axis::by_rows) {
    using Ret = std::conditional_t<detail::is_array_v<X>, Eigen::Array<T, X::RowsAtCompileTime, 1>,
                                   Eigen::Matrix<T, X::RowsAtCompileTime, 1>>;
    return detail::proxy<detail::logsumexp_kernel, Ret, X>(true, x.rows(), 1, x.derived());
  } else {
    using Ret = std::conditional_t<detail::is_array_v<X>, Eigen::Array<T, 1, X::ColsAtCompileTime>,
                                   Eigen::Matrix<T, 1, X::ColsAtCompileTime>>;
    return detail::proxy<detail::logsumexp_kernel, Ret, X>(false, 1, x.cols(), x.derived());
  }
}

/// Backward pass of softmax: dx = y ⊙ (dy − ⟨dy, y⟩) per distribution, where y = softmax(x) and
/// dy = ∂loss/∂y. Never forms the K x K Jacobian; as the Jacobian is symmetric, this is also the
/// Jacobian-vector product.
///
/// @param y   the softmax output; @param dy  the upstream gradient, same shape as y.
/// Accuracy: within 16 eps of the magnitudes involved (|y_j| (|dy_j| + sum_c |y_c dy_c|)).
/// Special values: propagate as IEEE arithmetic does (a NaN in dy poisons its distribution).
/// Throws std::invalid_argument (naming both shapes) when y and dy differ in shape.
template <class DerivedY, class DerivedDY, class Axis = rowwise_t>
auto softmax_backward(const Eigen::DenseBase<DerivedY>& y, const Eigen::DenseBase<DerivedDY>& dy,
                      Axis axis = {}) {
  (void)axis;
  return detail::backward_proxy<detail::softmax_backward_kernel, Axis>("smax::softmax_backward",
                                                                       y.derived(), dy.derived());
}

/// Backward pass of log_softmax: dx = dlogp − exp(logp) · Σ dlogp per distribution, where
/// logp = log_softmax(x) and dlogp = ∂loss/∂logp.
///
/// Accuracy: within 16 eps of the magnitudes involved (|dlogp_j| + exp(logp_j) sum_c |dlogp_c|).
/// Special values: logp = -inf contributes exp(-inf) = 0; NaN propagates.
/// Throws std::invalid_argument (naming both shapes) when logp and dlogp differ in shape.
template <class DerivedL, class DerivedDL, class Axis = rowwise_t>
auto log_softmax_backward(const Eigen::DenseBase<DerivedL>& logp,
                          const Eigen::DenseBase<DerivedDL>& dlogp, Axis axis = {}) {
  (void)axis;
  return detail::backward_proxy<detail::log_softmax_backward_kernel, Axis>(
      "smax::log_softmax_backward", logp.derived(), dlogp.derived());
}

}  // namespace smax
