// Everything that touches Eigen's internals: how an expression is held, how its memory is
// described to the kernels, and the lazy proxy that evaluates a kernel straight into the
// destination of `y = smax::softmax(x)`.
#pragma once

#include <Eigen/Core>

#include "smax/detail/kernels.hpp"

#include <array>
#include <cstddef>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

namespace smax::detail {

template <class X>
inline constexpr bool has_direct_access_v = (Eigen::internal::traits<X>::Flags &
                                             Eigen::DirectAccessBit) != 0;

template <class X>
inline constexpr bool is_writable_direct_v = has_direct_access_v<X> &&
                                             (Eigen::internal::traits<X>::Flags &
                                              Eigen::LvalueBit) != 0;

/// The threads a call may use: Eigen's own knob (Eigen::setNbThreads, OMP_NUM_THREADS) when
/// compiled with OpenMP, else 1.
inline int thread_count() noexcept {
#ifdef _OPENMP
  return Eigen::nbThreads();
#else
  return 1;
#endif
}

/// How a proxy holds an argument: a reference to a plain object, a copy of a cheap view with
/// direct access (Block, Map), or the evaluated result of any other expression (evaluated once,
/// when the proxy is made).
template <class X>
using nested_t =
    std::conditional_t<has_direct_access_v<X>, typename Eigen::internal::ref_selector<X>::type,
                       typename X::PlainObject>;

template <class X>
using scalar_t = typename Eigen::internal::traits<X>::Scalar;

/// Eigen's 16-bit floats are stored as such and computed in float (detail/simd.hpp).
template <>
struct storage_format<Eigen::bfloat16> {
  static constexpr narrow value = narrow::bf16;
};
template <>
struct storage_format<Eigen::half> {
  static constexpr narrow value = narrow::f16;
};

template <class S>
inline constexpr bool is_real_v = std::is_same<S, float>::value || std::is_same<S, double>::value;

/// Inputs of the forward functions and cross-entropy: float, double, Eigen::bfloat16, Eigen::half.
template <class X>
constexpr void check_scalar() noexcept {
  static_assert(is_real_v<scalar_t<X>> || is_narrow_v<scalar_t<X>>,
                "smax: the scalar type must be float, double, Eigen::bfloat16 or Eigen::half");
}
/// Inputs of the backward passes and the vocabulary-parallel calls: float or double.
template <class X>
constexpr void check_real_scalar() noexcept {
  static_assert(is_real_v<scalar_t<X>>, "smax: the scalar type must be float or double");
}

/// The scalar types a result computed from elements of type S is written in: S itself, or float
/// (the compute type) for 16-bit input.
template <class D, class S>
inline constexpr bool is_result_type_v =
    std::is_same<D, S>::value || std::is_same<D, compute_t<S>>::value;

/// A plain Matrix or Array type with another scalar type.
template <class P, class D>
struct retype;
template <class S, int R, int C, int O, int MR, int MC, class D>
struct retype<Eigen::Matrix<S, R, C, O, MR, MC>, D> {
  using type = Eigen::Matrix<D, R, C, O, MR, MC>;
};
template <class S, int R, int C, int O, int MR, int MC, class D>
struct retype<Eigen::Array<S, R, C, O, MR, MC>, D> {
  using type = Eigen::Array<D, R, C, O, MR, MC>;
};
template <class P, class D>
using retype_t = typename retype<P, D>::type;

template <class X>
inline constexpr bool is_array_v =
    std::is_same<typename Eigen::internal::traits<X>::XprKind, Eigen::ArrayXpr>::value;

/// A vector known at compile time is one distribution, whatever the axis.
template <class X>
constexpr bool by_rows(bool requested) noexcept {
  if constexpr (X::RowsAtCompileTime == 1) {
    return true;
  } else if constexpr (X::ColsAtCompileTime == 1) {
    return false;
  } else {
    return requested;
  }
}

inline std::string shape(index_t rows, index_t cols) {
  return std::to_string(rows) + "x" + std::to_string(cols);
}

template <class A, class B>
void require_same_shape(const char* fn, const char* a_name, const A& a, const char* b_name,
                        const B& b) {
  if (a.rows() != b.rows() || a.cols() != b.cols())
    throw std::invalid_argument(std::string(fn) + ": " + b_name + " is " +
                                shape(b.rows(), b.cols()) + " but " + a_name + " is " +
                                shape(a.rows(), a.cols()));
}

/// The memory of a direct-access Eigen object seen as distributions along rows or columns.
template <class X>
auto dist_view(X& x, bool rows) noexcept {
  using P = std::remove_reference_t<decltype(*x.data())>;
  const index_t inner = x.innerStride(), outer = x.outerStride();
  const index_t rs = X::IsRowMajor ? outer : inner;
  const index_t cs = X::IsRowMajor ? inner : outer;
  return rows ? strided<P>{x.data(), rs, cs} : strided<P>{x.data(), cs, rs};
}

/// Byte range [first, last] touched by n x k elements of a view (empty when n or k is 0).
struct span {
  const char* first;
  const char* last;
};
template <class P>
span span_of(const strided<P>& a, index_t n, index_t k) noexcept {
  if (n == 0 || k == 0) return {nullptr, nullptr};
  const auto* first = reinterpret_cast<const char*>(a.p);
  const auto* last = reinterpret_cast<const char*>(a.p + (n - 1) * a.ds + (k - 1) * a.cs + 1) - 1;
  return {first, last};
}
template <class P>
span span_of(const per_dist<P>& a, index_t n, index_t) noexcept {
  if (n == 0) return {nullptr, nullptr};
  const auto* first = reinterpret_cast<const char*>(a.p);
  return {first, reinterpret_cast<const char*>(a.p + (n - 1) * a.stride + 1) - 1};
}
inline bool overlap(span a, span b) noexcept {
  return a.first != nullptr && b.first != nullptr && a.first <= b.last && b.first <= a.last;
}

/// An output may share memory with an input only when it is the very same view (in place:
/// every kernel reads element j before it writes element j, and never reads it again).
template <class O, class I>
bool unsafe_alias(const O& out, const strided<I>& in, index_t n, index_t k) noexcept {
  if constexpr (std::is_same<O, strided<std::remove_const_t<I>>>::value) {
    if (out.p == in.p && (out.ds == in.ds || n <= 1) && (out.cs == in.cs || k <= 1)) return false;
  }
  return overlap(span_of(out, n, k), span_of(in, n, k));
}

/// Lazy result of a kernel: `dst = proxy` runs the kernel with dst's memory as output.
/// Kernel::apply(n, k, inputs..., output) with strided inputs and a strided (elementwise
/// result) or per_dist (one value per distribution) output.
template <class Kernel, class Ret, class... In>
class proxy : public Eigen::ReturnByValue<proxy<Kernel, Ret, In...>> {
 public:
  using T = typename Ret::Scalar;
  using V = vec_t<compute_t<T>, best_arch>;  // the kernels' vectors

