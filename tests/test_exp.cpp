// smax::detail::exp_nonpos, the one transcendental of every kernel: every float in [-104, 0]
// through the widest vector of the build against std::exp in double (printing the measured
// maximum error, which the README quotes), a dense sample of doubles over [-746, 0] against
// long double, the scalar fallback, and the special values. Budget: 2 ulp (reference.hpp).
#include "reference.hpp"

#include <chrono>
#include <cstdint>
#include <cstring>
#include <iostream>
#include <limits>
#include <vector>

namespace {

using ref::Index;
using smax::detail::best_arch;
using smax::detail::scalar_arch;
using smax::detail::vec_t;

#if defined(__FMA__) || defined(__FMA4__)
constexpr const char* fma_state = "with FMA";
#else
constexpr const char* fma_state = "without FMA";
#endif

float float_of(std::uint32_t b) {
  float f;
  std::memcpy(&f, &b, sizeof f);
  return f;
}
std::uint32_t bits_of(float f) {
  std::uint32_t b;
  std::memcpy(&b, &f, sizeof b);
  return b;
}

/// The float ulp at the exact value e (a positive double): 2^(E - 23) for 2^E <= e < 2^(E+1),
/// and the smallest subnormal 2^-149 below 2^-126. Built from e's exponent bits: the scan
/// calls this a billion times.
double float_ulp(double e) {
  std::uint64_t b;
  std::memcpy(&b, &e, sizeof b);
  int exponent = static_cast<int>(b >> 52) - 1023;
  if (exponent < -126) exponent = -126;
  const std::uint64_t u = static_cast<std::uint64_t>(exponent - 23 + 1023) << 52;
  double out;
  std::memcpy(&out, &u, sizeof out);
  return out;
}

/// Runs exp_nonpos<V> over in[0, n) into out, n a multiple of lanes<V>.
template <class Arch, class T>
void exp_all(const T* in, T* out, std::size_t n) {
  using V = vec_t<T, Arch>;
  constexpr std::size_t l = static_cast<std::size_t>(smax::detail::lanes<V>);
  for (std::size_t i = 0; i < n; i += l)
    smax::detail::store(out + i, smax::detail::exp_nonpos(smax::detail::load<V>(in + i)));
}

/// The worst error of a sample and where it occurred.
struct worst_error {
  double ulps = 0;
  double at = 0;
  long long count = 0, non_finite = 0;
  void add(double err, double x) {
    ++count;
    if (!(err <= ulps)) {  // also catches NaN errors
      if (std::isnan(err) || std::isinf(err)) {
        ++non_finite;
        err = std::numeric_limits<double>::infinity();
      }
      if (err > ulps) {
        ulps = err;
        at = x;
      }
    }
  }
};

/// Error of got against the long double exact value in ulps of T.
template <class T>
double ulps_of(T got, long double exact) {
  if (!std::isfinite(got)) return std::numeric_limits<double>::infinity();
  return static_cast<double>(std::fabs(static_cast<long double>(got) - exact) / ref::ulp<T>(exact));
}

/// exp_nonpos of each x (vector path of Arch), one element per lane, padding with 0.
template <class Arch, class T>
std::vector<T> exp_of(std::vector<T> x) {
  constexpr std::size_t l = static_cast<std::size_t>(smax::detail::lanes<vec_t<T, Arch>>);
  const std::size_t n = x.size();
  x.resize((n + l - 1) / l * l, T(0));
  std::vector<T> y(x.size());
  exp_all<Arch>(x.data(), y.data(), x.size());
  y.resize(n);
  return y;
}

}  // namespace

