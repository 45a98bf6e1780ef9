// The one place that knows xsimd. Kernels are written once over a "vector" type V that is either
// an xsimd::batch<T, Arch> or the scalar T itself (scalar_arch: builds without SIMD, and the
// remainder of every kernel), and reach the hardware only through the helpers below.
//
// xsimd 8.1 (Debian 12) differs from the upstream documentation: there is no reduce_add (its
// name is hadd) and no reduce_max. Those differences live here and nowhere else.
#pragma once

#include <xsimd/xsimd.hpp>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

namespace smax::detail {

using index_t = std::ptrdiff_t;  // Eigen::Index

// The few vector routines that run once per vector in every kernel's inner loop (exp, the tile
// transposes): g++ -O2 leaves them out of line, and a call per vector spills every live vector.
// SMAX_FLATTEN inlines every call inside a function: the loops over groups of few classes (rows
// in lanes, distributions across memory), whose per-class kernel bodies would otherwise be calls.
#if defined(__GNUC__) || defined(__clang__)
#define SMAX_ALWAYS_INLINE __attribute__((always_inline)) inline
#define SMAX_FLATTEN __attribute__((flatten))
#define SMAX_NOINLINE __attribute__((noinline))
#elif defined(_MSC_VER)
#define SMAX_ALWAYS_INLINE inline
#define SMAX_FLATTEN
#define SMAX_NOINLINE __declspec(noinline)
#else
#define SMAX_ALWAYS_INLINE inline
#define SMAX_FLATTEN
#define SMAX_NOINLINE
#endif

/// Pseudo-architecture whose "vector" is one scalar: used when xsimd finds no SIMD instruction
/// set at compile time, and for the remainders that do not fill a vector.
struct scalar_arch {
  static constexpr const char* name() noexcept { return "scalar"; }
};

/// The widest instruction set enabled by the compiler flags (xsimd::default_arch), or
/// scalar_arch when there is none.
using best_arch =
    std::conditional_t<xsimd::default_arch::supported(), xsimd::default_arch, scalar_arch>;

template <class T, class Arch>
struct vec_of {
  using type = xsimd::batch<T, Arch>;
};
template <class T>
struct vec_of<T, scalar_arch> {
  using type = T;
};
/// The vector of T on Arch: xsimd::batch<T, Arch>, or T for scalar_arch.
template <class T, class Arch>
using vec_t = typename vec_of<T, Arch>::type;

template <class V>
struct vec_traits {
  static_assert(std::is_floating_point<V>::value, "smax vectors hold float or double");
  using value_type = V;
  using int_type = std::conditional_t<sizeof(V) == 4, std::int32_t, std::int64_t>;
  static constexpr index_t size = 1;
};
template <class T, class A>
struct vec_traits<xsimd::batch<T, A>> {
  using value_type = T;
  using int_type = std::conditional_t<sizeof(T) == 4, std::int32_t, std::int64_t>;
  static constexpr index_t size = static_cast<index_t>(xsimd::batch<T, A>::size);
};

template <class V>
using scalar_of = typename vec_traits<V>::value_type;
template <class V>
inline constexpr index_t lanes = vec_traits<V>::size;
template <class V>
inline constexpr bool is_scalar_v = std::is_floating_point<V>::value;

// ---- loads, stores, broadcast ------------------------------------------------------------------

template <class V>
inline V load(const scalar_of<V>* p) noexcept {
  if constexpr (is_scalar_v<V>) {
    return *p;
  } else {
    return V::load_unaligned(p);
  }
}

template <class V>
inline void store(scalar_of<V>* p, const V& v) noexcept {
  if constexpr (is_scalar_v<V>) {
    *p = v;
  } else {
    v.store_unaligned(p);
  }
}

template <class V>
inline V splat(scalar_of<V> s) noexcept {
  return V(s);
}

#if XSIMD_WITH_AVX
/// The AVX mask selecting the first rem lanes: a window into [-1 x 8, 0 x 8].
template <class I>
inline __m256i avx_mask(index_t rem) noexcept {
  static constexpr I ones_then_zeros[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
  constexpr index_t n = 32 / sizeof(I);
  return _mm256_loadu_si256(
      reinterpret_cast<const __m256i*>(ones_then_zeros + 8 - (rem < n ? rem : n)));
}
#endif

/// The first rem (0 < rem < lanes) elements at p in the low lanes, the others 0; reads nothing
/// at or beyond p + rem. AVX and AVX-512 have masked loads; elsewhere a zero-padded buffer.
template <class V>
inline V load_partial(const scalar_of<V>* p, index_t rem) noexcept {
  using T = scalar_of<V>;
  if constexpr (!is_scalar_v<V>) {
    using A [[maybe_unused]] = typename V::arch_type;
#if XSIMD_WITH_AVX512F
    if constexpr (std::is_base_of<xsimd::avx512f, A>::value) {
      const auto m = static_cast<unsigned>((1u << rem) - 1u);
      if constexpr (sizeof(T) == 4) {
        return _mm512_maskz_loadu_ps(static_cast<__mmask16>(m), p);
      } else {
        return _mm512_maskz_loadu_pd(static_cast<__mmask8>(m), p);
      }
    }
#endif
#if XSIMD_WITH_AVX
    if constexpr (std::is_base_of<xsimd::avx, A>::value) {
      if constexpr (sizeof(T) == 4) {
        return _mm256_maskload_ps(p, avx_mask<std::int32_t>(rem));
      } else {
        return _mm256_maskload_pd(p, avx_mask<std::int64_t>(rem));
      }
    }
#endif
    alignas(64) T buf[lanes<V>] = {};
    for (index_t l = 0; l < rem; ++l) buf[l] = p[l];
    return V::load_aligned(buf);
  } else {
    (void)rem;
    return *p;
  }
}

#if XSIMD_WITH_AVX
/// The floats (doubles) of v that bits 4, 2 and 1 (2 and 1) of rem count, at p, in plain
/// stores of 4, 2 and 1 floats (2 and 1 doubles).
SMAX_ALWAYS_INLINE void store_pieces(float* p, __m256 v, index_t rem) noexcept {
  __m128 part = _mm256_castps256_ps128(v);
  if (rem & 4) {
    _mm_storeu_ps(p, part);
    part = _mm256_extractf128_ps(v, 1);
    p += 4;
  }
  if (rem & 2) {
    _mm_storel_pi(reinterpret_cast<__m64*>(p), part);
    part = _mm_movehl_ps(part, part);
    p += 2;
  }
  if (rem & 1) _mm_store_ss(p, part);
}
SMAX_ALWAYS_INLINE void store_pieces(double* p, __m256d v, index_t rem) noexcept {
  __m128d part = _mm256_castpd256_pd128(v);
  if (rem & 2) {
    _mm_storeu_pd(p, part);
    part = _mm256_extractf128_pd(v, 1);
    p += 2;
  }
  if (rem & 1) _mm_store_sd(p, part);
}
#endif

/// Stores the first rem (0 < rem < lanes) lanes of v at p; writes nothing else. Plain: no masked
/// store. A masked store's whole vector counts for the loads after it: on Zen 4 a load that
/// overlaps its span waits for it to retire, even where the mask leaves the shared bytes out
/// (interleaved vectors and partial across vectors, whose next load starts inside the span, took
/// 2-2.5x as long). Plain stores of halving sizes write exactly the rem lanes.
template <bool Plain = false, class V>
inline void store_partial(scalar_of<V>* p, const V& v, index_t rem) noexcept {
  using T = scalar_of<V>;
  if constexpr (!is_scalar_v<V>) {
    using A [[maybe_unused]] = typename V::arch_type;
#if XSIMD_WITH_AVX512F
    if constexpr (std::is_base_of<xsimd::avx512f, A>::value) {
      if constexpr (Plain) {
        constexpr index_t half = lanes<V> / 2;
        if constexpr (sizeof(T) == 4) {
          __m256 h = _mm512_castps512_ps256(v);
          if (rem & half) {
            _mm256_storeu_ps(p, h);
            h = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
            p += half;
          }
          store_pieces(p, h, rem);  // its bits below half
        } else {
          __m256d h = _mm512_castpd512_pd256(v);
          if (rem & half) {
            _mm256_storeu_pd(p, h);
            h = _mm512_extractf64x4_pd(v, 1);
            p += half;
          }
          store_pieces(p, h, rem);
        }
      } else {
        const auto m = static_cast<unsigned>((1u << rem) - 1u);
        if constexpr (sizeof(T) == 4) {
          _mm512_mask_storeu_ps(p, static_cast<__mmask16>(m), v);
        } else {
          _mm512_mask_storeu_pd(p, static_cast<__mmask8>(m), v);
        }
      }
      return;
    }
#endif
#if XSIMD_WITH_AVX
    // Not vmaskmovps: AMD's masked stores are microcoded (a few per row cost as much as the row
    // on Zen 3).
    if constexpr (std::is_base_of<xsimd::avx, A>::value) {
      store_pieces(p, v, rem);
      return;
    }
#endif
    alignas(64) T buf[lanes<V>];
    v.store_aligned(buf);
    for (index_t l = 0; l < rem; ++l) p[l] = buf[l];
  } else {
    (void)rem;
    *p = v;
  }
}

// ---- storage types: float and double, and 16-bit floats computed in float --------------------------

/// The 16-bit formats an element type may have (set by specializing storage_format; the Eigen
/// bridge does it for Eigen::bfloat16 and Eigen::half).
enum class narrow { none, bf16, f16 };
template <class U>
struct storage_format {
  static constexpr narrow value = narrow::none;
};
template <class U>
struct storage_format<const U> : storage_format<U> {};
template <class U>
inline constexpr bool is_narrow_v = storage_format<U>::value != narrow::none;

/// The type arithmetic happens in for elements of type U: U itself, or float for 16-bit floats.
template <class U>
using compute_t =
    std::conditional_t<is_narrow_v<U>, float, std::remove_const_t<U>>;

template <class T, class U>
inline T widen(const U& u) noexcept {
  return static_cast<T>(u);
}
template <class U, class T>
inline U narrow_to(const T& v) noexcept {
  return static_cast<U>(v);
}

namespace narrow_simd {
// Vector conversions between float and 16-bit floats (8.1 xsimd has none). bf16 is the top half
// of a float: widening is a 16-bit shift; narrowing rounds to nearest even and keeps NaN quiet,
// in one vcvtneps2bf16 where AVX512-BF16 is enabled (it flushes subnormals to zero, so lanes that
// hold one take the integer rounding). half uses F16C where the compiler enables it. The 16-bit
// lanes travel as one integer register: all of them, or the first rem (0 < rem < lanes): a
// masked load with AVX512-BW, else through a small buffer; a partial store is plain stores of
// halving sizes (no masked store: see store_partial). Each returns false where it has no vector
// path.

/// The first rem 16-bit elements at p in the low lanes of H, the others 0.
template <class H, class U>
SMAX_ALWAYS_INLINE H fetch_buffered(const U* p, index_t rem) noexcept {
  alignas(32) std::uint16_t b[sizeof(H) / 2] = {};
  for (index_t l = 0; l < rem; ++l) std::memcpy(b + l, p + l, 2);
  H h;
  std::memcpy(&h, b, sizeof(H));
  return h;
}

#if XSIMD_WITH_SSE2
/// The first rem (< 8) 16-bit lanes of part at p: plain stores of 4, 2 and 1 lanes.
SMAX_ALWAYS_INLINE void put_pieces(void* p, __m128i part, index_t rem) noexcept {
  auto* q = static_cast<unsigned char*>(p);
  if (rem & 4) {
    _mm_storel_epi64(reinterpret_cast<__m128i*>(q), part);
    part = _mm_srli_si128(part, 8);
    q += 8;
  }
  if (rem & 2) {
    const int w = _mm_cvtsi128_si32(part);
    std::memcpy(q, &w, 4);
    part = _mm_srli_si128(part, 4);
    q += 4;
  }
  if (rem & 1) {
    const auto w = static_cast<std::uint16_t>(_mm_cvtsi128_si32(part));
    std::memcpy(q, &w, 2);
  }
}
#endif

#if XSIMD_WITH_AVX512F
SMAX_ALWAYS_INLINE __m256i fetch16(const void* p, index_t rem) noexcept {
  if (rem == 16) return _mm256_loadu_si256(static_cast<const __m256i*>(p));
#if defined(__AVX512BW__) && defined(__AVX512VL__)
  return _mm256_maskz_loadu_epi16(static_cast<__mmask16>((1u << rem) - 1u), p);
#else
  return fetch_buffered<__m256i>(static_cast<const std::uint16_t*>(p), rem);
#endif
}
SMAX_ALWAYS_INLINE void put16(void* p, __m256i h, index_t rem) noexcept {
  if (rem == 16) return _mm256_storeu_si256(static_cast<__m256i*>(p), h);
  __m128i part = _mm256_castsi256_si128(h);
  if (rem & 8) {
    _mm_storeu_si128(static_cast<__m128i*>(p), part);
    part = _mm256_extracti128_si256(h, 1);
    p = static_cast<unsigned char*>(p) + 16;
  }
  put_pieces(p, part, rem & 7);
}
/// bf16 bits of 16 floats, rounded to nearest even with integer operations; NaN stays quiet.
SMAX_ALWAYS_INLINE __m256i bf16_bits_int(__m512 v) noexcept {
  const __m512i u = _mm512_castps_si512(v);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  __m512i r = _mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)), lsb);
  const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
  r = _mm512_mask_mov_epi32(r, nan, _mm512_or_si512(u, _mm512_set1_epi32(0x400000)));
  return _mm512_cvtepi32_epi16(_mm512_srli_epi32(r, 16));
}
#endif
#if XSIMD_WITH_AVX
SMAX_ALWAYS_INLINE __m128i fetch8(const void* p, index_t rem) noexcept {
  if (rem == 8) return _mm_loadu_si128(static_cast<const __m128i*>(p));
#if defined(__AVX512BW__) && defined(__AVX512VL__)
  return _mm_maskz_loadu_epi16(static_cast<__mmask8>((1u << rem) - 1u), p);
#else
  return fetch_buffered<__m128i>(static_cast<const std::uint16_t*>(p), rem);
#endif
}
SMAX_ALWAYS_INLINE void put8(void* p, __m128i h, index_t rem) noexcept {
  if (rem == 8) return _mm_storeu_si128(static_cast<__m128i*>(p), h);
  put_pieces(p, h, rem);
}
#endif
#if XSIMD_WITH_SSE2
SMAX_ALWAYS_INLINE __m128i fetch4(const void* p, index_t rem) noexcept {
  if (rem == 4) return _mm_loadl_epi64(static_cast<const __m128i*>(p));
  return fetch_buffered<__m128i>(static_cast<const std::uint16_t*>(p), rem);
}
SMAX_ALWAYS_INLINE void put4(void* p, __m128i h, index_t rem) noexcept {
  if (rem == 4) return _mm_storel_epi64(static_cast<__m128i*>(p), h);
  put_pieces(p, h, rem);
}
#endif

