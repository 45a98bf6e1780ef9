// exp on the softmax domain x <= 0: the one transcendental every kernel is bound by.
//
// xsimd 8.1's exp is accurate (about 1.5 ulp) but flushes results below ~1e-38 to zero and pays
// for range checks the softmax never needs. Here:
//   n = round(x / ln2) by the magic-number trick, r = x - n*ln2_hi - n*ln2_lo (Cody-Waite: ln2_hi
//   has enough trailing zero bits that n*ln2_hi is exact for every n reached), e^r = 1 + r*q(r)
//   with q fitted by tools/fit_exp.py, and the result scaled by 2^n: with AVX-512 by one vscalef
//   (rounded once, subnormal results included; 5-25% faster kernels than the steps below), else
//   by a power of two built in the exponent field, in two steps where the result is subnormal
//   (so it is rounded once, not flushed). Both give the same bits.
// Measured accuracy (tests/test_exp.cpp scans every float in [-104, 0]; doubles are sampled):
// see the README's accuracy table; the bound used by the tests is 2 ulp.
#pragma once

#include "smax/detail/simd.hpp"

#include <limits>

namespace smax::detail {

template <class T>
struct exp_constants;

template <>
struct exp_constants<float> {
  // Below lo the result rounds to +0 (exp(-104) < 2^-150); clamping there keeps n in range.
  static constexpr float lo = -104.0f;
  static constexpr float log2e = 0x1.715476p+0f;
  static constexpr float round_magic = 0x1.8p23f;
  static constexpr float ln2_hi = 0x1.62e400p-1f;  // 15 significant bits: n*ln2_hi exact
  static constexpr float ln2_lo = 0x1.7f7d1cp-20f;
  static constexpr float min_normal_n = -125.0f;  // 2^n * e^r stays normal for n >= -125
  // q(r) ~ (e^r - 1) / r on [-0.3475, 0.3475], degree 5 (tools/fit_exp.py): rel. error 1.1e-8.
  static constexpr int degree = 5;
  static constexpr float q[degree + 1] = {0x1p+0f,        0x1p-1f,        0x1.55547ap-3f,
                                          0x1.5554e8p-5f, 0x1.123f1ep-7f, 0x1.6d44b2p-10f};
};

template <>
struct exp_constants<double> {
  static constexpr double lo = -746.0;  // exp(-746) < 2^-1075
  static constexpr double log2e = 0x1.71547652b82fep+0;
  static constexpr double round_magic = 0x1.8p52;
  static constexpr double ln2_hi = 0x1.62e42fee00000p-1;  // fdlibm's split: 32 significant bits
  static constexpr double ln2_lo = 0x1.a39ef35793c76p-33;
  static constexpr double min_normal_n = -1021.0;
  // degree 10 (tools/fit_exp.py): rel. error 1.3e-17.
  static constexpr int degree = 10;
  static constexpr double q[degree + 1] = {0x1p+0,
                                           0x1.0000000000005p-1,
                                           0x1.5555555555557p-3,
                                           0x1.5555555551f8cp-5,
                                           0x1.1111111110085p-7,
                                           0x1.6c16c17f92f34p-10,
                                           0x1.a01a01ac16f76p-13,
                                           0x1.a019a56f9afc6p-16,
                                           0x1.71de019d031e7p-19,
                                           0x1.28a3c505b0b3cp-22,
                                           0x1.af4f1ddf981a8p-26};
};

namespace exp_impl {
/// e^x · 2^e for x <= 0: with Scaled, e is an integer-valued V >= 0 added exactly in the exponent
/// reconstruction; without, e = 0 (exp_nonpos, the hot path: no extra operation).
template <bool Scaled, class V>
SMAX_ALWAYS_INLINE V exp_times_pow2(V x, [[maybe_unused]] V e) noexcept {
  using T = scalar_of<V>;
  using C = exp_constants<T>;
  // Below lo - e ln2 even the scaled result rounds to +0; clamping there keeps n in range (and
  // gives -inf its exact 0 below).
  [[maybe_unused]] const V x0 = x;
  V lo = splat<V>(C::lo);
  if constexpr (Scaled) lo = detail::fma(e, splat<V>(T(-0.693147180559945309417)), lo);
  x = max_keep_nan(lo, x);
  const V magic = splat<V>(C::round_magic);
  const V n = detail::fma(x, splat<V>(C::log2e), magic) - magic;
  V r = detail::fma(n, splat<V>(-C::ln2_hi), x);
  r = detail::fma(n, splat<V>(-C::ln2_lo), r);
  V q = splat<V>(C::q[C::degree]);
  for (int i = C::degree - 1; i >= 0; --i) q = detail::fma(q, r, splat<V>(C::q[i]));
  const V p = detail::fma(q, r, splat<V>(T(1)));
  V scaled = n;
  if constexpr (Scaled) scaled = n + e;
#if XSIMD_WITH_AVX512F
  if constexpr (!is_scalar_v<V>) {
    if constexpr (std::is_base_of<xsimd::avx512f, typename V::arch_type>::value) {
      // p * 2^scaled rounded once, subnormal results included (vscalef): the bits of the two
      // steps below, in one instruction and no branch.
      V out;
      if constexpr (sizeof(T) == 4) {
        out = _mm512_scalef_ps(p, scaled);
      } else {
        out = _mm512_scalef_pd(p, scaled);
      }
      if constexpr (Scaled) {
        return select(x0 < lo, splat<V>(T(0)), out);
      } else {
        return out;
      }
    }
  }
#endif
  const V lowest = splat<V>(C::min_normal_n);
  // Scale by multiplying, not by adding n into p's exponent bits: a NaN p must stay NaN.
  if (!any(scaled < lowest)) return p * exp2i(scaled);
  // Subnormal results: scale exactly down to the smallest normal exponent, then round once.
  const V n1 = max(scaled, lowest);
  const V out = (p * exp2i(n1)) * exp2i(scaled - n1);
  if constexpr (Scaled) {
    return select(x0 < lo, splat<V>(T(0)), out);
  } else {
    return out;  // lo itself rounds to +0
  }
}
}  // namespace exp_impl

/// e^x · 2^e for x <= 0 and integer-valued e >= 0 with e^x · 2^e below 2^1023 (double) / 2^127
/// (float), vector or scalar: the exponent reconstruction adds e exactly, so a result that e^x
/// alone would leave subnormal keeps full relative precision (log_softmax_backward multiplies
/// such values by large sums). Accuracy: within 2 ulp of the exact result (1 subnormal where it is subnormal).
/// Special values: -inf gives +0, NaN gives NaN.
template <class V>
SMAX_ALWAYS_INLINE V exp_scaled(V x, V e) noexcept {
  return exp_impl::exp_times_pow2<true>(x, e);
}

/// e^x for x <= 0, vector or scalar.
/// Accuracy: within 2 ulp of the exact result for every x in the domain, subnormal results
/// included (rounded, not flushed); exp(0) == 1 exactly.
/// Special values: -inf and x < lo give +0; NaN gives NaN. For 0 < x < 88 (float) / 709
/// (double) the result is still correct; larger x is outside the domain.
template <class V>
SMAX_ALWAYS_INLINE V exp_nonpos(V x) noexcept {
  return exp_impl::exp_times_pow2<false>(x, x);
}

}  // namespace smax::detail
