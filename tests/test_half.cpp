// 16-bit input: Eigen::bfloat16 and Eigen::half logits, computed in float.
//
// The budgets (reference.hpp states the float ones): a float destination gets, bit for bit, the
// float result of the widened input in the same layout; a 16-bit destination gets that float
// result rounded once to nearest (bit for bit its Eigen cast), so within half a 16-bit ulp of it
// and within one 16-bit ulp (half: or 2^-24, its subnormal spacing) plus the float budget of the
// exact value. Cross-entropy: the loss (float) and the gradient before its rounding are the float
// path's bit for bit. The vector conversions agree with Eigen's scalar ones on every 16-bit value
// and on rounding ties, infinities, overflow and subnormals.
#include "reference.hpp"

#include <cstdint>
#include <cstring>
#include <random>
#include <type_traits>
#include <vector>

namespace {

using Eigen::Dynamic;
using ref::Index;
using ref::ld;
using BF = Eigen::bfloat16;
using HF = Eigen::half;
template <class S, int Storage>
using M = Eigen::Matrix<S, Dynamic, Dynamic, Storage>;
using V = smax::detail::vec_t<float, smax::detail::best_arch>;
constexpr Index L = smax::detail::lanes<V>;

template <class S>
std::uint16_t bits_of(S s) {
  return Eigen::numext::bit_cast<std::uint16_t>(s);
}
template <class S>
S from_bits(std::uint16_t b) {
  return Eigen::numext::bit_cast<S>(b);
}
inline bool same(float a, float b) {
  return (std::isnan(a) && std::isnan(b)) || std::memcmp(&a, &b, sizeof a) == 0;
}
template <class S>
bool same16(S a, S b) {
  const bool na = Eigen::numext::isnan(a), nb = Eigen::numext::isnan(b);
  return na || nb ? na && nb : bits_of(a) == bits_of(b);
}

/// The first (i, j) where two matrices differ in their bits (NaN matches NaN), or "none".
template <class A, class B>
std::string first_difference(const A& a, const B& b) {
  if (a.rows() != b.rows() || a.cols() != b.cols()) return "shapes differ";
  for (Index i = 0; i < a.rows(); ++i)
    for (Index j = 0; j < a.cols(); ++j) {
      bool eq;
      if constexpr (std::is_same<typename A::Scalar, float>::value) {
        eq = same(a(i, j), b(i, j));
      } else {
        eq = same16(a(i, j), b(i, j));
      }
      if (!eq)
        return "(" + std::to_string(i) + ", " + std::to_string(j) + "): " +
               std::to_string(static_cast<float>(a(i, j))) + " vs " +
               std::to_string(static_cast<float>(b(i, j)));
    }
  return "none";
}

/// The spacing of S at |v| (2^-7 / 2^-10 relative), and half's subnormal spacing below 2^-14.
template <class S>
ld ulp16(ld v) {
  constexpr int digits = std::is_same<S, BF>::value ? 8 : 11;
  constexpr ld min_normal = std::is_same<S, BF>::value ? 0x1p-126L : 0x1p-14L;
  v = std::fabs(v);
  if (v < min_normal) return min_normal * std::ldexp(ld(1), 1 - digits);
  int e;
  std::frexp(v, &e);
  return std::ldexp(ld(1), e - digits);
}

/// Logits in [-8, 8] exactly representable in S, with a masked entry in row 0, a fully masked
/// row 1 and a NaN in row 2 (when the matrix has them).
template <class S, int Storage>
M<S, Storage> logits(Index n, Index k, unsigned seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> u(-8.0f, 8.0f);
  M<S, Storage> x(n, k);
  for (Index i = 0; i < n; ++i)
    for (Index j = 0; j < k; ++j) x(i, j) = static_cast<S>(u(gen));
  const S minus_inf = static_cast<S>(-std::numeric_limits<float>::infinity());
  if (n > 0 && k > 1) x(0, 0) = minus_inf;
  if (n > 1) x.row(1).setConstant(minus_inf);
  if (n > 2) x(2, k - 1) = static_cast<S>(std::numeric_limits<float>::quiet_NaN());
  return x;
}

template <class S>
std::vector<Index> sizes() {
  // Up to 16384 the exps of a row wait in float in a stack buffer. Beyond it (kept_exps): the
  // first half in the row's 16-bit output bytes and the next 16384 in the buffer, where the row
  // is aligned for floats; the other rows (odd K: every other row) keep their first 16384 in the
  // buffer. The rest (beyond 32768, or 16384) is computed again.
  return {1, 2, 3, L - 1, L, L + 1, 2 * L + 1, 16, 17, 100, 1000, 4097, 16384, 16385, 33001};
}

TEMPLATE_TEST_CASE("16-bit vector conversions agree with Eigen's scalar ones", "[half]", BF, HF) {
  using S = TestType;
  // Widening: every 16-bit pattern.
  std::vector<S> all(65536);
  for (std::uint32_t b = 0; b < 65536; ++b) all[b] = from_bits<S>(static_cast<std::uint16_t>(b));
  alignas(64) float out[64];
  for (std::size_t b = 0; b + L <= all.size(); b += L) {
    smax::detail::store(out, smax::detail::load_as<V>(all.data() + b));
    for (Index l = 0; l < L; ++l) {
      const float want = static_cast<float>(all[b + l]);
      if (!same(out[l], want)) FAIL("widening 0x" << std::hex << b + l << ": " << out[l]);
    }
  }
  // Narrowing: random bit patterns (NaN, infinities, subnormals, overflow included), ties at
  // the 16-bit rounding point, and both neighbours of every tie.
  std::mt19937 gen(7);
  std::vector<float> f;
  for (int i = 0; i < 200000; ++i) {
    const std::uint32_t u = static_cast<std::uint32_t>(gen());
    float v;
    std::memcpy(&v, &u, sizeof v);
    f.push_back(v);
  }
  for (std::uint32_t b = 0; b < 65536; b += 7) {
    const float lo = static_cast<float>(from_bits<S>(static_cast<std::uint16_t>(b)));
    const float hi = static_cast<float>(from_bits<S>(static_cast<std::uint16_t>(b + 1)));
    if (!std::isfinite(lo) || !std::isfinite(hi)) continue;
    const float mid = lo + (hi - lo) / 2;  // exact: the tie
    f.insert(f.end(), {mid, std::nextafter(mid, lo), std::nextafter(mid, hi)});
  }
  f.insert(f.end(), {65504.0f, 65520.0f, 65519.996f, 1e30f, -1e30f, 0x1p-25f, 0x1p-24f, 1e-45f,
                     -0.0f, std::numeric_limits<float>::infinity(),
                     std::numeric_limits<float>::quiet_NaN()});
  while (f.size() % static_cast<std::size_t>(L) != 0) f.push_back(1.0f);
  std::vector<S> got(f.size());
  for (std::size_t i = 0; i < f.size(); i += L)
    smax::detail::store_as(got.data() + i, smax::detail::load<V>(f.data() + i));
  for (std::size_t i = 0; i < f.size(); ++i) {
    const S want = static_cast<S>(f[i]);
    if (!same16(got[i], want))
      FAIL("narrowing " << f[i] << ": 0x" << std::hex << bits_of(got[i]) << " vs 0x"
                        << bits_of(want));
  }
  // The first rem < L lanes (the tails of rows): the same conversions; loads fill the other
  // lanes with 0, stores leave the memory after the rem elements alone.
  const S guard = from_bits<S>(0x7bcd);
  for (Index rem = 1; rem < L; ++rem) {
    CAPTURE(rem);
    for (std::size_t b = 0; b + 64 <= all.size(); b += 4099) {
      smax::detail::store(out, smax::detail::load_partial_as<V>(all.data() + b, rem));
      for (Index l = 0; l < L; ++l) {
        const float want = l < rem ? static_cast<float>(all[b + l]) : 0.0f;
        if (!same(out[l], want)) FAIL("partial widening 0x" << std::hex << b + l << ": " << out[l]);
      }
    }
    for (std::size_t i = 0; i + L <= f.size(); i += 997) {
      std::vector<S> dst(2 * L, guard);
      smax::detail::store_partial_as(dst.data() + 1, smax::detail::load<V>(f.data() + i), rem);
      for (Index l = 0; l < 2 * L; ++l) {
        const bool written = l >= 1 && l <= rem;
        const S want = written ? static_cast<S>(f[i + l - 1]) : guard;
        if (!same16(dst[l], want))
          FAIL("partial narrowing, element " << l << ": 0x" << std::hex << bits_of(dst[l])
                                             << " vs 0x" << bits_of(want));
      }
    }
  }
}

template <class S, int Storage>
void check_forward(Index n, Index k) {
  using MF = M<float, Storage>;
  using MS = M<S, Storage>;
  const MS x = logits<S, Storage>(n, k, static_cast<unsigned>(n * 1000 + k));
  const MF xw = x.template cast<float>();

  const MF ref_soft = smax::softmax(xw), ref_log = smax::log_softmax(xw);
  const Eigen::VectorXf ref_lse = smax::logsumexp(xw);
  // Float destinations: the float path's bits.
  const MF yf = smax::softmax(x), lf = smax::log_softmax(x);
  const Eigen::VectorXf sf = smax::logsumexp(x);
  CHECK(first_difference(yf, ref_soft) == "none");
  CHECK(first_difference(lf, ref_log) == "none");
  CHECK(first_difference(sf, ref_lse) == "none");
  // 16-bit destinations: those results rounded once.
  const MS y = smax::softmax(x), l = smax::log_softmax(x);
  const Eigen::Matrix<S, Dynamic, 1> s = smax::logsumexp(x);
  CHECK(first_difference(y, MS(ref_soft.template cast<S>())) == "none");
  CHECK(first_difference(l, MS(ref_log.template cast<S>())) == "none");
  CHECK(first_difference(s, Eigen::Matrix<S, Dynamic, 1>(ref_lse.template cast<S>())) == "none");
  // In place.
  MS z = x;
  z = smax::softmax(z);
  CHECK(first_difference(z, y) == "none");

  // Against the exact values (rows with NaN are NaN, checked above bit for bit).
  std::vector<ld> xr(static_cast<std::size_t>(k)), ys(xr.size()), ls(xr.size());
  for (Index i = 0; i < n; ++i) {
    for (Index j = 0; j < k; ++j) xr[static_cast<std::size_t>(j)] = xw(i, j);
    ref::softmax(xr.data(), k, ys.data());
    ref::log_softmax(xr.data(), k, ls.data());
    const ld lse = ref::logsumexp(xr.data(), k);
    for (Index j = 0; j < k; ++j) {
      const ld e = ys[static_cast<std::size_t>(j)], le = ls[static_cast<std::size_t>(j)];
      if (std::isnan(e)) continue;
      const ld tol = ulp16<S>(e) + ref::softmax_budget_ulps<float>(k, 16) * ref::ulp<float>(e);
      CHECK(std::fabs(ld(static_cast<float>(y(i, j))) - e) <= tol);
      if (std::isinf(le)) {
        CHECK(static_cast<float>(l(i, j)) == -std::numeric_limits<float>::infinity());
      } else {
        const ld ltol = ulp16<S>(le) + ref::base_ulps<float> * ref::ulp<float>(std::max<ld>(
                                                                    std::fabs(le), 1));
        CHECK(std::fabs(ld(static_cast<float>(l(i, j))) - le) <= ltol);
      }
    }
    if (!std::isnan(lse) && std::isfinite(lse))
      CHECK(std::fabs(ld(sf(i)) - lse) <=
            ref::base_ulps<float> * ref::ulp<float>(std::max<ld>(std::fabs(lse), 1)));
  }
}

TEMPLATE_TEST_CASE("16-bit input: softmax, log_softmax, logsumexp in float, rounded once",
                   "[half]", BF, HF) {
  using S = TestType;
  for (const Index k : sizes<S>())
    for (const Index n : {Index{0}, Index{1}, Index{3}, L + 3, Index{37}}) {
      CAPTURE(k, n);
      check_forward<S, Eigen::RowMajor>(n, k);
      check_forward<S, Eigen::ColMajor>(n, k);
    }
  // Vectors: the scalar logsumexp is float.
  const M<S, Eigen::RowMajor> x = logits<S, Eigen::RowMajor>(4, 33, 5);
  const auto lse = smax::logsumexp(x.row(3));
  static_assert(std::is_same<std::decay_t<decltype(lse)>, float>::value, "float logsumexp");
  CHECK(same(lse, smax::logsumexp(Eigen::RowVectorXf(x.row(3).template cast<float>()))));
}

/// a and b agree: bit for bit, or (with `near`: soft-capped logits, where the two paths may
/// contract c·tanh(x/c) − max into an fma differently) within 8 float ulp of max(|a|, 1).
inline bool agree(float a, float b, bool near) {
  if (!near || std::isnan(a) || std::isnan(b) || std::isinf(a) || std::isinf(b)) return same(a, b);
  return std::fabs(ld(a) - ld(b)) <= 8 * ref::ulp<float>(std::max<ld>(std::fabs(ld(b)), 1));
}
template <class A, class B>
bool agree(const A& a, const B& b, bool near) {
  for (Index i = 0; i < a.size(); ++i)
    if (!agree(a(i), b(i), near)) return false;
  return a.size() == b.size();
}

/// A 16-bit gradient is the float one rounded once: bit for bit, or (near) within one 16-bit ulp.
template <class MS, class MF>
void check_rounded(const MS& g, const MF& gw, bool near) {
  using S = typename MS::Scalar;
  const MS gw16 = gw.template cast<S>();
  if (!near) {
    CHECK(first_difference(g, gw16) == "none");
    return;
  }
  for (Index i = 0; i < g.size(); ++i)
    CHECK(std::fabs(ld(static_cast<float>(g(i))) - ld(static_cast<float>(gw16(i)))) <=
          ulp16<S>(static_cast<float>(gw16(i))));
}

template <class S, int Storage>
void check_cross_entropy(Index n, Index k, const smax::CrossEntropyOptions& opt) {
  using MF = M<float, Storage>;
  using MS = M<S, Storage>;
  const MS x = logits<S, Storage>(n, k, static_cast<unsigned>(7 * n + k));
  MS x0 = x;  // the NaN row and the fully masked row have their own tests; finite here
  for (Index i = 0; i < n; ++i)
    for (Index j = 0; j < k; ++j)
      if (Eigen::numext::isnan(x0(i, j)) || (i == 1 && k > 0)) x0(i, j) = static_cast<S>(0.5f);
  const MF xw = x0.template cast<float>();
  Eigen::VectorXi lab(n);
  for (Index i = 0; i < n; ++i) lab(i) = static_cast<int>((i * 7 + 3) % k);
  if (n > 2) lab(2) = -100;
  if (n > 0) lab(0) = 0;  // the masked class of row 0 is -inf: label elsewhere when possible
  if (n > 0 && k > 1) lab(0) = 1;

  MF gw(n, k);
  const float lw = smax::cross_entropy(xw, lab, gw, opt);
  MS g(n, k);
  const float l16 = smax::cross_entropy(x0, lab, g, opt);
  const bool near = opt.softcap > 0;
  CHECK(agree(l16, lw, near));
  CHECK(agree(smax::cross_entropy(x0, lab, opt), smax::cross_entropy(xw, lab, opt), near));
  check_rounded(g, gw, near);
  MS in_place = x0;
  CHECK(same(smax::cross_entropy(in_place, lab, in_place, opt), l16));
  CHECK(first_difference(in_place, g) == "none");

  // Probability targets of the logits' type.
  const MS t = MS(MF(smax::softmax(MF(MF::Random(n, k) * 3.0f))).template cast<S>());
  MF gtw(n, k);
  MS gt(n, k);
  smax::CrossEntropyOptions popt = opt;
  popt.ignore_index = -100;
  popt.class_weights.resize(0);
  const float ltw = smax::cross_entropy(xw, MF(t.template cast<float>()), gtw, popt);
  CHECK(agree(smax::cross_entropy(x0, t, gt, popt), ltw, near));
  check_rounded(gt, gtw, near);

  // Reduction::none with an upstream gradient: losses and dloss in float.
  const Eigen::VectorXf dloss = Eigen::VectorXf::LinSpaced(n, -1.0f, 2.0f);
  Eigen::VectorXf lr(n), lrw(n);
  MS gr(n, k);
  MF grw(n, k);
  smax::cross_entropy_per_row(xw, lab, lrw, dloss, grw, opt);
  smax::cross_entropy_per_row(x0, lab, lr, dloss, gr, opt);
  CHECK(agree(lr, lrw, near));
  check_rounded(gr, grw, near);
}

TEMPLATE_TEST_CASE("16-bit logits: cross-entropy in float, the gradient rounded once", "[half]",
                   BF, HF) {
  using S = TestType;
  smax::CrossEntropyOptions plain, every;
  every.label_smoothing = 0.1;
  every.z_loss = 1e-3;
  every.softcap = 5.0;
  for (const Index k : {Index{1}, Index{2}, Index{5}, L + 1, Index{16}, Index{33}, Index{1000}}) {
    every.class_weights = Eigen::VectorXd::LinSpaced(k, 0.5, 2.0);
    for (const Index n : {Index{1}, Index{3}, L + 3, Index{40}}) {  // 3: interleaved
      CAPTURE(k, n);
      check_cross_entropy<S, Eigen::RowMajor>(n, k, plain);
      check_cross_entropy<S, Eigen::ColMajor>(n, k, plain);
      check_cross_entropy<S, Eigen::RowMajor>(n, k, every);
      check_cross_entropy<S, Eigen::ColMajor>(n, k, every);
    }
  }
  // Long rows (as in sizes()): up to 16384 the exps wait in a stack buffer; beyond it
  // (kept_exps) the first half in the 16-bit gradient's own bytes where the row is aligned for
  // floats (odd K: every other row), the next 16384 in the buffer, and the rest is computed again.
  for (const Index k : {Index{4097}, Index{16384}, Index{16385}, Index{33001}}) {
    every.class_weights = Eigen::VectorXd::LinSpaced(k, 0.5, 2.0);
    for (const Index n : {Index{1}, Index{4}}) {
      CAPTURE(k, n);
      check_cross_entropy<S, Eigen::RowMajor>(n, k, plain);
      check_cross_entropy<S, Eigen::RowMajor>(n, k, every);
      check_cross_entropy<S, Eigen::ColMajor>(n, k, plain);
    }
  }
}

}  // namespace