/// out = the rem (0 < rem <= lanes) elements at p widened, the other lanes 0.
template <class V, class U>
SMAX_ALWAYS_INLINE bool load(const U* p, V& out, index_t rem = lanes<V>) noexcept {
  using A = typename V::arch_type;
  constexpr narrow f = storage_format<U>::value;
  (void)p;
  (void)out;
  (void)rem;
  if constexpr (f == narrow::bf16) {
#if XSIMD_WITH_AVX512F
    if constexpr (std::is_base_of<xsimd::avx512f, A>::value) {
      out = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(fetch16(p, rem)), 16));
      return true;
    }
#endif
#if XSIMD_WITH_AVX2
    if constexpr (std::is_base_of<xsimd::avx2, A>::value) {
      out = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(fetch8(p, rem)), 16));
      return true;
    }
#endif
#if XSIMD_WITH_SSE2
    if constexpr (std::is_base_of<xsimd::sse2, A>::value) {
      out = _mm_castsi128_ps(_mm_unpacklo_epi16(_mm_setzero_si128(), fetch4(p, rem)));
      return true;
    }
#endif
  } else if constexpr (f == narrow::f16) {
#if defined(__F16C__)
#if XSIMD_WITH_AVX512F
    if constexpr (std::is_base_of<xsimd::avx512f, A>::value) {
      out = _mm512_cvtph_ps(fetch16(p, rem));
      return true;
    }
#endif
#if XSIMD_WITH_AVX
    if constexpr (std::is_base_of<xsimd::avx, A>::value) {
      out = _mm256_cvtph_ps(fetch8(p, rem));
      return true;
    }
#endif
    if constexpr (std::is_base_of<xsimd::sse2, A>::value) {
      out = _mm_cvtph_ps(fetch4(p, rem));
      return true;
    }
#endif
  }
  return false;
}

