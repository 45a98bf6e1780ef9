// Kernels over raw pointers. A kernel is written once, as a function of a "group": one
// distribution laid out contiguously (processed with vectors along it), or one vector's worth of
// distributions that lie side by side in memory (a column-major N x K normalized per row:
// vectorized across the distributions, with running max and sum in registers and no gather).
// The group supplies the loops (reductions with several accumulators and pairwise blocking,
// elementwise maps); the kernel supplies what happens to one vector of elements.
#pragma once

#include "smax/detail/exp.hpp"
#include "smax/detail/simd.hpp"
#include "smax/detail/special.hpp"

#include <cstdint>
#include <limits>
#include <utility>

namespace smax::detail {

/// Distributions in memory: element j of distribution i is p[i * ds + j * cs].
template <class T>
struct strided {
  T* p;
  index_t ds;
  index_t cs;
  strided at(index_t i) const noexcept { return {p + i * ds, ds, cs}; }
};

/// One value per distribution: the value of distribution i is p[i * stride].
template <class T>
struct per_dist {
  T* p;
  index_t stride;
  per_dist at(index_t i) const noexcept { return {p + i * stride, stride}; }
};

/// Pairwise (cascade) summation of block sums: block b is added at the level of its lowest zero
/// bit, so the sum of B blocks has depth log2(B) instead of B. With blocks of 16 vectors this
/// keeps a 262144-element sum within ~20 roundings instead of thousands.
template <class V>
class pairwise_sum {
 public:
  void add(V block) noexcept {
    int level = 0;
    for (; (count_ >> level) & 1u; ++level) block = levels_[level] + block;
    levels_[level] = block;
    ++count_;
  }
  V total() const noexcept {
    V s(scalar_of<V>(0));
    for (int level = 0; level < 64 && (count_ >> level) != 0; ++level)
      if ((count_ >> level) & 1u) s = s + levels_[level];
    return s;
  }

 private:
  V levels_[64];
  std::uint64_t count_ = 0;
};

// ---- a distribution along contiguous memory ----------------------------------------------------

/// Position j of a contiguous distribution, seen as one W (a vector or a scalar).
template <class W>
struct contiguous_io {
  index_t j;
  template <class U>
  W load(const strided<U>& a) const noexcept {
    return detail::load<W>(a.p + j);
  }
  template <class U>
  void store(const strided<U>& a, const W& v) const noexcept {
    detail::store(a.p + j, v);
  }
  W splat(scalar_of<W> s) const noexcept { return W(s); }
};

template <class V>
struct contiguous_group {
  using T = scalar_of<V>;
  static constexpr index_t L = lanes<V>;
  index_t k;

  template <class F>
  T reduce_max(F&& f) const {
    T m = -std::numeric_limits<T>::infinity();
    index_t j = 0;
    if (k >= L) {
      V a0(m), a1(m), a2(m), a3(m);
      for (; j + 4 * L <= k; j += 4 * L) {
        a0 = max(a0, f(contiguous_io<V>{j}));
        a1 = max(a1, f(contiguous_io<V>{j + L}));
        a2 = max(a2, f(contiguous_io<V>{j + 2 * L}));
        a3 = max(a3, f(contiguous_io<V>{j + 3 * L}));
      }
      for (; j + L <= k; j += L) a0 = max(a0, f(contiguous_io<V>{j}));
      m = hmax(max(max(a0, a1), max(a2, a3)));
    }
    for (; j < k; ++j) m = max(m, f(contiguous_io<T>{j}));
    return m;
  }

  template <class F>
  T reduce_sum(F&& f) const {
    T s(0);
    index_t j = 0;
    if (k >= L) {
      pairwise_sum<V> acc;
      constexpr index_t block = 16 * L;  // 4 independent accumulators x 4 steps
      for (; j + block <= k; j += block) {
        V a0 = f(contiguous_io<V>{j}), a1 = f(contiguous_io<V>{j + L});
        V a2 = f(contiguous_io<V>{j + 2 * L}), a3 = f(contiguous_io<V>{j + 3 * L});
        for (index_t jj = j + 4 * L; jj < j + block; jj += 4 * L) {
          a0 = a0 + f(contiguous_io<V>{jj});
          a1 = a1 + f(contiguous_io<V>{jj + L});
          a2 = a2 + f(contiguous_io<V>{jj + 2 * L});
          a3 = a3 + f(contiguous_io<V>{jj + 3 * L});
        }
        acc.add((a0 + a1) + (a2 + a3));
      }
      if (j + L <= k) {
        V a = f(contiguous_io<V>{j});
        for (j += L; j + L <= k; j += L) a = a + f(contiguous_io<V>{j});
        acc.add(a);
      }
      s = hsum(acc.total());
    }
    T tail(0);
    for (; j < k; ++j) tail += f(contiguous_io<T>{j});
    return s + tail;
  }