  proxy(bool rows, index_t out_rows, index_t out_cols, const In&... in)
      : in_(in...), rows_(rows), out_rows_(out_rows), out_cols_(out_cols) {}

  Eigen::Index rows() const noexcept { return out_rows_; }
  Eigen::Index cols() const noexcept { return out_cols_; }

  template <class Dest>
  void evalTo(Dest& dst) const {
    using D = scalar_t<Dest>;
    static_assert(is_result_type_v<D, T>,
                  "smax: the destination has the input's scalar type (or float, for "
                  "Eigen::bfloat16 and Eigen::half input)");
    if (dst.rows() != out_rows_ || dst.cols() != out_cols_)
      throw std::invalid_argument(std::string(Kernel::name) + ": the destination is " +
                                  shape(dst.rows(), dst.cols()) + " but the result is " +
                                  shape(out_rows_, out_cols_));
    if constexpr (!is_writable_direct_v<Dest>) {
      retype_t<Ret, D> tmp(out_rows_, out_cols_);
      evalTo(tmp);
      dst = tmp;
    } else {
      std::apply([&](const auto&... in) { run(dst, in...); }, in_);
    }
  }

 private:
  template <class Dest, class X0, class... Xs>
  void run(Dest& dst, const X0& x0, const Xs&... xs) const {
    const index_t n = rows_ ? x0.rows() : x0.cols();
    const index_t k = rows_ ? x0.cols() : x0.rows();
    const auto in0 = dist_view(x0, rows_);
    if constexpr (sizeof...(Xs) == 0) {
      finish(dst, n, k, in0);
    } else {
      // A further input in another layout than the first is copied into the first one's, so
      // that the kernel can take its vector path (mixed layouts happen only by accident).
      using Plain0 = typename X0::PlainObject;
      std::array<Plain0, sizeof...(Xs)> copies;
      std::size_t next = 0;
      auto fitted = [&](const auto& x) {
        auto v = dist_view(x, rows_);
        const std::size_t mine = next++;
        if (loop_of<V>(n, k, in0, v) != loop_of<V>(n, k, in0)) {
          copies[mine] = x;
          v = dist_view(std::as_const(copies[mine]), rows_);
        }
        return v;
      };
      finish(dst, n, k, in0, fitted(xs)...);
    }
  }

  template <class Dest, class... Views>
  void finish(Dest& dst, index_t n, index_t k, const Views&... ins) const {
    const auto out = out_view(dst);
    // The output goes through a temporary when it overlaps an input other than element for
    // element, or when its layout would push the kernel off the inputs' vector path.
    if ((unsafe_alias(out, ins, n, k) || ...) ||
        loop_of<V>(n, k, ins..., out) != loop_of<V>(n, k, ins...)) {
      retype_t<Ret, scalar_t<Dest>> tmp(out_rows_, out_cols_);
      Kernel::apply(n, k, ins..., out_view(tmp));
      dst = tmp;
    } else {
      Kernel::apply(n, k, ins..., out);
    }
  }

  template <class D>
  auto out_view(D& dst) const noexcept {
    if constexpr (Kernel::elementwise) {
      return dist_view(dst, rows_);
    } else {
      // One value per distribution, in a vector (or a 1 x n / n x 1 block) of the result shape.
      const auto v = dist_view(dst, true);
      return per_dist<scalar_t<D>>{dst.data(), out_rows_ == 1 ? v.cs : v.ds};
    }
  }

  std::tuple<nested_t<In>...> in_;
  bool rows_;
  index_t out_rows_, out_cols_;
};

}  // namespace smax::detail

namespace Eigen::internal {
template <class Kernel, class Ret, class... In>
struct traits<smax::detail::proxy<Kernel, Ret, In...>> {
  using ReturnType = Ret;
};
}  // namespace Eigen::internal