/// The first rem (0 < rem <= lanes) lanes of v narrowed, at p; nothing else is written.
template <class V, class U>
SMAX_ALWAYS_INLINE bool store(U* p, const V& v, index_t rem = lanes<V>) noexcept {
  using A = typename V::arch_type;
  constexpr narrow f = storage_format<U>::value;
  (void)p;
  (void)v;
  (void)rem;
  if constexpr (f == narrow::bf16) {
#if XSIMD_WITH_AVX512F
    if constexpr (std::is_base_of<xsimd::avx512f, A>::value) {
#if defined(__AVX512BF16__) && defined(__AVX512BW__) && defined(__AVX512VL__) && \
    defined(__AVX512DQ__)
      __m256i h = (__m256i)_mm512_cvtneps_pbh(v);
      const __mmask16 sub = _mm512_fpclass_ps_mask(v, 0x20);  // subnormal
      if (sub) h = _mm256_mask_mov_epi16(h, sub, bf16_bits_int(v));
#else
      const __m256i h = bf16_bits_int(v);
#endif
      put16(p, h, rem);
      return true;
    }
#endif
#if XSIMD_WITH_AVX2
    if constexpr (std::is_base_of<xsimd::avx2, A>::value) {
      const __m256i u = _mm256_castps_si256(v);
      const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
      __m256i r = _mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7fff)), lsb);
      const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q));
      r = _mm256_blendv_epi8(r, _mm256_or_si256(u, _mm256_set1_epi32(0x400000)), nan);
      r = _mm256_srli_epi32(r, 16);
      const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0x08);
      put8(p, _mm256_castsi256_si128(packed), rem);
      return true;
    }