  template <class F>
  void for_each(F&& f) const {
    index_t j = 0;
    for (; j + L <= k; j += L) f(contiguous_io<V>{j});
    for (; j < k; ++j) f(contiguous_io<T>{j});
  }

  void store_out(const per_dist<T>& out, T v) const noexcept { *out.p = v; }
};

// ---- one vector of distributions side by side ---------------------------------------------------

/// Class j of lanes() neighbouring distributions, one per lane.
template <class V>
struct across_io {
  index_t j;
  template <class U>
  V load(const strided<U>& a) const noexcept {
    return detail::load<V>(a.p + j * a.cs);
  }
  template <class U>
  void store(const strided<U>& a, const V& v) const noexcept {
    detail::store(a.p + j * a.cs, v);
  }
  V splat(const V& s) const noexcept { return s; }
};

template <class V>
struct across_group {
  using T = scalar_of<V>;
  static constexpr index_t L = lanes<V>;
  index_t k;

  template <class F>
  V reduce_max(F&& f) const {
    const V lowest(-std::numeric_limits<T>::infinity());
    V a0 = lowest, a1 = lowest, a2 = lowest, a3 = lowest;
    index_t j = 0;
    for (; j + 4 <= k; j += 4) {
      a0 = max(a0, f(across_io<V>{j}));
      a1 = max(a1, f(across_io<V>{j + 1}));
      a2 = max(a2, f(across_io<V>{j + 2}));
      a3 = max(a3, f(across_io<V>{j + 3}));
    }
    for (; j < k; ++j) a0 = max(a0, f(across_io<V>{j}));
    return max(max(a0, a1), max(a2, a3));
  }

  template <class F>
  V reduce_sum(F&& f) const {
    pairwise_sum<V> acc;
    constexpr index_t block = 16;  // 4 independent accumulators x 4 classes
    index_t j = 0;
    for (; j + block <= k; j += block) {
      V a0 = f(across_io<V>{j}), a1 = f(across_io<V>{j + 1});
      V a2 = f(across_io<V>{j + 2}), a3 = f(across_io<V>{j + 3});
      for (index_t jj = j + 4; jj < j + block; jj += 4) {
        a0 = a0 + f(across_io<V>{jj});
        a1 = a1 + f(across_io<V>{jj + 1});
        a2 = a2 + f(across_io<V>{jj + 2});
        a3 = a3 + f(across_io<V>{jj + 3});
      }
      acc.add((a0 + a1) + (a2 + a3));
    }
    if (j < k) {
      V a = f(across_io<V>{j});
      for (++j; j < k; ++j) a = a + f(across_io<V>{j});
      acc.add(a);
    }
    return acc.total();
  }

  template <class F>
  void for_each(F&& f) const {
    for (index_t j = 0; j < k; ++j) f(across_io<V>{j});
  }

