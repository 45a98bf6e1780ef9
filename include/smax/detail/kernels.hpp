// Kernels over raw pointers. A kernel is written once, as a function of a "group": one
// distribution laid out contiguously (processed with vectors along it), or one vector's worth of
// distributions that lie side by side in memory (a column-major N x K normalized per row:
// vectorized across the distributions, with running max and sum in registers and no gather), or
// fewer distributions than a vector holds, interleaved in one array (lane l of each vector holds
// distribution l mod n). The group supplies the loops (reductions with several accumulators and
// pairwise blocking, elementwise maps); the kernel supplies what happens to one vector of elements.
#pragma once

#include "smax/detail/exp.hpp"
#include "smax/detail/simd.hpp"
#include "smax/detail/special.hpp"

#ifdef _OPENMP
#include <omp.h>
#define SMAX_OMP_BARRIER _Pragma("omp barrier")
#else
#define SMAX_OMP_BARRIER
#endif

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <tuple>
#include <utility>

namespace smax::detail {

/// Distributions in memory: element j of distribution i is p[i * ds + j * cs].
template <class T>
struct strided {
  T* p;
  index_t ds;
  index_t cs;
  // A null array (an output nobody asked for) stays null.
  strided at(index_t i) const noexcept { return {p ? p + i * ds : p, ds, cs}; }
};

/// One value per distribution: the value of distribution i is p[i * stride].
template <class T>
struct per_dist {
  T* p;
  index_t stride;
  per_dist at(index_t i) const noexcept { return {p ? p + i * stride : p, stride}; }
};

/// A per-class array shared by every distribution (class weights): element j is p[j].
template <class T>
struct per_class {
  const T* p;
  per_class at(index_t) const noexcept { return *this; }
};

/// Several sums carried through one pass (a reduction body may return sums<W, N>).
template <class W, int N>
struct sums {
  W v[N];
  friend sums operator+(const sums& a, const sums& b) noexcept {
    sums r;
    for (int i = 0; i < N; ++i) r.v[i] = a.v[i] + b.v[i];
    return r;
  }
  const W& operator[](int i) const noexcept { return v[i]; }
};

template <class R>
struct zero_of {
  static R get() noexcept { return R(scalar_of<R>(0)); }
};
template <class W, int N>
struct zero_of<sums<W, N>> {
  static sums<W, N> get() noexcept {
    sums<W, N> r;
    for (int i = 0; i < N; ++i) r.v[i] = W(scalar_of<W>(0));
    return r;
  }
};
template <class R>
R zero() noexcept {
  return zero_of<R>::get();
}

template <class V, int N>
sums<scalar_of<V>, N> hsum(const sums<V, N>& a) noexcept {
  sums<scalar_of<V>, N> r;
  for (int i = 0; i < N; ++i) r.v[i] = hsum(a.v[i]);
  return r;
}

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
    V s = zero<V>();
    for (int level = 0; level < 64 && (count_ >> level) != 0; ++level)
      if ((count_ >> level) & 1u) s = s + levels_[level];
    return s;
  }

 private:
  V levels_[64];
  std::uint64_t count_ = 0;
};

// ---- class labels (cross-entropy)
// -----------------------------------------------------------------

/// How raw labels map to this kernel's classes: rows labelled `ignore` do not count; the kernel
/// sees classes [offset, offset + k) of the full vocabulary (a shard; offset 0 and all classes
/// otherwise).
struct label_spec {
  index_t ignore;
  index_t offset;
  index_t k;
};

/// The label of one distribution: valid when the row counts; y is the label's index among this
/// kernel's classes, or -1 when the row is ignored or its label lies in another shard.
struct one_label {
  index_t y;
  bool valid;
};

/// The labels of the distributions in the lanes of a vector (as one_label, lane by lane).
template <class V>
struct lane_labels {
  using T = scalar_of<V>;
  using I = typename vec_traits<V>::int_type;
  using IV = xsimd::batch<I, typename V::arch_type>;
  static constexpr index_t L = lanes<V>;
  IV yv;  // the label among these classes, or -1 (in another shard), or -2 (ignored row, or a lane
          // without a row)
  typename V::batch_bool_type valid;  // the row counts
  typename V::batch_bool_type here;   // the row counts and its label is among these classes
};

template <class Lbl>
one_label make_label(Lbl raw, const label_spec& spec) noexcept {
  const auto y = static_cast<index_t>(raw);
  if (y == spec.ignore) return {-1, false};
  const index_t local = y - spec.offset;
  return {local >= 0 && local < spec.k ? local : -1, true};
}

inline bool any_valid(const one_label& lab) noexcept { return lab.valid; }
template <class V>
bool any_valid(const lane_labels<V>& lab) noexcept {
  return xsimd::any(lab.valid);
}

/// v where the row counts, 0 where it is ignored (single distributions with an ignored label
/// never get this far).
template <class W>
W keep_valid(const one_label&, const W& v) noexcept {
  return v;
}
template <class V>
V keep_valid(const lane_labels<V>& lab, const V& v) noexcept {
  return xsimd::select(lab.valid, v, V(scalar_of<V>(0)));
}

template <class T>
struct lane_index {
  // 0, 1, 2, ... as T: compared with (label - j) to find the label's lane within a vector.
  static constexpr T values[64] = {0,  1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15,
                                   16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31,
                                   32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47,
                                   48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63};
};

// ---- a distribution along contiguous memory ----------------------------------------------------

/// Position j of a contiguous distribution, seen as one W (a vector or a scalar).
template <class W>
struct contiguous_io {
  index_t j;
  template <class U>
  W load(const strided<U>& a) const noexcept {
    return load_as<W>(a.p + j);
  }
  template <class U>
  void store(const strided<U>& a, const W& v) const noexcept {
    store_as(a.p + j, v);
  }
  template <class U>
  W load(const per_class<U>& a) const noexcept {
    return load_as<W>(a.p + j);
  }
  W splat(scalar_of<W> s) const noexcept { return W(s); }
  /// The lanes of this position that hold the labelled class.
  auto is_class(const one_label& lab) const noexcept {
    using T = scalar_of<W>;
    const index_t d = lab.y - j;
    if constexpr (is_scalar_v<W>) {
      return d == 0;
    } else {
      if (d < 0 || d >= lanes<W>) return typename W::batch_bool_type(false);
      return detail::load<W>(lane_index<T>::values) == W(static_cast<T>(d));
    }
  }
};

/// The last rem < lanes<V> elements of a contiguous distribution, seen as one vector: loads
/// fill the missing lanes with 0 and stores write the rem elements only (masked where the ISA
/// allows). The group masks the padding lanes out of every reduction, so one vector op replaces
/// rem scalar ones (rem scalar exps were the largest per-row cost at moderate K).
template <class V>
struct partial_io {
  using T = scalar_of<V>;
  index_t j, rem;
  template <class U>
  V load(const strided<U>& a) const noexcept {
    return load_partial_as<V>(a.p + j, rem);
  }
  template <class U>
  V load(const per_class<U>& a) const noexcept {
    return load_partial_as<V>(a.p + j, rem);
  }
  template <class U>
  void store(const strided<U>& a, const V& v) const noexcept {
    store_partial_as(a.p + j, v, rem);
  }
  V splat(T s) const noexcept { return V(s); }
  auto is_class(const one_label& lab) const noexcept {
    const index_t d = lab.y - j;
    if (d < 0 || d >= rem) return typename V::batch_bool_type(false);
    return detail::load<V>(lane_index<T>::values) == V(static_cast<T>(d));
  }
};

/// A whole vector of a contiguous distribution whose output store streams past the caches (the
/// output is aligned there: contiguous_group::for_each_stream).
template <class V>
struct stream_io : contiguous_io<V> {
  template <class U>
  void store(const strided<U>& a, const V& v) const noexcept {
    if constexpr (std::is_same<U, scalar_of<V>>::value) {
      store_stream(a.p + this->j, v);
    } else {
      contiguous_io<V>::store(a, v);
    }
  }
};

/// The lanes of a partial vector that hold data.
template <class V>
auto tail_mask(index_t rem) noexcept {
  using T = scalar_of<V>;
  return detail::load<V>(lane_index<T>::values) < V(static_cast<T>(rem));
}
template <class M, class V>
V zero_unless(const M& mask, const V& v) noexcept {
  return select(mask, v, V(scalar_of<V>(0)));
}
template <class M, class W, int N>
sums<W, N> zero_unless(const M& mask, const sums<W, N>& v) noexcept {
  sums<W, N> r;
  for (int i = 0; i < N; ++i) r.v[i] = zero_unless(mask, v.v[i]);
  return r;
}

// ---- reductions over a run of vectors (every group's loops) -------------------------------------

/// max(a, f(at(0)), ..., f(at(count - 1))): four independent accumulators.
template <class V, class F, class At>
SMAX_ALWAYS_INLINE V max_of_vectors(index_t count, F f, At at, V a) {
  V a1 = a, a2 = a, a3 = a;
  index_t t = 0;
  for (; t + 4 <= count; t += 4) {
    a = max(a, f(at(t)));
    a1 = max(a1, f(at(t + 1)));
    a2 = max(a2, f(at(t + 2)));
    a3 = max(a3, f(at(t + 3)));
  }
  for (; t < count; ++t) a = max(a, f(at(t)));
  return max(max(a, a1), max(a2, a3));
}

/// f(at(0)) + ... + f(at(count - 1)) (R: a vector, or sums<vector, N> for several sums):
/// blocks of 16 vectors (four accumulators x 4) summed pairwise, then the last count mod 16
/// vectors in two accumulators (four cost the exp pass registers: 10% slower at K = 1000 on
/// AVX2; a short row of the backward passes is 1.3-1.5x faster without the cascade's setup).
template <class F, class At>
SMAX_ALWAYS_INLINE auto sum_of_vectors(index_t count, F f, At at) {
  using R = decltype(f(at(0)));
  constexpr index_t block = 16;
  R a = zero<R>();
  index_t t = 0;
  if (count >= block) {
    pairwise_sum<R> acc;
    for (; t + block <= count; t += block) {
      R b0 = f(at(t)), b1 = f(at(t + 1)), b2 = f(at(t + 2)), b3 = f(at(t + 3));
      for (index_t u = t + 4; u < t + block; u += 4) {
        b0 = b0 + f(at(u));
        b1 = b1 + f(at(u + 1));
        b2 = b2 + f(at(u + 2));
        b3 = b3 + f(at(u + 3));
      }
      acc.add((b0 + b1) + (b2 + b3));
    }
    a = a + acc.total();
  }
  R a1 = zero<R>();
  for (; t + 2 <= count; t += 2) {
    a = a + f(at(t));
    a1 = a1 + f(at(t + 1));
  }
  if (t < count) a = a + f(at(t));
  return a + a1;
}