#endif
#if XSIMD_WITH_SSE2
    if constexpr (std::is_base_of<xsimd::sse2, A>::value && !std::is_base_of<xsimd::avx, A>::value) {
      const __m128i u = _mm_castps_si128(v);
      const __m128i lsb = _mm_and_si128(_mm_srli_epi32(u, 16), _mm_set1_epi32(1));
      __m128i r = _mm_add_epi32(_mm_add_epi32(u, _mm_set1_epi32(0x7fff)), lsb);
      const __m128i nan = _mm_castps_si128(_mm_cmpunord_ps(v, v));
      r = _mm_or_si128(_mm_andnot_si128(nan, r),
                       _mm_and_si128(nan, _mm_or_si128(u, _mm_set1_epi32(0x400000))));
      // Sign-extend the 16 result bits so that the signed saturating pack keeps them as they are.
      r = _mm_srai_epi32(r, 16);
      put4(p, _mm_packs_epi32(r, r), rem);
      return true;
    }
#endif
  } else if constexpr (f == narrow::f16) {
#if defined(__F16C__)
    constexpr int rounding = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
#if XSIMD_WITH_AVX512F
    if constexpr (std::is_base_of<xsimd::avx512f, A>::value) {
      put16(p, _mm512_cvtps_ph(v, rounding), rem);
      return true;
    }
#endif
#if XSIMD_WITH_AVX
    if constexpr (std::is_base_of<xsimd::avx, A>::value) {
      put8(p, _mm256_cvtps_ph(v, rounding), rem);
      return true;
    }
#endif
    if constexpr (std::is_base_of<xsimd::sse2, A>::value) {
      put4(p, _mm_cvtps_ph(v, rounding), rem);
      return true;
    }
#endif
  }
  return false;
}
}  // namespace narrow_simd

/// A vector of W (compute type) from elements of type U (the same type, or a 16-bit float).
template <class W, class U>
inline W load_as(const U* p) noexcept {
  using T = scalar_of<W>;
  if constexpr (std::is_same<std::remove_const_t<U>, T>::value) {
    return detail::load<W>(p);
  } else if constexpr (is_scalar_v<W>) {
    return widen<T>(*p);
  } else {
    W out;
    if (narrow_simd::load(p, out)) return out;
    alignas(64) T buf[lanes<W>];
    for (index_t l = 0; l < lanes<W>; ++l) buf[l] = widen<T>(p[l]);
    return W::load_aligned(buf);
  }
}

template <class W, class U>
inline void store_as(U* p, const W& v) noexcept {
  using T = scalar_of<W>;
  if constexpr (std::is_same<U, T>::value) {
    detail::store(p, v);
  } else if constexpr (is_scalar_v<W>) {
    *p = narrow_to<U>(v);
  } else {
    if (narrow_simd::store(p, v)) return;
    alignas(64) T buf[lanes<W>];
    v.store_aligned(buf);
    for (index_t l = 0; l < lanes<W>; ++l) p[l] = narrow_to<U>(buf[l]);
  }
}

template <class W, class U>
inline W load_partial_as(const U* p, index_t rem) noexcept {
  using T = scalar_of<W>;
  if constexpr (std::is_same<std::remove_const_t<U>, T>::value) {
    return detail::load_partial<W>(p, rem);
  } else {
    if constexpr (!is_scalar_v<W>) {
      W out;
      if (narrow_simd::load(p, out, rem)) return out;
    }
    alignas(64) T buf[lanes<W>] = {};
    for (index_t l = 0; l < rem; ++l) buf[l] = widen<T>(p[l]);
    return W::load_aligned(buf);
  }
}