TEST_CASE("exp_nonpos<float>: every float in [-104, 0] is within 2 ulp, subnormals included",
          "[exp][scan]") {
  using V = vec_t<float, best_arch>;
  constexpr std::size_t l = static_cast<std::size_t>(smax::detail::lanes<V>);
  const std::uint64_t first = bits_of(-0.0f), last = bits_of(-104.0f);  // -0, ..., -104
  constexpr std::size_t chunk = std::size_t(1) << 16;                   // a multiple of lanes
  std::vector<float> in(chunk), out(chunk);
  worst_error worst;
  long long subnormal = 0, flushed = 0;
  const double min_normal = std::numeric_limits<float>::min();
  const double smallest = std::numeric_limits<float>::denorm_min();
  const auto start = std::chrono::steady_clock::now();

  for (std::uint64_t b = first; b <= last; b += chunk) {
    const std::size_t m = static_cast<std::size_t>(std::min<std::uint64_t>(chunk, last - b + 1));
    for (std::size_t i = 0; i < m; ++i) in[i] = float_of(static_cast<std::uint32_t>(b + i));
    const std::size_t padded = (m + l - 1) / l * l;
    for (std::size_t i = m; i < padded; ++i) in[i] = in[m - 1];
    exp_all<best_arch>(in.data(), out.data(), padded);
    for (std::size_t i = 0; i < m; ++i) {
      const double e = std::exp(static_cast<double>(in[i]));
      const double g = out[i];
      worst.add(std::fabs(g - e) / float_ulp(e), in[i]);
      if (g > 0 && g < min_normal) ++subnormal;
      if (g == 0 && e > 2.5 * smallest) ++flushed;
    }
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  std::cout << "exp_nonpos<float> scan, " << best_arch::name() << " (" << l << " lanes, "
            << fma_state << "): " << worst.count << " floats in [-104, 0], max error "
            << std::setprecision(4) << worst.ulps << " ulp at x = " << std::setprecision(9)
            << worst.at << "; " << subnormal << " subnormal results (" << std::setprecision(3)
            << seconds << " s)" << std::endl;
  CHECK(worst.count == static_cast<long long>(last - first + 1));
  CHECK(worst.non_finite == 0);
  CHECK(worst.ulps <= ref::exp_ulps);
  CHECK(flushed == 0);
  CHECK(subnormal > 2000000);  // exp(x) is subnormal for x in (-103.97, -87.34): ~2.2e6 floats
}

TEST_CASE("exp_nonpos<float>: the scalar fallback on a sample of [-104, 0]", "[exp]") {
  std::vector<float> x;
  for (std::uint32_t b = bits_of(-0.0f); b <= bits_of(-104.0f); b += 61) x.push_back(float_of(b));
  const std::vector<float> y = exp_of<scalar_arch>(x);
  worst_error worst;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double e = std::exp(static_cast<double>(x[i]));
    worst.add(std::fabs(static_cast<double>(y[i]) - e) / float_ulp(e), x[i]);
  }
  std::cout << "exp_nonpos<float> scalar sample: " << worst.count << " floats, max error "
            << std::setprecision(4) << worst.ulps << " ulp at x = " << std::setprecision(9)
            << worst.at << std::endl;
  CHECK(worst.count > 18000000);
  CHECK(worst.ulps <= ref::exp_ulps);
}