// Every loop body f is taken, and captures, by value: xsimd's stores are may-alias, so a body that
// referred to its pointers or its row scalars through memory would have them reloaded after every
// store; copied into the loop, they stay in registers.
template <class V>
struct contiguous_group {
  using T = scalar_of<V>;
  using state = T;  // one value per distribution
  static constexpr bool rows_contiguous = true;
  static constexpr index_t L = lanes<V>;
  index_t k;          // the classes [begin, k) are this group's
  index_t begin = 0;  // > 0 only for a slice of a distribution split across threads

  /// The vector at element j, for vector t of the group's whole vectors.
  auto vector_at() const noexcept {
    return [b = begin](index_t t) { return contiguous_io<V>{b + t * L}; };
  }

  template <class F>
  SMAX_FLATTEN T reduce_max(F f) const {
    const V lowest(-std::numeric_limits<T>::infinity());
    const index_t whole = (k - begin) / L, j = begin + whole * L;
    V m = max_of_vectors(whole, f, vector_at(), lowest);
    if constexpr (!is_scalar_v<V>) {
      if (j < k) m = max(m, select(tail_mask<V>(k - j), f(partial_io<V>{j, k - j}), lowest));
    }
    return hmax(m);
  }

  /// Sum of f over the distribution (f returns a vector, or sums<vector, N> for several sums).
  template <class F>
  SMAX_FLATTEN auto reduce_sum(F f) const {
    using R = decltype(f(contiguous_io<V>{0}));
    const index_t whole = (k - begin) / L, j = begin + whole * L;
    R a = sum_of_vectors(whole, f, vector_at());
    if constexpr (!is_scalar_v<V>) {
      if (j < k) a = a + zero_unless(tail_mask<V>(k - j), f(partial_io<V>{j, k - j}));
    }
    return hsum(a);
  }

  template <class F>
  SMAX_FLATTEN void for_each(F f) const {
    // k in a register: f's stores may alias *this, which would reload it after every vector.
    const index_t end = k;
    index_t j = begin;
    for (; j + L <= end; j += L) f(contiguous_io<V>{j});
    if constexpr (!is_scalar_v<V>) {
      if (j < end) f(partial_io<V>{j, end - j});
    }
  }

  /// for_each whose stores into `out` stream past the caches: a partial vector up to the first
  /// vector-aligned element of out, whole aligned vectors, a partial vector at the end.
  template <class U, class F>
  SMAX_FLATTEN void for_each_stream(const strided<U>& out, F f) const {
    if constexpr (is_scalar_v<V> || !std::is_same<U, T>::value) {
      for_each(f);
    } else {
      const index_t end = k;
      index_t j = begin;
      const auto misalign = reinterpret_cast<std::uintptr_t>(out.p + j) % sizeof(V);
      if (misalign % sizeof(T) != 0) return for_each(f);
      const index_t head = std::min<index_t>(
          end - j, misalign == 0 ? 0 : static_cast<index_t>((sizeof(V) - misalign) / sizeof(T)));
      if (head > 0) f(partial_io<V>{j, head});
      for (j += head; j + L <= end; j += L) f(stream_io<V>{{j}});
      if (j < end) f(partial_io<V>{j, end - j});
    }
  }

  template <class U>
  void store_out(const per_dist<U>& out, T v) const noexcept {
    *out.p = narrow_to<U>(v);
  }
  template <class U>
  T load_out(const per_dist<U>& in) const noexcept {
    return static_cast<T>(*in.p);
  }

  template <class Lbl>
  one_label load_labels(const per_dist<const Lbl>& y, const label_spec& spec) const noexcept {
    return make_label(*y.p, spec);
  }
  /// a[label]: the labelled class's element of the distribution (0 when it is not here).
  template <class U>
  T gather(const strided<U>& a, const one_label& lab) const noexcept {
    return lab.y >= 0 ? widen<T>(a.p[lab.y * a.cs]) : T(0);
  }
  template <class U>
  T gather(const per_class<U>& a, const one_label& lab) const noexcept {
    return lab.y >= 0 ? widen<T>(a.p[lab.y]) : T(0);
  }
  template <class U>
  void scatter(const strided<U>& a, const one_label& lab, T v) const noexcept {
    if (lab.y >= 0) a.p[lab.y * a.cs] = narrow_to<U>(v);
  }
  /// 1 where the label is among this kernel's classes, else 0.
  T label_here(const one_label& lab) const noexcept { return lab.y >= 0 ? T(1) : T(0); }
  static constexpr bool label_in_pass = false;  // the label's gradient entry: one scatter
  static constexpr bool lane_totals = false;    // a row value is one scalar
  /// Whether this group records its distribution's loss (a split distribution: one thread).
  static constexpr bool records() noexcept { return true; }
};

// ---- one vector of distributions side by side ---------------------------------------------------

/// Class j of lanes() neighbouring distributions, one per lane. Partial: only the first rem
/// lanes hold distributions (the last rows of a batch, or a batch smaller than a vector): loads
/// fill the others with 0 and stores leave their memory alone, in plain stores (packed, the next
/// class's load starts inside this store's span: store_partial).
template <class V, bool Partial = false>
struct across_io {
  index_t j;
  index_t rem;
  template <class U>
  V load(const strided<U>& a) const noexcept {
    if constexpr (Partial) {
      return load_partial_as<V>(a.p + j * a.cs, rem);
    } else {
      return load_as<V>(a.p + j * a.cs);
    }
  }
  template <class U>
  void store(const strided<U>& a, const V& v) const noexcept {
    if constexpr (Partial) {
      store_partial_as</*Plain=*/true>(a.p + j * a.cs, v, rem);
    } else {
      store_as(a.p + j * a.cs, v);
    }
  }
  template <class U>
  V load(const per_class<U>& a) const noexcept {
    return V(widen<scalar_of<V>>(a.p[j]));
  }
  V splat(const V& s) const noexcept { return s; }
  auto is_class(const one_label& lab) const noexcept { return j == lab.y; }
  template <class W>
  auto is_class(const lane_labels<W>& lab) const noexcept {
    using IV = typename lane_labels<W>::IV;
    return xsimd::bool_cast(lab.yv == IV(static_cast<typename lane_labels<W>::I>(j)));
  }
};

template <class V, bool Partial = false>
struct across_group {
  using T = scalar_of<V>;
  using state = V;  // one value per distribution, one distribution per lane
  static constexpr index_t L = lanes<V>;
  index_t k;
  index_t rem = L;  // the lanes that hold distributions (< L only when Partial)
  static constexpr bool rows_contiguous = false;
  static constexpr index_t begin = 0;

  template <class U, class F>
  void for_each_stream(const strided<U>&, F f) const {
    for_each(f);
  }

  across_io<V, Partial> io(index_t j) const noexcept { return {j, rem}; }
  auto vector_at() const noexcept {
    return [r = rem](index_t j) { return across_io<V, Partial>{j, r}; };
  }
  /// Lanes that hold distributions: every per-distribution read and write stops there.
  index_t used() const noexcept { return Partial ? rem : L; }

  template <class F>
  V reduce_max(F f) const {
    return max_of_vectors(k, f, vector_at(), V(-std::numeric_limits<T>::infinity()));
  }

  template <class F>
  auto reduce_sum(F f) const {
    using R = decltype(f(io(0)));
    if (k <= 16) {  // the shortest rows in lanes, and short columns: no cascade
      if (k == 0) return zero<R>();
      R a0 = f(io(0));
      if (k == 1) return a0;
      R a1 = f(io(1));
      index_t j = 2;
      for (; j + 2 <= k; j += 2) {
        a0 = a0 + f(io(j));
        a1 = a1 + f(io(j + 1));
      }
      if (j < k) a0 = a0 + f(io(j));
      return a0 + a1;
    }
    return sum_of_vectors(k, f, vector_at());
  }

  template <class F>
  void for_each(F f) const {
    for (index_t j = 0; j < k; ++j) f(io(j));
  }

  template <class U>
  void store_out(const per_dist<U>& out, const V& v) const noexcept {
    if (out.stride == 1 && !Partial) {
      store_as(out.p, v);
    } else {
      alignas(64) T buf[L];
      detail::store(buf, v);
      for (index_t l = 0; l < used(); ++l) out.p[l * out.stride] = narrow_to<U>(buf[l]);
    }
  }
  template <class U>
  V load_out(const per_dist<U>& in) const noexcept {
    alignas(64) T buf[L] = {};
    for (index_t l = 0; l < used(); ++l) buf[l] = widen<T>(in.p[l * in.stride]);
    return detail::load<V>(buf);
  }

  using labels_t = std::conditional_t<is_scalar_v<V>, one_label, lane_labels<V>>;