template <bool Plain = false, class W, class U>
inline void store_partial_as(U* p, const W& v, index_t rem) noexcept {
  using T = scalar_of<W>;
  if constexpr (std::is_same<U, T>::value) {
    detail::store_partial<Plain>(p, v, rem);
  } else {
    // Plain either way: the narrow partial store is plain stores.
    if constexpr (!is_scalar_v<W>) {
      if (narrow_simd::store(p, v, rem)) return;
    }
    alignas(64) T buf[lanes<W>];
    v.store_aligned(buf);
    for (index_t l = 0; l < rem; ++l) p[l] = narrow_to<U>(buf[l]);
  }
}

// ---- streaming (non-temporal) stores ---------------------------------------------------------------

/// Stores a whole vector at p, aligned to the vector's size, bypassing the caches (no
/// write-allocate read of the destination); a plain aligned store where the ISA has no such
/// store. Callers end with stream_fence().
template <class V>
inline void store_stream(scalar_of<V>* p, const V& v) noexcept {
  if constexpr (is_scalar_v<V>) {
    *p = v;
  } else {
    using T = scalar_of<V>;
    using A [[maybe_unused]] = typename V::arch_type;
#if XSIMD_WITH_AVX512F
    if constexpr (std::is_base_of<xsimd::avx512f, A>::value) {
      if constexpr (sizeof(T) == 4) {
        _mm512_stream_ps(p, v);
      } else {
        _mm512_stream_pd(p, v);
      }
      return;
    }
#endif
#if XSIMD_WITH_AVX
    if constexpr (std::is_base_of<xsimd::avx, A>::value) {
      if constexpr (sizeof(T) == 4) {
        _mm256_stream_ps(p, v);
      } else {
        _mm256_stream_pd(p, v);
      }
      return;
    }
#endif
#if XSIMD_WITH_SSE2
    if constexpr (std::is_base_of<xsimd::sse2, A>::value) {
      if constexpr (sizeof(T) == 4) {
        _mm_stream_ps(p, v);
      } else {
        _mm_stream_pd(p, v);
      }
      return;
    }
#endif
    v.store_aligned(p);
  }
}

/// Orders this thread's streaming stores before everything it does next.
inline void stream_fence() noexcept {
#if XSIMD_WITH_SSE2
  _mm_sfence();
#endif
}

// ---- square transposes (rows-in-lanes tiles)
// -------------------------------------------------------

/// Transposes the lanes<V> x lanes<V> matrix whose rows are r[0..L): afterwards r[c] holds what
/// was lane c of every row. SSE and AVX shuffle in registers (the classic unpack/shuffle/
/// permute2f128 networks); other instruction sets go through a stack buffer.
template <class V>
SMAX_ALWAYS_INLINE void transpose_square(V* r) noexcept {
  if constexpr (!is_scalar_v<V>) {
    using T = scalar_of<V>;
    using A [[maybe_unused]] = typename V::arch_type;
    constexpr index_t L = lanes<V>;
#if XSIMD_WITH_AVX512F
    if constexpr (std::is_base_of<xsimd::avx512f, A>::value) {
      if constexpr (sizeof(T) == 4) {
        // Pairs of rows interleaved, then groups of four: each 128-bit block of u[4i + c] holds
        // column 4q + c (q the block) of rows 4i .. 4i + 3. Then the blocks are gathered across
        // registers in two rounds of shuffle_f32x4.
        __m512 u[16];
        for (int i = 0; i < 16; i += 4) {
          const __m512 t0 = _mm512_unpacklo_ps(r[i], r[i + 1]);
          const __m512 t1 = _mm512_unpackhi_ps(r[i], r[i + 1]);
          const __m512 t2 = _mm512_unpacklo_ps(r[i + 2], r[i + 3]);
          const __m512 t3 = _mm512_unpackhi_ps(r[i + 2], r[i + 3]);
          u[i] = _mm512_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
          u[i + 1] = _mm512_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
          u[i + 2] = _mm512_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
          u[i + 3] = _mm512_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
        }
        for (int c = 0; c < 4; ++c) {
          const __m512 s0 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0x44);
          const __m512 s1 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0xEE);
          const __m512 s2 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0x44);
          const __m512 s3 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0xEE);
          r[c] = _mm512_shuffle_f32x4(s0, s2, 0x88);
          r[4 + c] = _mm512_shuffle_f32x4(s0, s2, 0xDD);
          r[8 + c] = _mm512_shuffle_f32x4(s1, s3, 0x88);
          r[12 + c] = _mm512_shuffle_f32x4(s1, s3, 0xDD);
        }
      } else {
        // Pairs of rows interleaved: each 128-bit block of t[2i + c] holds column 2q + c of
        // rows 2i, 2i + 1; then the blocks are gathered as for float.
        __m512d t[8];
        for (int i = 0; i < 8; i += 2) {
          t[i] = _mm512_unpacklo_pd(r[i], r[i + 1]);
          t[i + 1] = _mm512_unpackhi_pd(r[i], r[i + 1]);
        }
        for (int c = 0; c < 2; ++c) {
          const __m512d s0 = _mm512_shuffle_f64x2(t[c], t[2 + c], 0x44);
          const __m512d s1 = _mm512_shuffle_f64x2(t[c], t[2 + c], 0xEE);
          const __m512d s2 = _mm512_shuffle_f64x2(t[4 + c], t[6 + c], 0x44);
          const __m512d s3 = _mm512_shuffle_f64x2(t[4 + c], t[6 + c], 0xEE);
          r[c] = _mm512_shuffle_f64x2(s0, s2, 0x88);
          r[2 + c] = _mm512_shuffle_f64x2(s0, s2, 0xDD);
          r[4 + c] = _mm512_shuffle_f64x2(s1, s3, 0x88);
          r[6 + c] = _mm512_shuffle_f64x2(s1, s3, 0xDD);
        }
      }
      return;
    }