TEST_CASE("exp_nonpos<double>: a dense sample of [-746, 0] and its edges is within 2 ulp",
          "[exp]") {
  ref::rng g(ref::seed_of(0xe4e4));
  std::vector<double> x;
  x.reserve(10'500'000);
  // Stratified over the whole domain: one point in each of 8e6 equal cells.
  const int cells = 8'000'000;
  for (int i = 0; i < cells; ++i)
    x.push_back(static_cast<double>(-746.0L * (i + g.uniform()) / cells));
  // Tiny magnitudes, log-uniform in [1e-20, 1] (where exp(x) is 1 - |x|).
  for (int i = 0; i < 1'000'000; ++i)
    x.push_back(-static_cast<double>(std::pow(10.0L, g.uniform(-20, 0))));
  // Around the subnormal threshold (-708.4) and the last results that round to nonzero (-745.1).
  for (int i = 0; i < 500'000; ++i) x.push_back(static_cast<double>(g.uniform(-708.6L, -708.2L)));
  for (int i = 0; i < 500'000; ++i) x.push_back(static_cast<double>(g.uniform(-746.0L, -744.0L)));
  // Where n = round(x / ln2) changes: (k + 1/2) ln2, and 8 doubles either side.
  for (int k = 0; k <= 1076; ++k) {
    double c = static_cast<double>(-(k + 0.5L) * 0.693147180559945309417232121458176568L);
    for (int s = 0; s < 8; ++s) c = std::nextafter(c, 0.0);
    for (int s = 0; s < 17; ++s, c = std::nextafter(c, -1000.0)) x.push_back(c);
  }
  const double dmin = std::numeric_limits<double>::denorm_min();
  for (double e : {-0.0, 0.0, -dmin, -std::numeric_limits<double>::min(),
                   -std::numeric_limits<double>::epsilon(), -1e-300, -0.5, -1.0, -708.3964185322641,
                   -708.39641853226408, -709.0, -744.44007192138126, -745.1332191019411,
                   -745.13321910194122, -745.2, -745.9, -746.0, std::nextafter(-746.0, 0.0)})
    x.push_back(e);
  REQUIRE(x.size() >= 10'000'000);

  const std::vector<double> vec = exp_of<best_arch>(x), sca = exp_of<scalar_arch>(x);
  worst_error worst_vec, worst_sca;
  long long subnormal = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const long double exact = std::exp(static_cast<long double>(x[i]));
    worst_vec.add(ulps_of(vec[i], exact), x[i]);
    worst_sca.add(ulps_of(sca[i], exact), x[i]);
    if (vec[i] > 0 && vec[i] < std::numeric_limits<double>::min()) ++subnormal;
  }
  std::cout << "exp_nonpos<double> sample, " << best_arch::name() << " (" << fma_state
            << "): " << worst_vec.count << " doubles in [-746, 0], max error "
            << std::setprecision(4) << worst_vec.ulps << " ulp at x = " << std::setprecision(17)
            << worst_vec.at << "; scalar fallback " << std::setprecision(4) << worst_sca.ulps
            << " ulp at x = " << std::setprecision(17) << worst_sca.at << std::endl;
  CHECK(worst_vec.ulps <= ref::exp_ulps);
  CHECK(worst_sca.ulps <= ref::exp_ulps);
  CHECK(worst_vec.non_finite == 0);
  CHECK(subnormal > 100000);
}

TEMPLATE_TEST_CASE("exp_nonpos special values: -inf, NaN, 0, -0 and below the domain", "[exp]",
                   float, double) {
  using T = TestType;
  const T inf = std::numeric_limits<T>::infinity();
  ref::rng g(ref::seed_of(0x5e));
  const bool vector = GENERATE(false, true);
  INFO((vector ? "vector" : "scalar") << " path");
  auto run = [&](const std::vector<T>& x) {
    return vector ? exp_of<best_arch>(x) : exp_of<scalar_arch>(x);
  };

  const std::vector<T> ones = run({T(0), T(-0.0)});
  CHECK(ones[0] == 1);
  CHECK(ones[1] == 1);

  const T lo = sizeof(T) == 4 ? T(-104) : T(-746);
  const std::vector<T> zeros = run(
      {-inf, lo, std::nextafter(lo, -inf), T(2) * lo, T(-1e30), -std::numeric_limits<T>::max()});
  for (std::size_t i = 0; i < zeros.size(); ++i) {
    INFO("input " << i);
    CHECK(zeros[i] == 0);
    CHECK_FALSE(std::signbit(zeros[i]));
  }

  std::vector<T> nans = {std::numeric_limits<T>::quiet_NaN(), -std::numeric_limits<T>::quiet_NaN(),
                         std::numeric_limits<T>::signaling_NaN()};
  for (int i = 0; i < 13; ++i) nans.push_back(ref::nan_with_payload<T>(g));
  const std::vector<T> from_nans = run(nans);
  for (std::size_t i = 0; i < nans.size(); ++i) {
    INFO("NaN " << i);
    CHECK(std::isnan(from_nans[i]));
  }
}

TEMPLATE_TEST_CASE("exp_nonpos stays accurate for 0 < x <= 88 (float) / 709 (double)", "[exp]",
                   float, double) {
  // The documented extension of the domain, which log_softmax_backward's clamp relies on.
  using T = TestType;
  const T hi = sizeof(T) == 4 ? T(88) : T(709);
  ref::rng g(ref::seed_of(0x88));
  std::vector<T> x = {hi, T(1), T(0.5), std::numeric_limits<T>::denorm_min()};
  for (int i = 0; i < 200000; ++i) x.push_back(static_cast<T>(g.uniform(0, hi)));
  const bool vector = GENERATE(false, true);
  INFO((vector ? "vector" : "scalar") << " path");
  const std::vector<T> y = vector ? exp_of<best_arch>(x) : exp_of<scalar_arch>(x);
  worst_error worst;
  for (std::size_t i = 0; i < x.size(); ++i)
    worst.add(ulps_of(y[i], std::exp(static_cast<long double>(x[i]))), static_cast<double>(x[i]));
  INFO("max error " << worst.ulps << " ulp at x = " << worst.at);
  CHECK(worst.ulps <= ref::exp_ulps);
}

TEMPLATE_TEST_CASE("exp_nonpos and exp_scaled: the vector path has the scalar fallback's bits",
                   "[exp]", float, double) {
  // The widest vector scales by 2^n in one rounding (vscalef with AVX-512) where the scalar
  // fallback multiplies twice for subnormal results: both round once, so the bits must agree.
  // Every float of [-104, -80] (the subnormal results and the normal ones above them), a sample
  // of the rest of the domain, and exp_scaled(x, e) for integer e in [0, 60].
  using T = TestType;
  using V = vec_t<T, best_arch>;
  constexpr std::size_t l = static_cast<std::size_t>(smax::detail::lanes<V>);
  ref::rng g(ref::seed_of(0x5ca1ef));
  std::vector<T> x;
  if constexpr (sizeof(T) == 4) {
    for (std::uint32_t b = bits_of(-80.0f); b <= bits_of(-104.0f); ++b) x.push_back(float_of(b));
  } else {
    for (int i = 0; i < 2'000'000; ++i) x.push_back(static_cast<T>(g.uniform(-746, -700)));
  }
  for (int i = 0; i < 1'000'000; ++i)
    x.push_back(static_cast<T>(g.uniform(sizeof(T) == 4 ? -104 : -746, 0)));
  x.resize((x.size() + l - 1) / l * l, T(-1));
  std::vector<T> e(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) e[i] = static_cast<T>(i % 61);
  long long compared = 0, differ = 0, subnormal = 0;
  for (std::size_t i = 0; i < x.size(); i += l) {
    alignas(64) T plain[l], scaled[l];
    const V xv = smax::detail::load<V>(x.data() + i);
    smax::detail::store(plain, smax::detail::exp_nonpos(xv));
    smax::detail::store(scaled, smax::detail::exp_scaled(xv, smax::detail::load<V>(e.data() + i)));
    for (std::size_t j = 0; j < l; ++j) {
      const T p = smax::detail::exp_nonpos(x[i + j]);
      const T s = smax::detail::exp_scaled(x[i + j], e[i + j]);
      compared += 2;
      differ += std::memcmp(&p, &plain[j], sizeof(T)) != 0;
      differ += std::memcmp(&s, &scaled[j], sizeof(T)) != 0;
      subnormal += p > 0 && p < std::numeric_limits<T>::min();
    }
  }
  INFO(best_arch::name() << ": " << compared << " results compared");
  CHECK(differ == 0);
  CHECK(subnormal > 100000);
}

TEMPLATE_TEST_CASE("detail::fma rounds once wherever the instruction set has FMA", "[exp]", float,
                   double) {
  // a = b = 1 + 2^-h, c = -(1 + 2^(1-h)): a * b + c = 2^-2h exactly, which a rounded product
  // (1 + 2^(1-h) + 2^-2h rounds to 1 + 2^(1-h): 2^-2h is below half an ulp) loses: 0. Every
  // polynomial and gradient term that calls detail::fma relies on it being the instruction where
  // there is one, not x * y + z left to the compiler (xsimd 8.1's AVX-512 fma), which fuses or
  // not as -ffp-contract and inlining decide.
  using T = TestType;
  using V = vec_t<T, best_arch>;
  constexpr int h = std::numeric_limits<T>::digits / 2 + 1;
  const T a = T(1) + std::ldexp(T(1), -h), c = -(T(1) + std::ldexp(T(1), 1 - h));
  const T fused = std::ldexp(T(1), -2 * h);
#if defined(__FMA__) || defined(__AVX512F__)
  const T want = fused;
#else
  const T want = T(0);  // no FMA: two roundings, in vectors and scalars alike
  CHECK(want != fused);
#endif
  INFO(best_arch::name());
  CHECK(smax::detail::fma(a, a, c) == want);
  alignas(64) T out[smax::detail::lanes<V>];
  smax::detail::store(out, smax::detail::fma(V(a), V(a), V(c)));
  for (const T v : out) CHECK(v == want);
}