  template <class Lbl>
  labels_t load_labels(const per_dist<const Lbl>& y, const label_spec& spec) const noexcept {
    if constexpr (is_scalar_v<V>) {
      return make_label(*y.p, spec);
    } else {
      using I = typename lane_labels<V>::I;
      using IV = typename lane_labels<V>::IV;
      labels_t lab;
      if constexpr (std::is_integral<Lbl>::value && std::is_signed<Lbl>::value &&
                    sizeof(Lbl) == sizeof(I)) {
        if (!Partial && y.stride == 1) {  // a vector of labels, checked as make_label does
          constexpr auto top = std::numeric_limits<I>::max();
          constexpr auto bottom = std::numeric_limits<I>::min();
          const IV raw = IV::load_unaligned(reinterpret_cast<const I*>(y.p));
          const bool ignores = spec.ignore >= bottom && spec.ignore <= top;
          const auto counts = ignores ? raw != IV(static_cast<I>(spec.ignore)) : raw == raw;
          // Validated labels lie in [0, K), so offset and k (at most K) fit I.
          const IV local = raw - IV(static_cast<I>(spec.offset));
          const auto in = (local >= IV(I(0))) & (local < IV(static_cast<I>(spec.k)));
          lab.yv = select(counts & in, local, select(counts, IV(I(-1)), IV(I(-2))));
          lab.valid = xsimd::bool_cast(counts);
          lab.here = xsimd::bool_cast(counts & in);
          return lab;
        }
      }
      alignas(64) I ys[L];
      for (index_t l = 0; l < L; ++l) {
        // Lanes without a distribution count as ignored rows: no loss, no gradient.
        const one_label one =
            l < used() ? make_label(y.p[l * y.stride], spec) : one_label{-1, false};
        ys[l] = static_cast<I>(one.valid ? one.y : -2);
      }
      lab.yv = IV::load_aligned(ys);
      lab.valid = xsimd::bool_cast(lab.yv != IV(I(-2)));
      lab.here = xsimd::bool_cast(lab.yv >= IV(I(0)));
      return lab;
    }
  }
  /// a[label] per lane (0 in lanes whose label is not here). Up to 16 classes (tiles of rows in
  /// lanes, short columns), a select per class from the vectors of the classes (in cache: the
  /// statistics pass reads them anyway) instead of the gather instruction, microcoded on Zen 4:
  /// the cross-entropy 1.05-1.16x as fast at K = 2..16 (paired runs). Longer, one gather where the
  /// element offsets fit the index lanes.
  template <class A>
  V gather(const A& a, const labels_t& lab) const noexcept {
    if constexpr (is_scalar_v<V>) {
      return lab.y >= 0 ? widen<T>(a.p[lab.y * class_step(a)]) : T(0);
    } else {
      if (k <= 16) {
        V r(T(0));
        for (index_t j = 0; j < k; ++j) r = select(io(j).is_class(lab), io(j).load(a), r);
        return r;
      }
      using U = std::remove_const_t<std::remove_pointer_t<decltype(a.p)>>;
      if constexpr (std::is_same<U, T>::value) {
        using I = typename lane_labels<V>::I;
        using IV = typename lane_labels<V>::IV;
        const index_t ls = lane_step(a), cs = class_step(a);
        const auto span = static_cast<std::uint64_t>(ls < 0 ? -ls : ls) * (L - 1) +
                          static_cast<std::uint64_t>(cs < 0 ? -cs : cs) * (k - 1);
        if (span <= static_cast<std::uint64_t>(std::numeric_limits<I>::max())) {
          // Lanes whose label is not here read element 0 (lane 0's class 0), then give 0.
          const IV off = IV::load_unaligned(lane_index<I>::values) * IV(static_cast<I>(ls)) +
                         lab.yv * IV(static_cast<I>(cs));
          const IV idx = select(xsimd::bool_cast(lab.here), off, IV(I(0)));
          return select(lab.here, gather_lanes<V>(a.p, idx), V(T(0)));
        }
      }
      alignas(64) T buf[L];
      alignas(64) typename lane_labels<V>::I ys[L];
      lab.yv.store_aligned(ys);
      for (index_t l = 0; l < L; ++l)  // lanes past used() have y = -2
        buf[l] = ys[l] >= 0 ? widen<T>(a.p[l * lane_step(a) + ys[l] * class_step(a)]) : T(0);
      return detail::load<V>(buf);
    }
  }
  /// Across groups write the label's gradient entry in the gradient pass (select on is_class):
  /// no scatter.
  static constexpr bool label_in_pass = !is_scalar_v<V>;
  template <class U>
  void scatter(const strided<U>& a, const labels_t& lab, const V& v) const noexcept {
    if constexpr (is_scalar_v<V>) {
      if (lab.y >= 0) a.p[lab.y * a.cs] = narrow_to<U>(v);
    } else {
      alignas(64) T buf[L];
      alignas(64) typename lane_labels<V>::I ys[L];
      detail::store(buf, v);
      lab.yv.store_aligned(ys);
      for (index_t l = 0; l < L; ++l)
        if (ys[l] >= 0) a.p[l * a.ds + ys[l] * a.cs] = narrow_to<U>(buf[l]);
    }
  }
  V label_here(const labels_t& lab) const noexcept {
    if constexpr (is_scalar_v<V>) {
      return lab.y >= 0 ? T(1) : T(0);
    } else {
      return select(lab.here, V(T(1)), V(T(0)));
    }
  }
  /// Row values (losses) are accumulated lane by lane (add_lanes), not one by one.
  static constexpr bool lane_totals = true;
  /// Adds lane l of v to the compensated sum (sum[l], comp[l]) in double, for the lanes that hold
  /// distributions: TwoSum, no branch, so whole vectors of doubles at a time. A sum that is ±inf
  /// or NaN makes its compensation NaN; the caller then reads the sum alone.
  void add_lanes(double* sum, double* comp, const V& value) const noexcept {
    V v = value;
    if constexpr (Partial) v = select(tail_mask<V>(rem), v, V(T(0)));
    if constexpr (!is_scalar_v<V>) {
      using D = xsimd::batch<double, typename V::arch_type>;
      constexpr index_t H = static_cast<index_t>(D::size);
      const auto add = [&](index_t at, const D& x) {
        const D s = D::load_aligned(sum + at);
        const D t = s + x;
        const D bp = t - s;
        (D::load_aligned(comp + at) + ((s - (t - bp)) + (x - bp))).store_aligned(comp + at);
        t.store_aligned(sum + at);
      };
      if constexpr (sizeof(T) == 4 && 2 * H == L) {  // float: two vectors of doubles
        const auto halves = widen_halves(v);
        add(0, D(halves.first));
        add(H, D(halves.second));
        return;
      } else if constexpr (sizeof(T) == 8) {
        add(0, D(v));
        return;
      }
    }
    alignas(64) T buf[L];
    detail::store(buf, v);
    for (index_t l = 0; l < L; ++l) {
      const double x = static_cast<double>(buf[l]), s = sum[l], t = s + x, bp = t - s;
      comp[l] += (s - (t - bp)) + (x - bp);
      sum[l] = t;
    }
  }

 private:
  template <class U>
  static index_t class_step(const strided<U>& a) noexcept {
    return a.cs;
  }
  template <class U>
  static index_t class_step(const per_class<U>&) noexcept {
    return 1;
  }
  template <class U>
  static index_t lane_step(const strided<U>& a) noexcept {
    return a.ds;
  }
  template <class U>
  static index_t lane_step(const per_class<U>&) noexcept {
    return 0;
  }
};

// ---- a few distributions interleaved in memory
// ---------------------------------------------------

/// The vector at element offset `at` of an interleaved group; Last: the group's last vector,
/// of which only `cnt` elements exist. Stores write the `cnt` elements this vector owns, in plain
/// stores (with w < L the next vector's load starts inside this one's span: store_partial). Lane l
/// holds class j + cls[l] of distribution dist[l] (the tables of the vector's phase).
template <class V, bool Last = false>
struct interleaved_io {
  using T = scalar_of<V>;
  using I = typename vec_traits<V>::int_type;
  using IV = lane_index_t<V>;
  index_t at;
  index_t cnt;     // the elements this vector owns: the group's step w, or fewer in the last vector
  index_t j;       // the class of lane 0
  index_t phase;   // this vector's phase (the index of its lane tables)
  const I* cls;    // the phase's lane classes, relative to j
  const I* dist;   // the phase's lane distributions, or null where lane l holds l mod n
  index_t k_last;  // the last class, k - 1
  template <class U>
  V load(const strided<U>& a) const noexcept {
    if constexpr (Last) {
      if (cnt < lanes<V>) return load_partial_as<V>(a.p + at, cnt);
    }
    return load_as<V>(a.p + at);
  }
  template <class U>
  void store(const strided<U>& a, const V& v) const noexcept {
    if (cnt < lanes<V>) {
      store_partial_as</*Plain=*/true>(a.p + at, v, cnt);
    } else {
      store_as(a.p + at, v);
    }
  }
  /// Class weights: lane l's class, in one gather (lanes past the last class read the last one).
  V load(const per_class<T>& a) const noexcept {
    const IV c = IV::load_aligned(cls) + IV(static_cast<I>(j));
    return gather_lanes<V>(a.p, xsimd::min(c, IV(static_cast<I>(k_last))));
  }
  /// A per-distribution value (lane l: distribution l mod n's) in this vector's lanes.
  V splat(const V& s) const noexcept {
    if constexpr (has_permute2<V>()) {
      if (dist != nullptr) return permute2(s, s, IV::load_aligned(dist));
    }
    return s;
  }
  /// The lanes that hold their distribution's label class (labels from interleaved_group).
  template <class Lab>
  auto is_class(const Lab& lab) const noexcept {
    return xsimd::bool_cast(lab.rel[phase] == IV(static_cast<I>(j)));
  }
  /// v in the lanes whose row counts, 0 in the others (keep_valid for this vector's lanes).
  template <class Lab>
  V keep_valid(const Lab& lab, const V& v) const noexcept {
    return xsimd::select(lab.valid_at[phase], v, V(T(0)));
  }
};

/// keep_valid for the elements of one vector of a group: the group's lane labels, or for
/// interleaved vectors their phase's.
template <class IO, class Lab, class W>
W keep_valid_at(const IO&, const Lab& lab, const W& v) noexcept {
  return keep_valid(lab, v);
}
template <class V, bool Last, class Lab>
V keep_valid_at(const interleaved_io<V, Last>& io, const Lab& lab, const V& v) noexcept {
  return io.keep_valid(lab, v);
}

/// 1 < n < lanes distributions interleaved: an n x k column-major block whose class stride is n
/// (element j of distribution i at p[j * n + i]), normalized per row. Its n * k elements are
/// read as one array, a vector every w elements: lane l of vector t holds element t w + l, of
/// distribution (t w + l) mod n. Where lanes can be permuted (permute2) and the block is in cache,
/// w = L: every lane busy, and the map of lanes to distributions repeats every P = n / gcd(n, L)
/// vectors (the phases). Otherwise w = floor(L / n) n and P = 1: lanes w..L-1 overlap the next
/// vector and are left out of every reduction and store (at least half the lanes busy). Reductions
/// accumulate lane by lane, each phase on its own (a sweep over every P-th vector), then fold the
/// lanes of each distribution; the state is one value per lane, lane l holding distribution
/// (l mod n)'s, and a vector sees it through its phase's permute (splat). Per-distribution inputs
/// and outputs (labels, losses) go lane by lane: there is one such group per call.
template <class V>
struct interleaved_group {
  using T = scalar_of<V>;
  using state = V;
  using I = typename vec_traits<V>::int_type;
  using IV = lane_index_t<V>;
  static constexpr index_t L = lanes<V>;
  static constexpr bool rows_contiguous = false;
  static constexpr index_t begin = 0;
  /// Blocks up to this size take every lane (w = L): the sweeps of P > 1 phases read every
  /// P-th vector, which beyond the caches fetches the lines in between P times. Column-major
  /// softmax of 6 rows (floats, Zen 4: 1 MiB L2, 32 MiB L3): K = 10 000 1.72-1.79 -> 2.27-2.34 G
  /// elements/s, K = 100 000 (2.4 MB) 1.63-1.70 -> 1.83-2.04, K = 400 000 (9.6 MB) 1.13-1.21 ->
  /// 0.50; 9 rows of 7000: 1.29-1.32 -> 2.26-2.34.
  static constexpr std::size_t phased_max_bytes = std::size_t{2} << 20;
  index_t k;                 // classes (> 0)
  index_t n;                 // distributions, 1 < n < L
  index_t w;                 // elements per vector
  index_t phases;            // P
  index_t period;            // classes per P vectors: P w / n
  index_t nv;                // vectors: ceil(n * k / w)
  index_t last;              // elements of the last vector: 1..w
  alignas(64) I cls[L][L];   // phase p, lane l: the class of element p w + l, (p w + l) / n
  alignas(64) I dist[L][L];  // phase p, lane l: its distribution, (p w + l) mod n