#endif
#if XSIMD_WITH_AVX
    if constexpr (std::is_base_of<xsimd::avx, A>::value && sizeof(T) == 4) {
      // Written out (not looped) so that the 8 rows stay in registers.
      const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
      const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
      const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
      const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
      const __m256 u0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
      const __m256 u1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
      const __m256 u2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
      const __m256 u3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
      const __m256 u4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0));
      const __m256 u5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
      const __m256 u6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0));
      const __m256 u7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
      r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
      r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
      r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
      r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
      r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
      r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
      r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
      r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
      return;
    } else if constexpr (std::is_base_of<xsimd::avx, A>::value && sizeof(T) == 8) {
      const __m256d t0 = _mm256_unpacklo_pd(r[0], r[1]), t1 = _mm256_unpackhi_pd(r[0], r[1]);
      const __m256d t2 = _mm256_unpacklo_pd(r[2], r[3]), t3 = _mm256_unpackhi_pd(r[2], r[3]);
      r[0] = _mm256_permute2f128_pd(t0, t2, 0x20);
      r[1] = _mm256_permute2f128_pd(t1, t3, 0x20);
      r[2] = _mm256_permute2f128_pd(t0, t2, 0x31);
      r[3] = _mm256_permute2f128_pd(t1, t3, 0x31);
      return;
    }
#endif
#if XSIMD_WITH_SSE2
    if constexpr (std::is_base_of<xsimd::sse2, A>::value && sizeof(T) == 4) {
      __m128 a = r[0], b = r[1], c = r[2], d = r[3];
      _MM_TRANSPOSE4_PS(a, b, c, d);
      r[0] = a;
      r[1] = b;
      r[2] = c;
      r[3] = d;
      return;
    } else if constexpr (std::is_base_of<xsimd::sse2, A>::value && sizeof(T) == 8) {
      const __m128d a = r[0], b = r[1];
      r[0] = _mm_unpacklo_pd(a, b);
      r[1] = _mm_unpackhi_pd(a, b);
      return;
    }
#endif
    alignas(64) T buf[L * L];
    for (index_t i = 0; i < L; ++i) r[i].store_aligned(buf + i * L);
    for (index_t c = 0; c < L; ++c) {
      alignas(64) T col[L];
      for (index_t i = 0; i < L; ++i) col[i] = buf[i * L + c];
      r[c] = V::load_aligned(col);
    }
  } else {
    (void)r;
  }
}

// ---- two-vector permutes (dense rows-in-lanes tiles)
// ---------------------------------------------------------

/// Whether V can permute the lanes of two vectors by indices known only at run time (permute2):
/// AVX-512 (float and double) and AVX2 (float).
template <class V>
constexpr bool has_permute2() noexcept {
  if constexpr (is_scalar_v<V>) {
    return false;
  } else {
    using A [[maybe_unused]] = typename V::arch_type;
#if XSIMD_WITH_AVX512F
    if constexpr (std::is_base_of<xsimd::avx512f, A>::value) return true;
#endif
#if XSIMD_WITH_AVX2
    if constexpr (std::is_base_of<xsimd::avx2, A>::value) return sizeof(scalar_of<V>) == 4;
#endif
    return false;
  }
}

/// The lane indices permute2 takes: integers of V's lane width.
template <class V>
using lane_index_t = xsimd::batch<typename vec_traits<V>::int_type, typename V::arch_type>;

/// Lane t of the result is lane (idx[t] mod 2L) of the 2L lanes of a followed by b (only the
/// low bits of an index are read). One instruction on AVX-512; on AVX2 one permute of each
/// vector and a blend on bit 3 of the index.
template <class V>
SMAX_ALWAYS_INLINE V permute2(const V& a, const V& b, const lane_index_t<V>& idx) noexcept {
  static_assert(has_permute2<V>(), "permute2 needs AVX-512, or AVX2 for float");
  using A [[maybe_unused]] = typename V::arch_type;
#if XSIMD_WITH_AVX512F
  if constexpr (std::is_base_of<xsimd::avx512f, A>::value) {
    if constexpr (sizeof(scalar_of<V>) == 4) {
      return _mm512_permutex2var_ps(a, idx, b);
    } else {
      return _mm512_permutex2var_pd(a, idx, b);
    }
  }
#endif
#if XSIMD_WITH_AVX2
  if constexpr (std::is_base_of<xsimd::avx2, A>::value) {
    const __m256 lo = _mm256_permutevar8x32_ps(a, idx);
    const __m256 hi = _mm256_permutevar8x32_ps(b, idx);
    return _mm256_blendv_ps(lo, hi, _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28)));
  }
#endif
}

/// Lane l of the result is p[idx[l]]: one gather instruction on AVX2 and AVX-512, lane by lane
/// elsewhere. Every index must address a readable element.
template <class V>
SMAX_ALWAYS_INLINE V gather_lanes(const scalar_of<V>* p, const lane_index_t<V>& idx) noexcept {
  using T = scalar_of<V>;
  using A [[maybe_unused]] = typename V::arch_type;
#if XSIMD_WITH_AVX512F
  if constexpr (std::is_base_of<xsimd::avx512f, A>::value) {
    if constexpr (sizeof(T) == 4) {
      return _mm512_i32gather_ps(idx, p, 4);
    } else {
      return _mm512_i64gather_pd(idx, p, 8);
    }
  }
#endif
#if XSIMD_WITH_AVX2
  if constexpr (std::is_base_of<xsimd::avx2, A>::value) {
    if constexpr (sizeof(T) == 4) {
      return _mm256_i32gather_ps(p, idx, 4);
    } else {
      return _mm256_i64gather_pd(p, idx, 8);
    }
  }
#endif
  using I = typename vec_traits<V>::int_type;
  alignas(64) I ix[lanes<V>];
  alignas(64) T buf[lanes<V>];
  idx.store_aligned(ix);
  for (index_t l = 0; l < lanes<V>; ++l) buf[l] = p[ix[l]];
  return V::load_aligned(buf);
}