  void store_out(const per_dist<T>& out, const V& v) const noexcept {
    if (out.stride == 1) {
      detail::store(out.p, v);
    } else {
      alignas(64) T buf[L];
      detail::store(buf, v);
      for (index_t l = 0; l < L; ++l) out.p[l * out.stride] = buf[l];
    }
  }
};

// ---- the driver ---------------------------------------------------------------------------------

template <class U>
constexpr bool unit_class_stride(const strided<U>& a, index_t, index_t k) noexcept {
  return a.cs == 1 || k <= 1;
}
template <class U>
constexpr bool unit_class_stride(const per_dist<U>&, index_t, index_t) noexcept {
  return true;
}
template <class U>
constexpr bool unit_dist_stride(const strided<U>& a, index_t n, index_t) noexcept {
  return a.ds == 1 || n <= 1;
}
template <class U>
constexpr bool unit_dist_stride(const per_dist<U>&, index_t, index_t) noexcept {
  return true;
}

enum class path { contiguous, across, scalar };

/// Which loop structure fits a set of arrays: contiguous when every array has unit class
/// stride, across when every array has unit distribution stride, scalar otherwise.
template <class... Arrays>
path path_of(index_t n, index_t k, const Arrays&... arrays) noexcept {
  if ((unit_class_stride(arrays, n, k) && ...)) return path::contiguous;
  if ((unit_dist_stride(arrays, n, k) && ...)) return path::across;
  return path::scalar;
}

/// Runs `op(group, arrays.at(i)...)` over the n distributions of k classes: one contiguous
/// group per distribution, or lanes<V> neighbouring distributions per group (the remainder one
/// at a time), or, for any other layout, one scalar at a time.
template <class Arch, class T, class Op, class... Arrays>
inline void run(index_t n, index_t k, Op&& op, const Arrays&... arrays) {
  using V = vec_t<T, Arch>;
  const path how = path_of(n, k, arrays...);
  if (how == path::contiguous) {
    const contiguous_group<V> g{k};
    for (index_t i = 0; i < n; ++i) op(g, arrays.at(i)...);
    return;
  }
  index_t i = 0;
  if (how == path::across) {
    const across_group<V> g{k};
    for (; i + lanes<V> <= n; i += lanes<V>) op(g, arrays.at(i)...);
  }
  const across_group<T> g{k};
  for (; i < n; ++i) op(g, arrays.at(i)...);
}

// ---- the kernels --------------------------------------------------------------------------------
// Each takes n distributions of k classes. Preconditions: the arrays describe valid memory for
// n x k elements; outputs either do not overlap inputs or coincide with them element for
// element (in-place). No allocation, no exceptions.

/// y = softmax(x): three passes (max; exp, sum and store; scale by one reciprocal).
template <class Arch = best_arch, class T>
void softmax(index_t n, index_t k, strided<const T> x, strided<T> y) noexcept {
  run<Arch, T>(
      n, k,
      [](const auto& g, const strided<const T>& xi, const strided<T>& yi) {
        const auto m = g.reduce_max([&](const auto& io) { return io.load(xi); });
        const auto shift = row_shift(m);
        const auto s = g.reduce_sum([&](const auto& io) {
          const auto e = exp_nonpos(io.load(xi) - io.splat(shift));
          io.store(yi, e);
          return e;
        });
        const auto inv = row_reciprocal(s);
        g.for_each([&](const auto& io) { io.store(yi, io.load(yi) * io.splat(inv)); });
      },
      x, y);
}

/// y = log_softmax(x) = (x - max) - log(sum(exp(x - max))); the exp pass stores nothing.
template <class Arch = best_arch, class T>
void log_softmax(index_t n, index_t k, strided<const T> x, strided<T> y) noexcept {
  run<Arch, T>(
      n, k,
      [](const auto& g, const strided<const T>& xi, const strided<T>& yi) {
        const auto m = g.reduce_max([&](const auto& io) { return io.load(xi); });
        const auto shift = row_shift(m);
        const auto s =
            g.reduce_sum([&](const auto& io) { return exp_nonpos(io.load(xi) - io.splat(shift)); });
        const auto log_sum = row_log_sum(s);
        g.for_each([&](const auto& io) {
          io.store(yi, (io.load(xi) - io.splat(shift)) - io.splat(log_sum));
        });
      },
      x, y);
}

/// out[i] = logsumexp(x_i) = max + log(sum(exp(x - max))).
template <class Arch = best_arch, class T>
void logsumexp(index_t n, index_t k, strided<const T> x, per_dist<T> out) noexcept {
  run<Arch, T>(
      n, k,
      [](const auto& g, const strided<const T>& xi, const per_dist<T>& oi) {
        const auto m = g.reduce_max([&](const auto& io) { return io.load(xi); });
        const auto shift = row_shift(m);
        const auto s =
            g.reduce_sum([&](const auto& io) { return exp_nonpos(io.load(xi) - io.splat(shift)); });
        g.store_out(oi, lse_of(m, s, [&] {
                      return g.reduce_sum([&](const auto& io) {
                        const auto v = io.load(xi);
                        using W = std::decay_t<decltype(v)>;
                        return select(v != v, W(T(1)), W(T(0)));
                      });
                    }));
      },
      x, out);
}

/// dx = y * (dy - <dy, y>): the vector-Jacobian product of softmax, given its output y.
template <class Arch = best_arch, class T>
void softmax_backward(index_t n, index_t k, strided<const T> y, strided<const T> dy,
                      strided<T> dx) noexcept {
  run<Arch, T>(
      n, k,
      [](const auto& g, const strided<const T>& yi, const strided<const T>& dyi,
         const strided<T>& dxi) {
        const auto dot = g.reduce_sum([&](const auto& io) { return io.load(yi) * io.load(dyi); });
        g.for_each(
            [&](const auto& io) { io.store(dxi, io.load(yi) * (io.load(dyi) - io.splat(dot))); });
      },
      y, dy, dx);
}

/// dx = dlogp - exp(logp) * sum(dlogp): the vector-Jacobian product of log_softmax, given its
/// output logp (<= 0; larger values are clamped where exp would overflow).
template <class Arch = best_arch, class T>
void log_softmax_backward(index_t n, index_t k, strided<const T> logp, strided<const T> dlogp,
                          strided<T> dx) noexcept {
  run<Arch, T>(
      n, k,
      [](const auto& g, const strided<const T>& li, const strided<const T>& dli,
         const strided<T>& dxi) {
        const auto s = g.reduce_sum([&](const auto& io) { return io.load(dli); });
        g.for_each([&](const auto& io) {
          const auto lp = io.load(li);
          using W = std::decay_t<decltype(lp)>;
          // Beyond 88 (float) / 709 (double) exp overflows; the select keeps NaN.
          const W hi(sizeof(T) == 4 ? T(88) : T(709));
          const auto p = exp_nonpos(select(lp > hi, hi, lp));
          io.store(dxi, io.load(dli) - p * io.splat(s));
        });
      },
      logp, dlogp, dx);
}

}  // namespace smax::detail