  interleaved_group(index_t k_, index_t n_) noexcept : k(k_), n(n_) {
    const bool all =
        has_permute2<V>() && static_cast<std::size_t>(n * k) * sizeof(T) <= phased_max_bytes;
    w = all ? L : L / n * n;
    phases = all ? n / std::gcd(n, L) : 1;
    period = phases * w / n;
    nv = (n * k + w - 1) / w;
    last = n * k - (nv - 1) * w;
    for (index_t p = 0; p < phases; ++p)
      for (index_t l = 0; l < L; ++l) {
        cls[p][l] = static_cast<I>((p * w + l) / n);
        dist[p][l] = static_cast<I>((p * w + l) % n);
      }
  }
  interleaved_group(const interleaved_group&) = delete;  // its vectors point into it
  interleaved_group& operator=(const interleaved_group&) = delete;

  /// Vector t P + p: the t-th of phase p.
  template <bool Last = false>
  interleaved_io<V, Last> io(index_t t, index_t p, index_t cnt) const noexcept {
    return {(t * phases + p) * w,           cnt,  t * period, p, cls[p],
            phases > 1 ? dist[p] : nullptr, k - 1};
  }
  interleaved_io<V, true> last_io() const noexcept {
    return io<true>((nv - 1) / phases, (nv - 1) % phases, last);
  }
  /// The full vectors of phase p: at(t) is vector t P + p. Captured by value, as loop bodies
  /// are: read through `this`, they would be loaded again after every store.
  auto phase_at(index_t p) const noexcept {
    return [step = phases * w, at0 = p * w, w_ = w, per = period, p, c = cls[p],
            d = phases > 1 ? dist[p] : nullptr, kl = k - 1](index_t t) {
      return interleaved_io<V>{at0 + t * step, w_, t * per, p, c, d, kl};
    };
  }
  /// phase_at(0) when P = 1: no permutes, and the compiler sees it (a constant null table).
  auto plain_at() const noexcept {
    return [w_ = w, per = period, c = cls[0], kl = k - 1](index_t t) {
      return interleaved_io<V>{t * w_, w_, t * per, 0, c, nullptr, kl};
    };
  }
  index_t phase_count(index_t p) const noexcept {
    return p < nv - 1 ? (nv - 1 - p + phases - 1) / phases : 0;
  }

  template <class F>
  SMAX_FLATTEN V reduce_max(F f) const {
    const V lowest(-std::numeric_limits<T>::infinity());
    const auto op = [](T a, T b) { return detail::max(a, b); };
    V acc[L];
    for (V& a : acc) a = lowest;
    if (phases == 1) {
      acc[0] = max_of_vectors(nv - 1, f, plain_at(), lowest);
    } else {
      for (index_t p = 0; p < phases; ++p)
        acc[p] = max_of_vectors(phase_count(p), f, phase_at(p), lowest);
    }
    const index_t pl = (nv - 1) % phases;
    acc[pl] = max(acc[pl], select(tail_mask<V>(last), f(last_io()), lowest));
    return fold(acc, op);
  }

  template <class F>
  SMAX_FLATTEN auto reduce_sum(F f) const {
    using R = decltype(f(last_io()));
    R acc[L];
    for (R& a : acc) a = zero<R>();
    if (phases == 1) {
      acc[0] = sum_of_vectors(nv - 1, f, plain_at());
    } else {
      for (index_t p = 0; p < phases; ++p) acc[p] = sum_of_vectors(phase_count(p), f, phase_at(p));
    }
    const index_t pl = (nv - 1) % phases;
    acc[pl] = acc[pl] + zero_unless(tail_mask<V>(last), f(last_io()));
    return fold_sums(acc);
  }

  template <class F>
  SMAX_FLATTEN void for_each(F f) const {
    const index_t full = nv - 1;
    if (phases == 1) {
      const auto at = plain_at();
      for (index_t t = 0; t < full; ++t) f(at(t));
    } else {
      // Vector by vector in memory order, the phases in turn.
      const index_t np = phases, w_ = w, per = period, kl = k - 1;
      const I* c = cls[0];
      const I* d = dist[0];
      for (index_t u = 0, p = 0, j = 0; u < full; ++u) {
        f(interleaved_io<V>{u * w_, w_, j, p, c + p * L, d + p * L, kl});
        if (++p == np) p = 0, j += per;
      }
    }
    f(last_io());
  }
  template <class U, class F>
  void for_each_stream(const strided<U>&, F f) const {
    for_each(f);
  }

  template <class U>
  void store_out(const per_dist<U>& out, const V& v) const noexcept {
    alignas(64) T buf[L];
    detail::store(buf, v);
    for (index_t l = 0; l < n; ++l) out.p[l * out.stride] = narrow_to<U>(buf[l]);
  }
  template <class U>
  V load_out(const per_dist<U>& in) const noexcept {
    alignas(64) T buf[L];
    for (index_t l = 0; l < L; ++l) buf[l] = widen<T>(in.p[l % n * in.stride]);
    return detail::load<V>(buf);
  }

  // ---- labels (cross-entropy): lane l holds distribution l mod n's, as across groups do

  struct labels_t : lane_labels<V> {
    IV rel[L];  // phase p: the label of each lane's distribution less the lane's class offset
    typename V::batch_bool_type valid_at[L];  // phase p: the lanes whose row counts
  };
  template <class Lbl>
  labels_t load_labels(const per_dist<const Lbl>& y, const label_spec& spec) const noexcept {
    alignas(64) I ys[L] = {};
    for (index_t l = 0; l < n; ++l) {
      const one_label one = make_label(y.p[l * y.stride], spec);
      ys[l] = static_cast<I>(one.valid ? one.y : -2);
    }
    for (index_t l = n; l < L; ++l) ys[l] = ys[l - n];
    labels_t lab;
    lab.yv = IV::load_aligned(ys);
    lab.valid = xsimd::bool_cast(lab.yv != IV(I(-2)));
    lab.here = xsimd::bool_cast(lab.yv >= IV(I(0)));
    alignas(64) I r[L];
    for (index_t p = 0; p < phases; ++p) {
      for (index_t l = 0; l < L; ++l) r[l] = ys[dist[p][l]];
      const IV yp = IV::load_aligned(r);
      lab.rel[p] = yp - IV::load_aligned(cls[p]);
      lab.valid_at[p] = xsimd::bool_cast(yp != IV(I(-2)));
    }
    return lab;
  }
  /// a[label] per lane, 0 where the label is not here.
  template <class A>
  V gather(const A& a, const labels_t& lab) const noexcept {
    alignas(64) I ys[L];
    alignas(64) T buf[L] = {};
    lab.yv.store_aligned(ys);
    for (index_t l = 0; l < n; ++l) buf[l] = ys[l] >= 0 ? widen<T>(element(a, l, ys[l])) : T(0);
    for (index_t l = n; l < L; ++l) buf[l] = buf[l - n];
    return detail::load<V>(buf);
  }
  /// The label's gradient entry is written in the gradient pass (select on is_class).
  static constexpr bool label_in_pass = true;
  V label_here(const labels_t& lab) const noexcept { return select(lab.here, V(T(1)), V(T(0))); }
  /// Row values (losses) are accumulated lane by lane, in lanes 0..n-1, as the across group of
  /// the same n rows does.
  static constexpr bool lane_totals = true;
  void add_lanes(double* sum, double* comp, const V& v) const noexcept {
    across_group<V, true>{k, n}.add_lanes(sum, comp, v);
  }