/// A vector of floats as two vectors of doubles (its low and high halves), exactly.
template <class V>
SMAX_ALWAYS_INLINE auto widen_halves(const V& v) noexcept {
  using A [[maybe_unused]] = typename V::arch_type;
  using D = xsimd::batch<double, A>;
  static_assert(sizeof(scalar_of<V>) == 4 && 2 * D::size == V::size, "floats to two doubles");
#if XSIMD_WITH_AVX512F
  if constexpr (std::is_base_of<xsimd::avx512f, A>::value) {
    const __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
    return std::pair<D, D>(_mm512_cvtps_pd(_mm512_castps512_ps256(v)), _mm512_cvtps_pd(hi));
  }
#endif
#if XSIMD_WITH_AVX
  if constexpr (std::is_base_of<xsimd::avx, A>::value) {
    return std::pair<D, D>(_mm256_cvtps_pd(_mm256_castps256_ps128(v)),
                           _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
  }
#endif
#if XSIMD_WITH_SSE2
  if constexpr (std::is_base_of<xsimd::sse2, A>::value) {
    return std::pair<D, D>(_mm_cvtps_pd(v), _mm_cvtps_pd(_mm_movehl_ps(v, v)));
  }
#endif
  alignas(64) float f[V::size];
  alignas(64) double d[V::size];
  v.store_aligned(f);
  for (std::size_t l = 0; l < V::size; ++l) d[l] = static_cast<double>(f[l]);
  return std::pair<D, D>(D::load_aligned(d), D::load_aligned(d + D::size));
}

// ---- arithmetic ---------------------------------------------------------------------------------

/// a * b + c, rounded once where the instruction set has FMA (FMA3, AVX-512), by the instruction
/// itself: xsimd 8.1 has no AVX-512 fma (its generic one is x * y + z), and a * b + c is fused
/// or not as the compiler's -ffp-contract and its inlining decide, differently in two inlined
/// copies of the same code. Without FMA, two roundings, in vectors and scalars alike (every use
/// tolerates both).
template <class V>
inline V fma(const V& a, const V& b, const V& c) noexcept {
  if constexpr (is_scalar_v<V>) {
#if defined(__FMA__) || defined(__AVX512F__)
    return std::fma(a, b, c);
#else
    return a * b + c;
#endif
  } else {
#if XSIMD_WITH_AVX512F
    if constexpr (std::is_base_of<xsimd::avx512f, typename V::arch_type>::value) {
      if constexpr (std::is_same<scalar_of<V>, float>::value) {
        return _mm512_fmadd_ps(a, b, c);
      } else if constexpr (std::is_same<scalar_of<V>, double>::value) {
        return _mm512_fmadd_pd(a, b, c);
      }
    }
#endif
    return xsimd::fma(a, b, c);
  }
}

/// max(a, b) where NaN in either operand may or may not survive (callers that need NaN to
/// propagate use max_keep_nan).
template <class V>
inline V max(const V& a, const V& b) noexcept {
  if constexpr (is_scalar_v<V>) {
    return a < b ? b : a;
  } else {
    return xsimd::max(a, b);
  }
}

template <class V>
inline V min(const V& a, const V& b) noexcept {
  if constexpr (is_scalar_v<V>) {
    return b < a ? b : a;
  } else {
    return xsimd::min(a, b);
  }
}

/// max(lo, x) that returns x when x is NaN. On x86 and NEON xsimd's max is one instruction with
/// exactly this behaviour (maxps returns its second operand when unordered; vmaxq returns NaN);
/// elsewhere a compare and a blend.
template <class V>
inline V max_keep_nan(const V& lo, const V& x) noexcept {
  if constexpr (is_scalar_v<V>) {
    return x < lo ? lo : x;
  } else {
#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__) || defined(__aarch64__) || \
    defined(__ARM_NEON)
    return xsimd::max(lo, x);
#else
    return xsimd::select(x < lo, lo, x);
#endif
  }
}

template <class M, class V>
inline V select(const M& mask, const V& a, const V& b) noexcept {
  if constexpr (is_scalar_v<V>) {
    return mask ? a : b;
  } else {
    return xsimd::select(mask, a, b);
  }
}

/// The lanes of v that are NaN. Not `v != v`: xsimd 8.1's AVX `!=` is the ordered compare
/// (_CMP_NEQ_OQ), false for NaN.
template <class V>
inline auto is_nan(const V& v) noexcept {
  if constexpr (is_scalar_v<V>) {
    return std::isnan(v);
  } else {
    return xsimd::isnan(v);
  }
}

template <class M>
inline bool any(const M& mask) noexcept {
  if constexpr (std::is_same<M, bool>::value) {
    return mask;
  } else {
    return xsimd::any(mask);
  }
}

template <class V>
inline V log(const V& v) noexcept {
  if constexpr (is_scalar_v<V>) {
    return std::log(v);
  } else {
    return xsimd::log(v);
  }
}

template <class V>
inline V log1p(const V& v) noexcept {
  if constexpr (is_scalar_v<V>) {
    return std::log1p(v);
  } else {
    return xsimd::log1p(v);
  }
}

template <class V>
inline V tanh(const V& v) noexcept {
  if constexpr (is_scalar_v<V>) {
    return std::tanh(v);
  } else {
    // xsimd 8.1's tanh goes through an exp that converts its argument to an integer lane by lane
    // (undefined behaviour for ±inf and NaN; UBSan reports it). tanh is ±1 in float and double
    // beyond |x| = 20, so clamp there, and run NaN lanes as 0 and put the NaN back.
    using T = scalar_of<V>;
    const auto nan = is_nan(v);
    const V c = xsimd::min(xsimd::max(select(nan, V(T(0)), v), V(T(-20))), V(T(20)));
    return select(nan, v, xsimd::tanh(c));
  }
}

// ---- horizontal reductions (xsimd 8.1: hadd, no reduce_max)
// --------------------------------------

template <class V>
inline auto hsum(const V& v) noexcept {
  if constexpr (is_scalar_v<V>) {
    return v;
  } else {
    return xsimd::hadd(v);
  }
}

template <class V>
inline auto hmax(const V& v) noexcept {
  if constexpr (is_scalar_v<V>) {
    return v;
  } else {
    using A [[maybe_unused]] = typename V::arch_type;
    // Halving shuffles (log2 lanes steps) where the ISA is known; NaN lanes may or may not win,
    // as with max (the kernels detect NaN through the sums). AVX-512 (not derived from xsimd's
    // avx) halves to 256 bits first: its fallback below was a chain of 15 dependent scalar
    // maxima, a quarter of a 100-class softmax row's time.
#if XSIMD_WITH_AVX512F
    if constexpr (std::is_base_of<xsimd::avx512f, A>::value) {
      using H = xsimd::batch<scalar_of<V>, xsimd::avx2>;
      if constexpr (sizeof(scalar_of<V>) == 4) {
        const __m512d d = _mm512_castps_pd(v);
        return hmax(H(_mm256_max_ps(_mm256_castpd_ps(_mm512_castpd512_pd256(d)),
                                    _mm256_castpd_ps(_mm512_extractf64x4_pd(d, 1)))));
      } else {
        return hmax(H(_mm256_max_pd(_mm512_castpd512_pd256(v), _mm512_extractf64x4_pd(v, 1))));
      }
    }
#endif
#if XSIMD_WITH_AVX
    if constexpr (std::is_base_of<xsimd::avx, A>::value) {
      if constexpr (sizeof(scalar_of<V>) == 4) {
        __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        m = _mm_max_ss(m, _mm_movehdup_ps(m));
        return _mm_cvtss_f32(m);
      } else {
        __m128d m = _mm_max_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
        m = _mm_max_sd(m, _mm_unpackhi_pd(m, m));
        return _mm_cvtsd_f64(m);
      }
    }
#endif
    alignas(64) scalar_of<V> buf[lanes<V>];
    v.store_unaligned(buf);
    scalar_of<V> m = buf[0];
    for (index_t i = 1; i < lanes<V>; ++i) m = detail::max(m, buf[i]);
    return m;
  }
}

// ---- bit manipulation for exp
// ---------------------------------------------------------------------

/// 2^n for integer-valued n in the normal exponent range, built directly in the exponent field.
/// n + (1.5 * 2^p + bias) is exact and leaves n + bias in the low mantissa bits (p = 23 or 52);
/// shifting them up by p drops the magic's own bits and lands n + bias in the exponent.
template <class V>
inline V exp2i(const V& n) noexcept {
  using T = scalar_of<V>;
  using I = typename vec_traits<V>::int_type;
  constexpr int p = sizeof(T) == 4 ? 23 : 52;
  constexpr T magic = sizeof(T) == 4 ? T(0x1.8p23 + 127) : T(0x1.8p52 + 1023);
  const V t = n + splat<V>(magic);
  if constexpr (is_scalar_v<V>) {
    I bits;
    std::memcpy(&bits, &t, sizeof bits);
    bits = static_cast<I>(static_cast<std::make_unsigned_t<I>>(bits) << p);
    T out;
    std::memcpy(&out, &bits, sizeof out);
    return out;
  } else {
    using A = typename V::arch_type;
    using IV = xsimd::batch<I, A>;
    return xsimd::bitwise_cast<V>(xsimd::bitwise_cast<IV>(t) << p);
  }
}

/// The exponent of |x| as an integer-valued V: floor(log2 |x|) for normal x, -bias (-127 or
/// -1023) for 0 and subnormals, bias + 1 for inf and NaN. The exponent field lands in the low
/// mantissa bits of 1.5 * 2^p (p = 23 or 52), and subtracting 1.5 * 2^p + bias leaves it.
template <class V>
inline V exponent_of(const V& x) noexcept {
  using T = scalar_of<V>;
  using I = typename vec_traits<V>::int_type;
  constexpr int p = sizeof(T) == 4 ? 23 : 52;
  constexpr T plain = sizeof(T) == 4 ? T(0x1.8p23) : T(0x1.8p52);
  constexpr T magic = sizeof(T) == 4 ? T(0x1.8p23 + 127) : T(0x1.8p52 + 1023);
  using U = std::make_unsigned_t<I>;
  U plain_bits;
  std::memcpy(&plain_bits, &plain, sizeof plain_bits);
  if constexpr (is_scalar_v<V>) {
    const T a = std::abs(x);
    U bits;
    std::memcpy(&bits, &a, sizeof bits);
    bits = static_cast<U>((bits >> p) | plain_bits);
    T t;
    std::memcpy(&t, &bits, sizeof t);
    return t - magic;
  } else {
    using A = typename V::arch_type;
    using UV = xsimd::batch<U, A>;
    const UV bits = (xsimd::bitwise_cast<UV>(xsimd::abs(x)) >> p) | UV(plain_bits);
    return xsimd::bitwise_cast<V>(bits) - V(magic);
  }
}

}  // namespace smax::detail