 private:
  template <class U>
  static U element(const strided<U>& a, index_t l, index_t y) noexcept {
    return a.p[l * a.ds + y * a.cs];
  }
  template <class U>
  static U element(const per_class<U>& a, index_t, index_t y) noexcept {
    return a.p[y];
  }
  /// Lane l of the result: op over the lanes l' < w of every phase's vector that hold
  /// distribution l mod n, phase by phase in order.
  template <class Op>
  V fold(const V* acc, Op op) const noexcept {
    alignas(64) T buf[L], out[L] = {};
    for (index_t p = 0; p < phases; ++p) {
      detail::store(buf, acc[p]);
      for (index_t l = 0; l < w; ++l) {
        const index_t d = dist[p][l];
        out[d] = p == 0 && l < n ? buf[l] : op(out[d], buf[l]);
      }
    }
    for (index_t l = n; l < L; ++l) out[l] = out[l - n];
    return detail::load<V>(out);
  }
  V fold_sums(const V* acc) const noexcept {
    return fold(acc, [](T a, T b) { return a + b; });
  }
  template <int N>
  sums<V, N> fold_sums(const sums<V, N>* acc) const noexcept {
    sums<V, N> r;
    V part[L] = {};
    for (int i = 0; i < N; ++i) {
      for (index_t p = 0; p < phases; ++p) part[p] = acc[p].v[i];
      r.v[i] = fold_sums(part);
    }
    return r;
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

/// Whether an array fits an interleaved group of n distributions (class stride n).
template <class U>
constexpr bool interleaved_layout(const strided<U>& a, index_t n) noexcept {
  return a.ds == 1 && a.cs == n;
}
template <class U>
constexpr bool interleaved_layout(const per_dist<U>&, index_t) noexcept {
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

/// The loop run_groups takes over a set of arrays with vectors V: path_of, and on the across
/// path whether the distributions are read as one interleaved array (1 < n < lanes, every array
/// packed with class stride n). Callers that may copy an argument into another layout compare
/// it with and without that argument, so that the argument's layout never changes the loop.
struct loop {
  path how;
  bool interleaved;
  friend bool operator!=(const loop& a, const loop& b) noexcept {
    return a.how != b.how || a.interleaved != b.interleaved;
  }
};
template <class V, class... Arrays>
loop loop_of(index_t n, index_t k, const Arrays&... arrays) noexcept {
  const path how = path_of(n, k, arrays...);
  return {how, !is_scalar_v<V> && how == path::across && n > 1 && n < lanes<V> && k > 0 &&
                   (interleaved_layout(arrays, n) && ...)};
}

/// Rows in lanes: contiguous distributions this short are processed lanes<V> at a time, transposed
/// into a stack tile so that each vector holds one class of lanes<V> distributions, by the across
/// group: no horizontal reductions, no partial vectors, every lane busy. Whether that beats one
/// row at a time depends on how much a kernel does per row besides its vectors, so each kernel
/// states its kind (tile_kind) and the tiles stop near the crossover measured for it (tiles over
/// rows, float unless said, 2^16 elements in cache, Zen 5, L = lanes):
/// - light (the backward passes: a dot product, a multiply-add): at K = L, AVX-512 1.0x (double
///   1.1-1.3x), AVX2 0.9-1.0x; at K = 2L, AVX-512 and AVX2 0.6-0.9x, SSE2 0.5-0.8x. Up to L.
/// - exp (softmax, log_softmax, logsumexp): at K = 64, AVX-512 1.3-1.7x (double 0.9-1.0x), AVX2
///   0.8-0.9x, SSE2 0.9-1.2x; at K = 17, SSE2 2.4-2.9x. Up to 64 classes.
/// - fused (cross-entropy: labels, logs and compensated sums per row): at K = 128, AVX-512
///   1.5-1.8x (double 1.2x), AVX2 1.0-1.2x, SSE2 0.9-1.0x. Up to 128 classes.
/// Out of cache (large: arrays of tile_cache_bytes or more) tiles of rows of several vectors are
/// staged (tile_in): read and written in address order, row after row, not a block of vectors
/// at a time, whose order (every other line at K = 32) the hardware prefetchers did not follow
/// (softmax 0.9-1.0 G/s at K = 32, a third of memcpy). Staged, against rows, 2^24 floats, Zen 4,
/// medians of 4 alternating runs, G/s: softmax K = 32 1.9 (0.96 before staging), 33 1.48 / 0.85,
/// 40 1.79 / 1.15, 48 1.98 / 1.39, 64 1.53 / 1.69: exp tiles stop at 48 classes out of cache;
/// cross-entropy forward+backward K = 32 1.48 / 0.91, 48 1.61 / 0.68, 64 1.17 / 0.60, 80
/// 1.14 / 0.79, 100 0.90 / 0.81, 128 0.85 / 1.12: fused ones at 100.
enum class tile_kind { light, exp, fused };
template <class V>
constexpr index_t tile_max(tile_kind kind, bool large = false) noexcept {
  return kind == tile_kind::light ? lanes<V>
         : kind == tile_kind::exp ? (large ? 48 : 64)
                                  : (large ? 100 : 128);
}
inline constexpr std::size_t tile_cache_bytes = std::size_t{16} << 20;
/// Whether n x k elements of T make a large problem (tile_max).
template <class T>
constexpr bool beyond_cache(index_t n, index_t k) noexcept {
  return static_cast<std::size_t>(n) * static_cast<std::size_t>(k) * sizeof(T) >= tile_cache_bytes;
}

/// Whether contiguous distributions of k classes go through tiles (given a vector of them), in
/// a problem beyond the caches or not (large): the one decision run_groups (tiles or rows) and
/// run_threads (chunks of vectors or of rows) share.
template <class V, tile_kind Kind>
constexpr bool tiled(index_t k, bool large) noexcept {
  return !is_scalar_v<V> && k > 1 && k <= tile_max<V>(Kind, large);
}

/// Rows [0, L) of a tile of contiguous distributions (row stride ds, k <= Max classes)
/// into buf transposed, buf[j * L + l] = p[l * ds + j]: one L x L block of vectors at a time,
/// loaded (masked only where a whole vector would leave the array), transposed in registers,
/// stored as columns. Vector stores and loads of whole columns, so the across kernel's loads are
/// forwarded from them. Staged (rows of more than one vector, beyond the caches: tile_slot), the
/// rows are first read in address order, row after row, into buf (row l's vector b at
/// buf[(b + l) L]), and each block is transposed there in place: the block at a time order reads
/// every other line of a tile at K = 32, which the hardware prefetchers do not follow out of
/// cache (see tile_kind).
template <class V, class U>
SMAX_ALWAYS_INLINE void tile_in(const U* p, index_t ds, index_t k, index_t extent,
                                scalar_of<V>* buf, bool staged) noexcept {
  constexpr index_t L = lanes<V>;
  // A whole vector where it stays within the `extent` elements readable from p (it reads into
  // the next rows, or the gaps between them; those lanes are not used), else a masked load.
  const auto row_vector = [=](index_t l, index_t b) {
    return l * ds + b + L <= extent ? load_as<V>(p + l * ds + b)
                                    : load_partial_as<V>(p + l * ds + b, k - b < L ? k - b : L);
  };
  if (staged) {
    for (index_t l = 0; l < L; ++l)
      for (index_t b = 0; b < k; b += L) detail::store(buf + (b + l) * L, row_vector(l, b));
    for (index_t b = 0; b < k; b += L) {
      V r[L];
      for (index_t l = 0; l < L; ++l) r[l] = detail::load<V>(buf + (b + l) * L);
      transpose_square(r);
      for (index_t c = 0; c < L; ++c) detail::store(buf + (b + c) * L, r[c]);
    }
    return;
  }
  for (index_t b = 0; b < k; b += L) {
    const index_t cnt = k - b < L ? k - b : L;
    V r[L];
    for (index_t l = 0; l < L; ++l) r[l] = row_vector(l, b);
    transpose_square(r);
    for (index_t c = 0; c < cnt; ++c) detail::store(buf + (b + c) * L, r[c]);
  }
}

/// The inverse of tile_in: columns buf[j * L .. j * L + L) back to rows p[l * ds + j], writing
/// the k classes of each row and nothing else. Staged, each block is transposed in place in buf
/// (which it then no longer holds) and the rows are written in address order, row after row: at
/// K = 32 out of cache, stores to every other line, each one's line fetched for ownership in
/// that order, ran softmax at 0.9 G/s, in address order 1.3-1.4 (1.7-1.9 with tile_in staged).
template <class V, class U>
SMAX_ALWAYS_INLINE void tile_out(scalar_of<V>* buf, index_t k, U* p, index_t ds,
                                 bool staged) noexcept {
  constexpr index_t L = lanes<V>;
  const auto put = [=](index_t l, index_t b, const V& v) {
    const index_t cnt = k - b < L ? k - b : L;
    if (cnt == L) {
      store_as(p + l * ds + b, v);
    } else {
      store_partial_as(p + l * ds + b, v, cnt);
    }
  };
  if (staged) {
    // Columns past k in the last block are whatever buf holds there: their lanes are not stored.
    for (index_t b = 0; b < k; b += L) {
      V r[L];
      for (index_t c = 0; c < L; ++c) r[c] = detail::load<V>(buf + (b + c) * L);
      transpose_square(r);
      for (index_t l = 0; l < L; ++l) detail::store(buf + (b + l) * L, r[l]);
    }
    for (index_t l = 0; l < L; ++l)
      for (index_t b = 0; b < k; b += L) put(l, b, detail::load<V>(buf + (b + l) * L));
    return;
  }
  for (index_t b = 0; b < k; b += L) {
    const index_t cnt = k - b < L ? k - b : L;
    V r[L];
    for (index_t c = 0; c < L; ++c)
      r[c] = c < cnt ? detail::load<V>(buf + (b + c) * L) : V(scalar_of<V>(0));
    transpose_square(r);
    for (index_t l = 0; l < L; ++l) put(l, b, r[l]);
  }
}

/// The transposes of a dense tile: L rows of k <= 3L/8 classes that follow each other in memory
/// (row stride k) are k whole vectors, and column j of the tile (lane l: element l k + j) is
/// gathered from them by ceil(k/2) two-vector permutes, each keeping the lanes whose element its
/// pair of vectors holds; out() is the inverse. At K = 2 on AVX-512 that is 2 permutes each way
/// where the square transposes take 64 shuffles and 16 masked loads or stores.
template <class V>
struct dense_tile {
  using T = scalar_of<V>;
  using IV = lane_index_t<V>;
  using I = typename vec_traits<V>::int_type;
  static constexpr index_t L = lanes<V>;
  IV in_base;          // lane l: l k, the element of class 0 in row l
  IV out_base[L / 2];  // lane t of row vector r (element r L + t = l k + j): j L + l

  /// Whether a tile of rows with row stride ds and k classes is dense, and cheaper through these
  /// transposes than the square ones: up to 3L/8 classes. The permutes grow as k²/2; with 16
  /// floats (Zen 4, softmax, 2^16 elements), the square transposes took 1.3x the time at K = 5,
  /// the same at 6, and 0.85x / 0.8x at 7 / 8.
  static bool fits(index_t ds, index_t k) noexcept { return ds == k && 8 * k <= 3 * L; }

  void init(index_t k) noexcept {
    alignas(64) I b[L];
    for (index_t l = 0; l < L; ++l) b[l] = static_cast<I>(l * k);
    in_base = IV::load_aligned(b);
    index_t l = 0, j = 0;
    for (index_t r = 0; r < k; ++r) {
      for (index_t t = 0; t < L; ++t) {
        b[t] = static_cast<I>(j * L + l);
        if (++j == k) j = 0, ++l;
      }
      out_base[r] = IV::load_aligned(b);
    }
  }

  /// Lanes of the pairs (at(0), at(1)), (at(2), at(3)), ... by idx = base + shift - 2 L q for
  /// pair q: the last pair whose index is not negative holds the lane's element (an odd last
  /// vector pairs with itself; no lane reads its upper half). at(r) loads vector r where it is
  /// (a copy into a local array of run-time length would be a call to memcpy).
  template <class F>
  SMAX_ALWAYS_INLINE V gather(F at, const IV& base, index_t shift, index_t k) const noexcept {
    IV idx = base + IV(static_cast<I>(shift));
    V acc = permute2(at(0), at(1), idx);
    for (index_t q = 2; q < k; q += 2) {
      idx = idx - IV(static_cast<I>(2 * L));
      const V w = permute2(at(q), at(q + 1 < k ? q + 1 : q), idx);
      acc = select(xsimd::bool_cast(idx >= IV(I(0))), w, acc);
    }
    return acc;
  }

  /// The tile's rows at p (L k elements) into buf transposed: buf[j L + l] = p[l k + j].
  template <class U>
  SMAX_ALWAYS_INLINE void in(const U* p, T* buf, index_t k) const noexcept {
    const auto at = [p](index_t r) { return load_as<V>(p + r * L); };
    for (index_t j = 0; j < k; ++j) detail::store(buf + j * L, gather(at, in_base, j, k));
  }
  /// The inverse of in(): p[l k + j] = buf[j L + l], L k elements stored as k whole vectors.
  template <class U>
  SMAX_ALWAYS_INLINE void out(const T* buf, U* p, index_t k) const noexcept {
    const auto at = [buf](index_t j) { return detail::load<V>(buf + j * L); };
    for (index_t r = 0; r < k; ++r) store_as(p + r * L, gather(at, out_base[r], 0, k));
  }
};
/// What a tile slot holds where there is no permute2: never dense.
struct no_dense_tile {
  static bool fits(index_t, index_t) noexcept { return false; }
  void init(index_t) noexcept {}
  template <class U, class T>
  void in(const U*, T*, index_t) const noexcept {}
  template <class T, class U>
  void out(const T*, U*, index_t) const noexcept {}
};
template <class V>
using dense_tile_t = std::conditional_t<has_permute2<V>(), dense_tile<V>, no_dense_tile>;

/// How run() hands an array to a tile of up to Max classes: inputs are copied in (transposed,
/// for rows in lanes), outputs are computed in the tile and copied back; per-distribution and
/// per-class arrays pass through.
template <class A, class V, index_t Max>
struct tile_slot {
  void init(const A&, index_t, bool) noexcept {}
  A in(const A& a, index_t, index_t) noexcept { return a; }
  void out(index_t) noexcept {}
};
template <class U, class V, index_t Max>
struct tile_slot<strided<const U>, V, Max> {
  using T = scalar_of<V>;
  static constexpr index_t L = lanes<V>;
  static_assert(Max % L == 0, "staged tiles hold whole vectors of every row");
  alignas(64) T buf[Max * L];
  dense_tile_t<V> dense;
  bool is_dense = false;
  bool copy = false;  // distributions across memory (class stride not 1): copied, not transposed
  bool staged = false;  // rows of several vectors beyond the caches: read in address order
  void init(const strided<const U>& a, index_t k, bool large) noexcept {
    copy = a.cs != 1;
    is_dense = !copy && dense.fits(a.ds, k);
    staged = large && k > L;
    if (is_dense) dense.init(k);
  }
  SMAX_ALWAYS_INLINE strided<const T> in(const strided<const U>& a, index_t k,
                                         index_t rows) noexcept {
    if (copy) {
      for (index_t j = 0; j < k; ++j) detail::store(buf + j * L, load_as<V>(a.p + j * a.cs));
    } else if (is_dense) {
      dense.in(a.p, buf, k);
    } else {
      tile_in<V>(a.p, a.ds, k, (rows - 1) * a.ds + k, buf, staged);
    }
    return {buf, 1, L};
  }
  void out(index_t) noexcept {}
};
template <class U, class V, index_t Max>
struct tile_slot<strided<U>, V, Max> {
  using T = scalar_of<V>;
  static constexpr index_t L = lanes<V>;
  static_assert(Max % L == 0, "staged tiles hold whole vectors of every row");
  alignas(64) T buf[Max * L];
  dense_tile_t<V> dense;
  bool is_dense = false;
  strided<U> dst{nullptr, 0, 0};
  bool copy = false;
  bool staged = false;
  void init(const strided<U>& a, index_t k, bool large) noexcept {
    copy = a.cs != 1;
    is_dense = a.p != nullptr && !copy && dense.fits(a.ds, k);
    staged = large && k > L;
    if (is_dense) dense.init(k);
  }
  SMAX_ALWAYS_INLINE strided<T> in(const strided<U>& a, index_t, index_t) noexcept {
    dst = a;
    return {a.p == nullptr ? nullptr : buf, 1, L};
  }
  SMAX_ALWAYS_INLINE void out(index_t k) noexcept {
    if (dst.p == nullptr) return;
    if (copy) {
      for (index_t j = 0; j < k; ++j) store_as(dst.p + j * dst.cs, detail::load<V>(buf + j * L));
    } else if (is_dense) {
      dense.out(buf, dst.p, k);
    } else {
      tile_out<V>(buf, k, dst.p, dst.ds, staged);
    }
  }
};

/// f(std::integral_constant<index_t, k>{}) when 2 <= k <= lanes<V>, else f(k): rows-in-lanes
/// tiles of up to a vector of classes get a loop of their own per K, in which the loops over
/// classes (the transposes, and the kernel body, inlined into it) have constant trip counts. At
/// these K such loops are most of the time: 16 floats (Zen 4, 2^16 elements), a run-time K took
/// 1.2-1.7x the time of softmax, 1.1-1.4x of log_softmax, 1.0-1.5x of softmax_backward. The fused
/// cross-entropy, whose rows spend longer on labels, logs and sums, gained 3-16% for twice the
/// compile time of its tests, and keeps one loop.
template <class V, class F, index_t... K>
SMAX_ALWAYS_INLINE void with_fixed_classes(index_t k, F&& f, std::integer_sequence<index_t, K...>) {
  if (!((k == K + 2 ? (f(std::integral_constant<index_t, K + 2>{}), true) : false) || ...)) f(k);
}
template <class V, class F>
SMAX_ALWAYS_INLINE void with_fixed_classes(index_t k, F&& f) {
  with_fixed_classes<V>(k, f, std::make_integer_sequence<index_t, lanes<V> - 1>{});
}

/// The loops over groups of a few classes each (rows-in-lanes tiles, and distributions across
/// memory): flattened, so that the kernel body and everything it calls is inlined per class.
/// large: beyond the caches (the tiles of rows of several vectors are staged: tile_in).
template <class V, class K, class Op, class Tuple, class... Arrays, std::size_t... I>
SMAX_FLATTEN void run_tiles(index_t& i, index_t n, K classes, bool large, Op& op, Tuple& slots,
                            std::index_sequence<I...>, const Arrays&... arrays) {
  constexpr index_t L = lanes<V>;
  const index_t k = classes;
  const across_group<V> g{k};
  (std::get<I>(slots).init(arrays, k, large), ...);
  for (; i + L <= n; i += L) {
    op(g, std::get<I>(slots).in(arrays.at(i), k, n - i)...);
    (std::get<I>(slots).out(k), ...);
  }
}

/// Across groups whose class vectors fall on a few of the 4 KiB offsets that index the L1 cache
/// (and that the store buffer compares loads with): a column-major batch of N rows where N times
/// the element size is a multiple of 2 KiB (within a vector). With more such vectors than an L1
/// set has ways (8), every pass misses L1: column-major softmax of 2048 x 32 floats ran at
/// 0.95-1.1 G elements/s, against 2.5-2.6 at 2064 x 32 (Zen 4). Such groups are copied into a
/// stack tile of up to crowded_max classes per array (8 KiB with AVX-512), run there, and copied
/// back (the same arithmetic, so the same bits). That gave 1.2-1.7 G/s at 1024 x 32, 2048 x 32,
/// 4096 x 16 and 2048 x 64 (the copies still fill one L1 set), and 1.44-1.53 against 1.16-1.35
/// at 8192 x 6 and 8192 x 8; up to crowded_min classes lose more to the copies than they gain
/// (K = 2 and 4: 1.13-1.53 against 1.32-1.66 G/s).
inline constexpr index_t crowded_min = 4;
inline constexpr index_t crowded_max = 128;
template <class V, class U>
bool crowded(const strided<U>& a, index_t k) noexcept {
  constexpr std::uint64_t page = 4096, span = static_cast<std::uint64_t>(lanes<V>) * sizeof(U);
  const std::uint64_t step = static_cast<std::uint64_t>(a.cs < 0 ? -a.cs : a.cs) * sizeof(U) % page;
  // Two class vectors at most 2 apart on overlapping offsets.
  for (index_t d = 1; d < k && d <= 2; ++d) {
    const std::uint64_t off = static_cast<std::uint64_t>(d) * step % page;
    if (a.p != nullptr && (off < span || page - off < span)) return true;
  }
  return false;
}
template <class V, class A>
bool crowded(const A&, index_t) noexcept {
  return false;
}

/// The last few distributions of a batch across memory (n mod L of them, column-major): a
/// partial vector of them costs what a full one does, a pass over k class vectors with most
/// lanes idle. Up to copied_rows_max such distributions of up to copied_row_bytes per array are
/// copied one at a time into a contiguous stack row, run by the along-memory group there (its
/// arithmetic, not the across group's), and copied back. Softmax, floats, Zen 4, two rounds
/// (partial vector / copied rows, us): 65 x 1000 46.7-40.3 / 34.4-30.0, 67 x 1000 (3 rows)
/// 42.9-36.2 / 30.6-31.2, 70 x 1000 (6 rows) 38.9-33.5 / 39.1-42.1; cross-entropy 65 x 1000
/// 48.4-37.7 / 34.1-35.5, 17 x 1000 12.4-14.4 / 7.7-9.3: the copies win for one row, break even
/// near three. From copied_row_min classes: with 65 x 100 they still gained (3.5 / 2.9-3.2 us),
/// but the row buffers are zeroed on every call (value-initialized: 8 KiB each), which shorter
/// rows would not pay back.
inline constexpr index_t copied_rows_max = 2;
inline constexpr index_t copied_row_min = 100;
inline constexpr std::size_t copied_row_bytes = std::size_t{8} << 10;

/// How run_copied_rows hands an array to one copied distribution: inputs are copied into a
/// contiguous stack row, outputs computed there and copied back (as stored, so 16-bit outputs
/// are rounded once); per-distribution and per-class arrays pass through.
template <class A>
struct row_slot {
  static constexpr bool fits(const A&, index_t) noexcept { return true; }
  A in(const A& a, index_t) noexcept { return a; }
  void out(index_t) noexcept {}
};
template <class U>
struct row_slot<strided<const U>> {
  static constexpr index_t max = static_cast<index_t>(copied_row_bytes / sizeof(U));
  static constexpr bool fits(const strided<const U>&, index_t k) noexcept { return k <= max; }
  alignas(64) U buf[max];
  strided<const U> in(const strided<const U>& a, index_t k) noexcept {
    for (index_t j = 0; j < k; ++j) buf[j] = a.p[j * a.cs];
    return {buf, k, 1};
  }
  void out(index_t) noexcept {}
};
template <class U>
struct row_slot<strided<U>> {
  static constexpr index_t max = static_cast<index_t>(copied_row_bytes / sizeof(U));
  static constexpr bool fits(const strided<U>&, index_t k) noexcept { return k <= max; }
  alignas(64) U buf[max];
  strided<U> dst{nullptr, 0, 0};
  strided<U> in(const strided<U>& a, index_t k) noexcept {
    dst = a;
    return {a.p == nullptr ? nullptr : buf, k, 1};
  }
  void out(index_t k) noexcept {
    if (dst.p == nullptr) return;
    for (index_t j = 0; j < k; ++j) dst.p[j * dst.cs] = buf[j];
  }
};

/// Distributions [i, n) of a batch across memory, each copied into a contiguous stack row and run
/// there by the along-memory group (see copied_rows_max). Its own frame: the rows' buffers are on
/// the stack only while it runs.
template <class V, class Op, class... Arrays>
SMAX_NOINLINE void run_copied_rows(index_t i, index_t n, index_t k, Op& op,
                                   const Arrays&... arrays) {
  std::tuple<row_slot<Arrays>...> slots;
  const contiguous_group<V> g{k};
  for (; i < n; ++i) {
    std::apply([&](auto&... s) { op(g, s.in(arrays.at(i), k)...); }, slots);
    std::apply([&](auto&... s) { (s.out(k), ...); }, slots);
  }
}

template <class V, class Op, class... Arrays>
SMAX_FLATTEN void run_across(index_t& i, index_t n, index_t k, Op& op, const Arrays&... arrays) {
  const across_group<V> g{k};
  for (; i + lanes<V> <= n; i += lanes<V>) op(g, arrays.at(i)...);
}

/// Runs `op(group, arrays.at(i)...)` over the n distributions of k classes: one contiguous
/// group per distribution (or rows-in-lanes tiles when k is small), or lanes<V> neighbouring
/// distributions per group (the remainder one at a time), or, for any other layout, one scalar
/// at a time. Kind: the kernel's tile_kind; large: whether the whole problem (of which this may
/// be a thread's chunk) is beyond the caches (tile_max).
template <class Arch, class T, tile_kind Kind, class Op, class... Arrays>
inline void run_groups(index_t n, index_t k, bool large, Op&& op, const Arrays&... arrays) {
  using V = vec_t<T, Arch>;
  const loop how = loop_of<V>(n, k, arrays...);
  index_t i = 0;
  if (how.how == path::contiguous) {
    if constexpr (!is_scalar_v<V>) {
      if (tiled<V, Kind>(k, large) && n >= lanes<V>) {
        std::tuple<tile_slot<Arrays, V, tile_max<V>(Kind)>...> slots;
        if constexpr (Kind != tile_kind::fused) {
          with_fixed_classes<V>(k, [&](auto kc) {
            run_tiles<V>(i, n, kc, large, op, slots, std::index_sequence_for<Arrays...>{},
                         arrays...);
          });
        } else {
          run_tiles<V>(i, n, k, large, op, slots, std::index_sequence_for<Arrays...>{}, arrays...);
        }
      }
    }
    const contiguous_group<V> g{k};
    for (; i < n; ++i) op(g, arrays.at(i)...);
    return;
  }
  if (how.how == path::across) {
    if constexpr (!is_scalar_v<V>) {
      // Fewer distributions than lanes, packed: in interleaved vectors.
      if (how.interleaved) {
        op(interleaved_group<V>(k, n), arrays...);
        return;
      }
      // Class vectors on a few 4 KiB offsets: each group's copied into a stack tile first.
      if (n >= lanes<V> && k > crowded_min && k <= crowded_max && (crowded<V>(arrays, k) || ...)) {
        std::tuple<tile_slot<Arrays, V, crowded_max>...> slots;
        run_tiles<V>(i, n, k, false, op, slots, std::index_sequence_for<Arrays...>{}, arrays...);
      }
    }
    run_across<V>(i, n, k, op, arrays...);
    if constexpr (!is_scalar_v<V>) {
      // The last n mod lanes distributions (all of them when n < lanes): a few are copied into
      // rows, more run in one partial vector.
      if (i < n) {
        if (n - i <= copied_rows_max && k >= copied_row_min &&
            (row_slot<Arrays>::fits(arrays, k) && ...)) {
          run_copied_rows<V>(i, n, k, op, arrays...);
        } else {
          op(across_group<V, true>{k, n - i}, arrays.at(i)...);
        }
      }
      return;
    }
  }
  const across_group<T> g{k};
  for (; i < n; ++i) op(g, arrays.at(i)...);
}

/// run_groups, then a fence for the streaming stores a kernel may have made (the caller's next
/// reads, and other threads after a barrier, see them).
template <class Arch, class T, tile_kind Kind, class Op, class... Arrays>
inline void run(index_t n, index_t k, bool large, Op&& op, const Arrays&... arrays) {
  run_groups<Arch, T, Kind>(n, k, large, op, arrays...);
  stream_fence();
}

// ---- threads (OpenMP, when the user compiles with it)
// ---------------------------------------------

/// Problems smaller than this many elements per thread stay on one thread.
inline constexpr index_t thread_grain = index_t{1} << 15;
/// A distribution at least this long may be split across threads when there are too few
/// distributions to go around (a language-model head at batch 1).
inline constexpr index_t split_min_k = index_t{1} << 14;
inline constexpr int max_threads = 256;

/// Per-thread slots for combining partial reductions, one cache line each.
struct thread_slots {
  alignas(64) unsigned char bytes[max_threads][64];
};

/// A slice [begin, k) of one contiguous distribution; every thread of an OpenMP team holds one
/// and calls the same kernel body. Reductions combine the slices' partial results in thread
/// order (so results do not depend on timing), outputs of one value per distribution are written
/// by thread 0, and the label's gradient entry by the thread whose slice holds it.
template <class V>
struct split_group : contiguous_group<V> {
  using base = contiguous_group<V>;
  using T = scalar_of<V>;
  int thread, threads;
  thread_slots* slots;

  template <class F>
  T reduce_max(F f) const {
    const T part = base::reduce_max(f);
    return combine(part, [](const T& a, const T& b) { return detail::max(a, b); });
  }
  template <class F>
  auto reduce_sum(F f) const {
    const auto part = base::reduce_sum(f);
    using R = std::decay_t<decltype(part)>;
    return combine(part, [](const R& a, const R& b) { return a + b; });
  }
  template <class U>
  void store_out(const per_dist<U>& out, T v) const noexcept {
    // Everyone has read this distribution's per-distribution inputs (which out may alias).
    SMAX_OMP_BARRIER
    if (thread == 0) base::store_out(out, v);
  }
  bool records() const noexcept { return thread == 0; }
  template <class A>
  T gather(const A& a, const one_label& lab) const noexcept {
    const T v = base::gather(a, lab);
    // Everyone has read the label's element before anyone's next pass may overwrite it.
    SMAX_OMP_BARRIER
    return v;
  }
  template <class U>
  void scatter(const strided<U>& a, const one_label& lab, T v) const noexcept {
    if (lab.y >= this->begin && lab.y < this->k) base::scatter(a, lab, v);
  }

 private:
  template <class R, class Op>
  R combine(const R& part, Op op) const {
    static_assert(sizeof(R) <= sizeof(slots->bytes[0]), "partial result too large");
    std::memcpy(slots->bytes[thread], &part, sizeof(R));
    SMAX_OMP_BARRIER
    R all;
    std::memcpy(&all, slots->bytes[0], sizeof(R));
    for (int t = 1; t < threads; ++t) {
      R other;
      std::memcpy(&other, slots->bytes[t], sizeof(R));
      all = op(all, other);
    }
    // Nobody overwrites a slot before everyone has read them all.
    SMAX_OMP_BARRIER
    return all;
  }
};

/// Runs a kernel body over n distributions of k classes on up to `threads` threads.
/// make_op(chunk) gives the body for one chunk of distributions (chunks are numbered from 0 in
/// order, at most max_threads of them), and is called once for every chunk, with rows or not;
/// returns the number of chunks. Without OpenMP, or for small problems, there is one chunk on
/// the calling thread. Kind: the kernel's tile_kind.
template <class Arch, class T, tile_kind Kind, class MakeOp, class... Arrays>
int run_threads(index_t n, index_t k, int threads, MakeOp&& make_op, const Arrays&... arrays) {
  const bool large = beyond_cache<T>(n, k);
#ifdef _OPENMP
  using V = vec_t<T, Arch>;
  const index_t work = n * k;
  index_t want = threads < max_threads ? threads : max_threads;
  if (work / thread_grain < want) want = work / thread_grain;
  if (want > 1) {
    const int team = static_cast<int>(want);
    const path how = path_of(n, k, arrays...);
    if (n < 2 * want && k >= split_min_k && how == path::contiguous) {
      thread_slots slots;
      const auto op = make_op(0);
#pragma omp parallel num_threads(team)
      {
        const int t = omp_get_thread_num(), nt = omp_get_num_threads();
        // Slices of whole 16-vector blocks, so only the last slice has a partial vector.
        const index_t block = 16 * lanes<V>, blocks = (k + block - 1) / block;
        const index_t b0 = blocks * t / nt, b1 = blocks * (t + 1) / nt;
        const index_t k0 = b0 * block < k ? b0 * block : k, k1 = b1 * block < k ? b1 * block : k;
        split_group<V> g{{k1, k0}, t, nt, &slots};
        for (index_t i = 0; i < n; ++i) op(g, arrays.at(i)...);
        stream_fence();
      }
      return 1;
    }
    int chunks = 1;
#pragma omp parallel num_threads(team)
    {
      const int t = omp_get_thread_num(), nt = omp_get_num_threads();
#pragma omp single
      chunks = nt;
      // Chunks of whole vectors of distributions where a group holds a vector of them (tiles,
      // across groups), so that groups stay full; else of rows: 4 rows of 262 144 go 2 and 2
      // (in vectors of 16 rows, all 4 would go to one thread).
      const bool grouped =
          how == path::across || (how == path::contiguous && tiled<V, Kind>(k, large));
      const index_t unit = grouped ? lanes<V> : 1;
      const index_t units = (n + unit - 1) / unit;
      const index_t i0 = std::min(n, units * t / nt * unit);
      const index_t i1 = std::min(n, units * (t + 1) / nt * unit);
      // make_op(t) for every chunk, rows or not: it may set up the chunk's state.
      auto op = make_op(t);
      if (i1 > i0) run<Arch, T, Kind>(i1 - i0, k, large, op, arrays.at(i0)...);
    }
    return chunks;
  }
#else
  (void)threads;
#endif
  run<Arch, T, Kind>(n, k, large, make_op(0), arrays...);
  return 1;
}

// ---- the kernels --------------------------------------------------------------------------------
// Each takes n distributions of k classes and a number of threads (used when compiled with
// OpenMP). Preconditions: the arrays describe valid memory for n x k elements; outputs either do
// not overlap inputs or coincide with them element for element (in-place). No allocation, no
// exceptions.

/// The same kernel body for every chunk of distributions.
template <class Op>
auto every_chunk(Op op) noexcept {
  return [op](int) { return op; };
}

/// Outputs of at least this many bytes are written with streaming stores where a kernel can: they
/// would not stay in cache anyway (beyond the L2 + L3 share of a core), and skipping the
/// write-allocate read of each output line saves a third of the memory traffic.
inline constexpr std::size_t stream_min_bytes = std::size_t{16} << 20;
/// Rows up to this many bytes keep their exps in a stack buffer when the output streams, so that
/// the output is written once, by the last pass.
inline constexpr std::size_t scratch_bytes = std::size_t{16} << 10;
template <class T>
inline constexpr index_t scratch_elems = static_cast<index_t>(scratch_bytes / sizeof(T));
/// The stack buffer of a 16-bit output's float exps: a whole row of up to kept_elems classes
/// keeps them there, read back by a plain loop (through kept_exps, whose per-vector choice of
/// where each exp waits cost bf16 softmax and cross-entropy 7-19% at K = 1000-10000 in cache,
/// AVX-512); with the row's own output bytes (kept_exps), rows of up to 32768 classes (a
/// 32000-word vocabulary) keep them all, so that each exp is computed once (with 16 KiB, 37% of
/// a 32000-class row's were computed twice: bf16 softmax at 0.66x float in cache).
inline constexpr std::size_t kept_bytes = std::size_t{64} << 10;
template <class T>
inline constexpr index_t kept_elems = static_cast<index_t>(kept_bytes / sizeof(T));

/// Where the float exps of a 16-bit output wait between the pass that computes them and the pass
/// that writes the output (rounding each once), for a contiguous slice [b, k) of a distribution
/// longer than kept_elems, or a thread's slice of one: up to scratch_elems in a stack buffer of
/// kept_elems (buf); a longer slice puts its first half
/// in the output's own bytes (its 2 bytes per class hold half as many floats: lines the output
/// pass writes anyway, so the row's working set stays small) and the next kept_elems in the
/// buffer, or, where the output is x itself (in place) or not aligned for floats, its first
/// kept_elems in the buffer; the rest is computed again. The output pass runs in increasing class
/// order: the output of class j overwrites only floats of classes before j.
template <class T>
struct kept_exps {
  index_t b, mid, end;  // classes [b, mid) in the output's bytes, [mid, end) in buf
  T* spill;
  T* buf;

  template <class U, class X>
  kept_exps(U* y, const X* x, index_t b_, index_t k, index_t lanes, T* buffer) noexcept
      : b(b_),
        mid(spills(y, x, b_, k) ? b_ + (k - b_) / 2 / lanes * lanes : b_),
        end(std::min(k, mid + kept_elems<T>)),
        spill(reinterpret_cast<T*>(static_cast<void*>(y + b_))),
        buf(buffer) {
    static_assert(2 * sizeof(U) == sizeof(T), "a 16-bit output of float exps");
  }

  template <class IO>
  bool has(const IO& io) const noexcept {
    return io.j < end;
  }
  template <class IO, class W>
  void keep(const IO& io, const W& e) const noexcept {
    if (io.j < mid) {
      at(io, b).store(strided<T>{spill, 0, 1}, e);
    } else if (io.j < end) {
      at(io, mid).store(strided<T>{buf, 0, 1}, e);
    }
  }
  template <class IO>
  auto load(const IO& io) const noexcept {
    return io.j < mid ? at(io, b).load(strided<T>{spill, 0, 1})
                      : at(io, mid).load(strided<T>{buf, 0, 1});
  }

 private:
  template <class IO>
  static IO at(IO io, index_t origin) noexcept {
    io.j -= origin;
    return io;
  }
  template <class U, class X>
  static bool spills(const U* y, const X* x, index_t b, index_t k) noexcept {
    return k - b > scratch_elems<T> && static_cast<const void*>(y) != static_cast<const void*>(x) &&
           reinterpret_cast<std::uintptr_t>(y + b) % alignof(T) == 0;
  }
};

/// Whether an output y of n x k streams (vectors V): large, not 16-bit, and every row made of
/// whole aligned vectors (or a single row), so that all its stores stream: where ordinary stores
/// of a row's partial first and last vectors share cache lines with the neighbouring rows'
/// streaming stores, each such line is fetched and evicted again (a third of the speed at K = 100).
template <class V, class Y>
bool streams(index_t n, index_t k, const strided<Y>& y) noexcept {
  const bool whole_vectors =
      n == 1 || (reinterpret_cast<std::uintptr_t>(y.p) % sizeof(V) == 0 &&
                 (static_cast<std::size_t>(y.ds) * sizeof(Y)) % sizeof(V) == 0);
  return !is_narrow_v<Y> && whole_vectors &&
         static_cast<std::size_t>(n) * static_cast<std::size_t>(k) * sizeof(Y) >= stream_min_bytes;
}

/// y = softmax(x): three passes (max; exp, sum and store; scale by one reciprocal). A large
/// output of rows up to scratch_bytes keeps the exps in a stack buffer and streams y once; a
/// 16-bit output keeps them in float (a stack buffer of kept_bytes, or kept_exps beyond) and is
/// written once, by the last pass.
template <class Arch = best_arch, class X, class Y>
void softmax(index_t n, index_t k, strided<const X> x, strided<Y> y, int threads = 1) noexcept {
  const bool stream = streams<vec_t<compute_t<X>, Arch>>(n, k, y);
  run_threads<Arch, compute_t<X>, tile_kind::exp>(
      n, k, threads, every_chunk([stream](const auto& g, const auto& xi, const auto& yi) {
        using G = std::decay_t<decltype(g)>;
        using T = scalar_of<typename G::state>;
        const auto m = g.reduce_max([=](const auto& io) { return io.load(xi); });
        const auto shift = row_shift(m);
        const auto exp_pass = [&](const auto& e_out) {
          return g.reduce_sum([=](const auto& io) {
            const auto e = exp_nonpos(io.load(xi) - io.splat(shift));
            io.store(e_out, e);
            return e;
          });
        };
        // A 16-bit output is rounded once, from float: the exps wait (kept_exps; those beyond it
        // are computed again by the last pass), or, in rows-in-lanes tiles and across groups,
        // are all computed again.
        constexpr bool narrow_out = !std::is_same<std::decay_t<decltype(yi)>, strided<T>>::value;
        if constexpr (G::rows_contiguous) {
          // A whole row whose exps fit the stack buffer: kept there, and y written once.
          constexpr index_t cap = narrow_out ? kept_elems<T> : scratch_elems<T>;
          alignas(64) T scratch[cap];
          if ((stream || narrow_out) && g.begin == 0 && g.k <= cap) {
            const strided<T> e{scratch, 0, 1};
            const auto inv = row_reciprocal(exp_pass(e));
            g.for_each_stream(yi, [=](const auto& io) { io.store(yi, io.load(e) * io.splat(inv)); });
            return;
          }
          if constexpr (narrow_out) {
            const kept_exps<T> kept(yi.p, xi.p, g.begin, g.k, G::L, scratch);
            // One sum over the row, as in the float path: the same bits.
            const auto inv = row_reciprocal(g.reduce_sum([=](const auto& io) {
              const auto e = exp_nonpos(io.load(xi) - io.splat(shift));
              kept.keep(io, e);
              return e;
            }));
            g.for_each([=](const auto& io) {
              const auto e =
                  kept.has(io) ? kept.load(io) : exp_nonpos(io.load(xi) - io.splat(shift));
              io.store(yi, e * io.splat(inv));
            });
            return;
          }
        }
        if constexpr (narrow_out) {
          const auto inv = row_reciprocal(g.reduce_sum(
              [=](const auto& io) { return exp_nonpos(io.load(xi) - io.splat(shift)); }));
          g.for_each([=](const auto& io) {
            io.store(yi, exp_nonpos(io.load(xi) - io.splat(shift)) * io.splat(inv));
          });
        } else {
          const auto inv = row_reciprocal(exp_pass(yi));
          g.for_each([=](const auto& io) { io.store(yi, io.load(yi) * io.splat(inv)); });
        }
      }),
      x, y);
}

/// y = log_softmax(x) = (x - max) - log(sum(exp(x - max))); the exp pass stores nothing.
template <class Arch = best_arch, class X, class Y>
void log_softmax(index_t n, index_t k, strided<const X> x, strided<Y> y, int threads = 1) noexcept {
  const bool stream = streams<vec_t<compute_t<X>, Arch>>(n, k, y);
  run_threads<Arch, compute_t<X>, tile_kind::exp>(
      n, k, threads, every_chunk([stream](const auto& g, const auto& xi, const auto& yi) {
        const auto m = g.reduce_max([=](const auto& io) { return io.load(xi); });
        const auto shift = row_shift(m);
        const auto s =
            g.reduce_sum([=](const auto& io) { return exp_nonpos(io.load(xi) - io.splat(shift)); });
        const auto log_sum = row_log_sum(s);
        const auto out = [=](const auto& io) {
          io.store(yi, (io.load(xi) - io.splat(shift)) - io.splat(log_sum));
        };
        if (stream) {
          g.for_each_stream(yi, out);
        } else {
          g.for_each(out);
        }
      }),
      x, y);
}

/// out[i] = logsumexp(x_i) = max + log(sum(exp(x - max))).
template <class Arch = best_arch, class X, class Y>
void logsumexp(index_t n, index_t k, strided<const X> x, per_dist<Y> out,
               int threads = 1) noexcept {
  run_threads<Arch, compute_t<X>, tile_kind::exp>(
      n, k, threads, every_chunk([](const auto& g, const auto& xi, const auto& oi) {
        const auto m = g.reduce_max([=](const auto& io) { return io.load(xi); });
        const auto shift = row_shift(m);
        const auto s =
            g.reduce_sum([=](const auto& io) { return exp_nonpos(io.load(xi) - io.splat(shift)); });
        g.store_out(oi, lse_of(m, s, [&] {
                      return g.reduce_sum([=](const auto& io) {
                        const auto v = io.load(xi);
                        using W = std::decay_t<decltype(v)>;
                        return select(is_nan(v), W(1), W(0));
                      });
                    }));
      }),
      x, out);
}

/// dx = y * (dy - <dy, y>): the vector-Jacobian product of softmax, given its output y.
template <class Arch = best_arch, class T>
void softmax_backward(index_t n, index_t k, strided<const T> y, strided<const T> dy, strided<T> dx,
                      int threads = 1) noexcept {
  run_threads<Arch, T, tile_kind::light>(
      n, k, threads,
      every_chunk([](const auto& g, const strided<const T>& yi, const strided<const T>& dyi,
                     const strided<T>& dxi) {
        const auto dot = g.reduce_sum([=](const auto& io) { return io.load(yi) * io.load(dyi); });
        g.for_each(
            [=](const auto& io) { io.store(dxi, io.load(yi) * (io.load(dyi) - io.splat(dot))); });
      }),
      y, dy, dx);
}

/// dx = dlogp - exp(logp) * sum(dlogp): the vector-Jacobian product of log_softmax, given its
/// output logp (<= 0; larger values are clamped where exp would overflow).
template <class Arch = best_arch, class T>
void log_softmax_backward(index_t n, index_t k, strided<const T> logp, strided<const T> dlogp,
                          strided<T> dx, int threads = 1) noexcept {
  run_threads<Arch, T, tile_kind::light>(
      n, k, threads,
      every_chunk([](const auto& g, const strided<const T>& li, const strided<const T>& dli,
                     const strided<T>& dxi) {
        const auto s = g.reduce_sum([=](const auto& io) { return io.load(dli); });
        g.for_each([=](const auto& io) {
          const auto lp = io.load(li);
          using W = std::decay_t<decltype(lp)>;
          // Beyond 88 (float) / 709 (double) exp overflows; the select keeps NaN.
          const W hi(sizeof(T) == 4 ? T(88) : T(709));
          const W l = select(lp > hi, hi, lp);
          // exp(logp) subnormal (or 0): its product with the sum would keep only the
          // subnormal's absolute accuracy, so it is formed as (e^l 2^e)(sum 2^-e), rounded once:
          // e = exponent(sum) + 1000 (float: + 100), at least 0, puts sum 2^-e (scaled exactly,
          // in two steps) in [2^-1000, 2^-999) and e^l 2^e below 2, normal wherever the product
          // is not below the smallest subnormal.
          const W tiny(sizeof(T) == 4 ? T(-87) : T(-708));
          const auto sub = l < tiny;
          const W sv = io.splat(s);
          W ps = exp_nonpos(l) * sv;
          if (any(sub)) {  // only those lanes: e^l 2^e overflows elsewhere
            const W emax(sizeof(T) == 4 ? T(126) : T(1022));
            const W lift(sizeof(T) == 4 ? T(100) : T(1000));
            // exponent_of is at most bias + 1 (inf, NaN): e <= 2 emax.
            const W e = max(exponent_of(sv) + lift, W(T(0)));
            const W e1 = min(e, emax);
            const W lo = select(sub, l, W(T(0)));
            const W ms = (sv * exp2i(-e1)) * exp2i(e1 - e);
            ps = select(sub, exp_scaled(lo, e) * ms, ps);
          }
          io.store(dxi, io.load(dli) - ps);
        });
      }),
      logp, dlogp, dx);
}

}  // namespace smax::detail
