// smax::cross_entropy against the long double reference (ce_reference.hpp states the budgets):
// the identity grad = (softmax − onehot)/N for every K that hits a SIMD tail and batches that do
// and do not fill a vector (column-major logits are vectorized across rows); every combination
// of options, labels and probability targets, mean, sum and per-row losses; storage orders,
// strided and block views; in place bit for bit; every kind of label vector and target view.
#include "ce_reference.hpp"

#include <cstdint>
#include <numeric>
#include <utility>
#include <vector>

namespace {

using ce_ref::Combo;
using ce_ref::Index;
using ce_ref::ld;
using ce_ref::Mode;
using ce_ref::RowMat;
using ce_ref::Vec;
template <class T>
using ColMat = ce_ref::ColMat<T>;

std::vector<Index> batch_sizes(Index k) {
  if (k > 1000) return {0, 1, 3, 9, 17};
  return {0, 1, 2, 3, 5, 7, 8, 9, 15, 16, 17, 33};
}

}  // namespace

TEMPLATE_TEST_CASE("the gradient is (softmax - onehot) / N for every K and N",
                   "[cross_entropy][gradient]", float, double) {
  using T = TestType;
  const Index k = GENERATE(values<Index>(
      {1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 33, 63, 65, 100, 127, 128, 129, 1000, 4099, 50257}));
  const Index n = GENERATE_COPY(from_range(batch_sizes(k)));
  const bool row_major = GENERATE(false, true);
  INFO(ce_ref::type_name<T>() << ", K = " << k << ", N = " << n
                              << (row_major ? ", row-major" : ", column-major")
                              << ", lanes = " << ce_ref::lanes<T>);
  const RowMat<T> x = ce_ref::logits<T>(n, k, ce_ref::seed_of(1, n, k, sizeof(T)));
  const ce_ref::Labels y = ce_ref::labels(n, k, ce_ref::seed_of(2, n, k));
  const auto yv = ce_ref::to_eigen<int>(y);

  T loss;
  RowMat<T> g;
  if (row_major) {
    RowMat<T> gs(n, k);
    loss = smax::cross_entropy(x, yv, gs);
    g = gs;
  } else {
    const ColMat<T> xc = x;
    ColMat<T> gs(n, k);
    loss = smax::cross_entropy(xc, yv, gs);
    g = gs;
  }

  const ce_ref::LMat xl = ce_ref::to_ld(x);
  const ce_ref::Result ref = ce_ref::cross_entropy(xl, y, smax::CrossEntropyOptions{});
  if (n == 0) {
    CHECK(std::isnan(loss));
    CHECK(g.rows() == 0);
    return;
  }
  CE_CHECK(ce_ref::check_loss<T>(ref.loss, loss, ref.loss_scale));
  // (p − onehot)/N with p_y − 1 = −Σ_{j≠y} p_j; its largest term is |onehot/N| = 1/N.
  ce_ref::Result expected = ref;
  for (Index i = 0; i < n; ++i) {
    const std::vector<ld> p = ce_ref::softmax_row(xl, i);
    ce_ref::exact_sum other;
    for (Index c = 0; c < k; ++c) {
      expected.grad(i, c) = p[c] / n;
      if (c != y[i]) other.add(p[c]);
    }
    expected.grad(i, y[i]) = -other.value() / n;
    expected.bound(i) = 1.0L / n;
  }
  CE_CHECK(ce_ref::check_grad<T>(expected, g));
  // The rows of the gradient sum to 0 (within the rounding of K entries of size <= 1/N).
  for (Index i = 0; i < n; ++i) {
    ld s = 0;
    for (Index c = 0; c < k; ++c) s += g(i, c);
    INFO("row " << i);
    CHECK(std::fabs(s) <= (k + 32) * ce_ref::eps<T> / n);
  }
}

TEMPLATE_TEST_CASE("loss and gradient match the long double reference for every option",
                   "[cross_entropy][reference][options]", float, double) {
  using T = TestType;
  const Combo c = GENERATE(from_range(ce_ref::all_combos()));
  const bool probs = GENERATE(false, true);
  if (probs && c.ignore != 0) return;  // ignore_index concerns labels only
  const Mode mode = GENERATE(Mode::mean, Mode::sum, Mode::per_row);
  const bool row_major = GENERATE(false, true);
  const auto shape = GENERATE(values<std::pair<Index, Index>>(
      {{0, 5}, {1, 1}, {7, 3}, {9, 17}, {17, 8}, {17, 100}, {5, 1000}, {3, 4099}}));
  const Index n = shape.first, k = shape.second;
  INFO(ce_ref::type_name<T>() << ", " << c.describe() << (probs ? ", probability targets" : "")
                              << ", " << ce_ref::name(mode)
                              << (row_major ? ", row-major" : ", column-major") << ", N = " << n
                              << ", K = " << k);
  const std::uint64_t seed = ce_ref::seed_of(3, n, k, sizeof(T));
  // Soft-capping at 5 matters for logits of this spread.
  const RowMat<T> x = ce_ref::logits<T>(n, k, seed, c.capped ? 8.0 : 3.0);
  const smax::CrossEntropyOptions o = ce_ref::options_of(c, k, seed, mode);
  const Vec<T> dl = ce_ref::dloss<T>(n, seed + 1);
  const ce_ref::LMat xl = ce_ref::to_ld(x);
  const ce_ref::LVec dll = ce_ref::to_ld(dl);

  ce_ref::Result ref;
  ce_ref::Output<T> out;
  if (probs) {
    const RowMat<T> t = ce_ref::probs<T>(n, k, seed + 2);
    ref = ce_ref::cross_entropy(xl, ce_ref::to_ld(t), o, mode, dll);
    out = row_major ? ce_ref::call<Eigen::RowMajor>(x, t, o, mode, dl)
                    : ce_ref::call<Eigen::ColMajor>(x, t, o, mode, dl);
  } else {
    const ce_ref::Labels y = ce_ref::labels_of(c, n, k, seed + 2);
    const auto yv = ce_ref::to_eigen(y);
    ref = ce_ref::cross_entropy(xl, y, o, mode, dll);
    out = row_major ? ce_ref::call<Eigen::RowMajor>(x, yv, o, mode, dl)
                    : ce_ref::call<Eigen::ColMajor>(x, yv, o, mode, dl);
  }
  if (mode == Mode::per_row) {
    CE_CHECK(ce_ref::check_row_losses<T>(ref, out.losses));
  } else if (n == 0 && mode == Mode::mean) {
    CHECK(std::isnan(out.loss));
  } else {
    CE_CHECK(ce_ref::check_loss<T>(ref.loss, out.loss, ref.loss_scale));
  }
  CE_CHECK(ce_ref::check_grad<T>(ref, out.grad));
}

TEMPLATE_TEST_CASE("fewer rows than lanes, column-major and packed: every such batch",
                   "[cross_entropy][interleaved]", float, double) {
  // 1 < N < L rows of a plain column-major matrix are read as one interleaved array (lane l of
  // vector t holds row (t w + l) mod N; N = L takes the across group). Against the long double
  // reference for labels and probability targets, a few option sets, mean and per-row; in place
  // gives the same bits as out of place.
  using T = TestType;
  const Index l = ce_ref::lanes<T>;
  std::vector<Index> batches;
  for (Index n = 2; n <= l; ++n) batches.push_back(n);
  const Index n = GENERATE_COPY(from_range(batches));
  const Index pv = l / n;  // classes per vector (a vector every floor(L / N) N elements)
  const Index period =
      l / std::gcd(l, n);  // classes per period (a vector every L elements, N / gcd phases)
  std::vector<Index> ks = {1,           2,           pv,         pv + 1,     2 * pv + 1,
                           16 * pv + 1, 17 * pv - 1, period - 1, period + 1, 16 * period + 1,
                           300};
  std::sort(ks.begin(), ks.end());
  ks.erase(std::unique(ks.begin(), ks.end()), ks.end());
  if (ks.front() == 0) ks.erase(ks.begin());  // N = L: one class per period
  const Index k = GENERATE_COPY(from_range(ks));
  // Plain; weights and smoothing; z-loss and soft-cap; ignored rows; everything.
  const int m = GENERATE(0, 3, 12, 16, 31);
  const Combo c = ce_ref::all_combos()[static_cast<std::size_t>(m)];
  const bool probs = GENERATE(false, true);
  if (probs && c.ignore != 0) return;
  const Mode mode = GENERATE(Mode::mean, Mode::per_row);
  INFO(ce_ref::type_name<T>() << ", " << c.describe() << (probs ? ", probability targets" : "")
                              << ", " << ce_ref::name(mode) << ", N = " << n << ", K = " << k
                              << ", lanes = " << l);
  const std::uint64_t seed = ce_ref::seed_of(15, n, k, sizeof(T));
  const RowMat<T> x = ce_ref::logits<T>(n, k, seed, c.capped ? 8.0 : 3.0);
  const smax::CrossEntropyOptions o = ce_ref::options_of(c, k, seed, mode);
  const Vec<T> dl = ce_ref::dloss<T>(n, seed + 1);
  ce_ref::Result ref;
  ce_ref::Output<T> out, in_place;
  if (probs) {
    const RowMat<T> t = ce_ref::probs<T>(n, k, seed + 2);
    ref = ce_ref::cross_entropy(ce_ref::to_ld(x), ce_ref::to_ld(t), o, mode, ce_ref::to_ld(dl));
    out = ce_ref::call<Eigen::ColMajor>(x, t, o, mode, dl);
    in_place = ce_ref::call<Eigen::ColMajor>(x, t, o, mode, dl, true);
  } else {
    const ce_ref::Labels y = ce_ref::labels_of(c, n, k, seed + 2);
    const auto yv = ce_ref::to_eigen(y);
    ref = ce_ref::cross_entropy(ce_ref::to_ld(x), y, o, mode, ce_ref::to_ld(dl));
    out = ce_ref::call<Eigen::ColMajor>(x, yv, o, mode, dl);
    in_place = ce_ref::call<Eigen::ColMajor>(x, yv, o, mode, dl, true);
  }
  if (mode == Mode::per_row) {
    CE_CHECK(ce_ref::check_row_losses<T>(ref, out.losses));
    CHECK(ce_ref::same_bits(out.losses, in_place.losses));
  } else {
    CE_CHECK(ce_ref::check_loss<T>(ref.loss, out.loss, ref.loss_scale));
    CHECK(ce_ref::same_bits_scalar(out.loss, in_place.loss));
  }
  CE_CHECK(ce_ref::check_grad<T>(ref, out.grad));
  CHECK(ce_ref::same_bits(out.grad, in_place.grad));
}

// The rest checks that every way of passing the same data (layouts, views, label vectors, in
// place) gives the same bits: the ISA does not enter into it, and it is most of this file's
// compile time. The AVX2 build (SMAX_TEST_KERNEL_PATHS_ONLY: a second ISA for the kernels, on
// machines whose native one is AVX-512) stops here; the baseline and native builds run it all.
#ifndef SMAX_TEST_KERNEL_PATHS_ONLY

// ---- layouts ------------------------------------------------------------------------------------

TEMPLATE_TEST_CASE("row-major, column-major, strided and block logits agree",
                   "[cross_entropy][layout]", float, double) {
  using T = TestType;
  const Combo c = GENERATE(from_range(ce_ref::all_combos()));
  const bool probs = GENERATE(false, true);
  if (probs && c.ignore != 0) return;
  const Mode mode = GENERATE(Mode::mean, Mode::per_row);
  const auto shape = GENERATE(values<std::pair<Index, Index>>({{1, 9}, {13, 7}, {19, 33}}));
  const Index n = shape.first, k = shape.second;
  INFO(ce_ref::type_name<T>() << ", " << c.describe() << (probs ? ", probability targets" : "")
                              << ", " << ce_ref::name(mode) << ", N = " << n << ", K = " << k);
  const std::uint64_t seed = ce_ref::seed_of(4, n, k, sizeof(T));
  const RowMat<T> x = ce_ref::logits<T>(n, k, seed, c.capped ? 8.0 : 3.0);
  const smax::CrossEntropyOptions o = ce_ref::options_of(c, k, seed, mode);
  const Vec<T> dl = ce_ref::dloss<T>(n, seed + 1);
  const RowMat<T> t = ce_ref::probs<T>(n, k, seed + 2);
  const ce_ref::Labels y = ce_ref::labels_of(c, n, k, seed + 2);
  const auto yv = ce_ref::to_eigen(y);
  const ce_ref::Result ref =
      probs ? ce_ref::cross_entropy(ce_ref::to_ld(x), ce_ref::to_ld(t), o, mode, ce_ref::to_ld(dl))
            : ce_ref::cross_entropy(ce_ref::to_ld(x), y, o, mode, ce_ref::to_ld(dl));

  // Three kernels' loop structures: contiguous rows, rows side by side, and scalar.
  const auto run = [&](auto& logits, auto& grad) {
    ce_ref::Output<T> r;
    r.losses = Vec<T>::Constant(n, T(-7));
    const auto go = [&](const auto& target) {
      if (mode == Mode::per_row) {
        smax::cross_entropy_per_row(logits, target, r.losses, dl, grad, o);
      } else {
        r.loss = smax::cross_entropy(logits, target, grad, o);
      }
    };
    if (probs) {
      go(t);
    } else {
      go(yv);
    }
    r.grad = grad;
    return r;
  };
  RowMat<T> xr = x, gr(n, k);
  ColMat<T> xc = x, gc(n, k);
  const ce_ref::Output<T> a = run(xr, gr);
  const ce_ref::Output<T> b = run(xc, gc);
  // Strided: every other element of a wider buffer, with a padded outer stride (scalar path).
  using Strided = Eigen::Map<ColMat<T>, 0, Eigen::Stride<Eigen::Dynamic, 2>>;
  std::vector<T> xbuf(static_cast<std::size_t>(2 * (n + 1) * k + 2)),
      gbuf(static_cast<std::size_t>(2 * (n + 1) * k + 2), T(-7));
  Strided xs(xbuf.data(), n, k, Eigen::Stride<Eigen::Dynamic, 2>(2 * (n + 1), 2));
  Strided gs(gbuf.data(), n, k, Eigen::Stride<Eigen::Dynamic, 2>(2 * (n + 1), 2));
  xs = x;
  const ce_ref::Output<T> s = run(xs, gs);
  // Blocks inside larger matrices (outer stride larger than the block).
  ColMat<T> bigx = ColMat<T>::Constant(n + 5, k + 3, T(1e3)),
            bigg = ColMat<T>::Constant(n + 5, k + 3, T(-7));
  auto xb = bigx.block(2, 1, n, k);
  auto gb = bigg.block(2, 1, n, k);
  xb = x;
  const ce_ref::Output<T> blk = run(xb, gb);

  for (const ce_ref::Output<T>* r : {&a, &b, &s, &blk}) {
    INFO((r == &a ? "row-major" : r == &b ? "column-major" : r == &s ? "strided" : "block"));
    if (mode == Mode::per_row) {
      CE_CHECK(ce_ref::check_row_losses<T>(ref, r->losses));
      for (Index i = 0; i < n; ++i) {
        INFO("row " << i);
        const ld l = r->losses(i), la = a.losses(i);
        CHECK(std::fabs(l - la) <=
              ce_ref::layout_eps * ce_ref::eps<T> * (std::fabs(la) + ref.row_scale(i)));
      }
    } else {
      CE_CHECK(ce_ref::check_loss<T>(ref.loss, r->loss, ref.loss_scale));
      if (std::isnan(a.loss)) {  // every row ignored
        CHECK(std::isnan(r->loss));
      } else {
        CHECK(std::fabs(static_cast<ld>(r->loss) - a.loss) <=
              ce_ref::layout_eps * ce_ref::eps<T> *
                  (std::fabs(static_cast<ld>(a.loss)) + ref.loss_scale));
      }
    }
    CE_CHECK(ce_ref::check_grad<T>(ref, r->grad));
    // Against each other: a few ulps of each row's largest term.
    ce_ref::Result other = ref;
    other.grad = ce_ref::to_ld(a.grad);
    CE_CHECK(ce_ref::check_grad<T>(other, r->grad, ce_ref::layout_eps));
  }
  // Nothing outside the views was touched.
  for (Index i = 0; i < bigg.rows(); ++i)
    for (Index j = 0; j < bigg.cols(); ++j)
      if (i < 2 || i >= n + 2 || j < 1 || j >= k + 1) REQUIRE(bigg(i, j) == T(-7));
  for (std::size_t e = 0; e < gbuf.size(); ++e) {
    const Index ii = static_cast<Index>(e);
    const Index col = ii / (2 * (n + 1)), off = ii % (2 * (n + 1));
    if (!(col < k && off % 2 == 0 && off / 2 < n)) REQUIRE(gbuf[e] == T(-7));
  }
}

TEMPLATE_TEST_CASE("a grad in another layout than the logits gets the same bits",
                   "[cross_entropy][layout]", float, double) {
  using T = TestType;
  const Combo c = GENERATE(from_range(ce_ref::all_combos()));
  const bool probs = GENERATE(false, true);
  if (probs && c.ignore != 0) return;
  const Index n = 11, k = 10;
  INFO(ce_ref::type_name<T>() << ", " << c.describe() << (probs ? ", probability targets" : ""));
  const std::uint64_t seed = ce_ref::seed_of(5, sizeof(T));
  const RowMat<T> xr = ce_ref::logits<T>(n, k, seed, c.capped ? 8.0 : 3.0);
  const ColMat<T> xc = xr;
  const smax::CrossEntropyOptions o = ce_ref::options_of(c, k, seed);
  const RowMat<T> t = ce_ref::probs<T>(n, k, seed + 2);
  const ColMat<T> tc = t;
  const auto yv = ce_ref::to_eigen(ce_ref::labels_of(c, n, k, seed + 2));
  const auto both = [&](const auto& x, const auto& target) {
    RowMat<T> g_r(n, k);
    ColMat<T> g_c(n, k);
    const T l_r = smax::cross_entropy(x, target, g_r, o);
    const T l_c = smax::cross_entropy(x, target, g_c, o);
    CHECK(ce_ref::same_bits_scalar(l_r, l_c));
    CHECK(ce_ref::same_bits(g_r, g_c));
  };
  if (probs) {
    // The target in either layout too (the library copies a foreign one into the logits').
    both(xr, t);
    both(xr, tc);
    both(xc, t);
    both(xc, tc);
  } else {
    both(xr, yv);
    both(xc, yv);
  }
}

TEMPLATE_TEST_CASE("in place and out of place agree bit for bit", "[cross_entropy][in_place]",
                   float, double) {
  using T = TestType;
  const Combo c = GENERATE(from_range(ce_ref::all_combos()));
  const bool probs = GENERATE(false, true);
  if (probs && c.ignore != 0) return;
  const Mode mode = GENERATE(Mode::mean, Mode::sum, Mode::per_row);
  const bool row_major = GENERATE(false, true);
  const auto shape = GENERATE(values<std::pair<Index, Index>>({{1, 5}, {9, 17}, {21, 40}}));
  const Index n = shape.first, k = shape.second;
  INFO(ce_ref::type_name<T>() << ", " << c.describe() << (probs ? ", probability targets" : "")
                              << ", " << ce_ref::name(mode)
                              << (row_major ? ", row-major" : ", column-major") << ", N = " << n
                              << ", K = " << k);
  const std::uint64_t seed = ce_ref::seed_of(6, n, k, sizeof(T));
  const RowMat<T> x = ce_ref::logits<T>(n, k, seed, c.capped ? 8.0 : 3.0);
  const smax::CrossEntropyOptions o = ce_ref::options_of(c, k, seed, mode);
  const Vec<T> dl = ce_ref::dloss<T>(n, seed + 1);
  const RowMat<T> t = ce_ref::probs<T>(n, k, seed + 2);
  const auto yv = ce_ref::to_eigen(ce_ref::labels_of(c, n, k, seed + 2));
  const auto twice = [&](const auto& target) {
    using ce_ref::call;
    const ce_ref::Output<T> out = row_major ? call<Eigen::RowMajor>(x, target, o, mode, dl)
                                            : call<Eigen::ColMajor>(x, target, o, mode, dl);
    const ce_ref::Output<T> in = row_major ? call<Eigen::RowMajor>(x, target, o, mode, dl, true)
                                           : call<Eigen::ColMajor>(x, target, o, mode, dl, true);
    CHECK(ce_ref::same_bits_scalar(out.loss, in.loss));
    CHECK(ce_ref::same_bits(out.grad, in.grad));
    CHECK(ce_ref::same_bits(out.losses, in.losses));
  };
  if (probs) {
    twice(t);
  } else {
    twice(yv);
  }
}

TEMPLATE_TEST_CASE("in place on a block of a larger matrix", "[cross_entropy][in_place]", float,
                   double) {
  using T = TestType;
  const Index n = 10, k = 12;
  const RowMat<T> x = ce_ref::logits<T>(n, k, ce_ref::seed_of(7, sizeof(T)));
  const auto yv = ce_ref::to_eigen(ce_ref::labels(n, k, 8, 0.2));
  smax::CrossEntropyOptions o;
  o.label_smoothing = 0.1;
  o.softcap = 4;
  ColMat<T> big = ColMat<T>::Constant(n + 3, k + 2, T(5));
  big.block(1, 2, n, k) = x;
  // Out of place on the same block: packed logits of fewer rows than a vector would take the
  // interleaved loop, a block of them the partial vector of rows (the same function, other bits).
  const ColMat<T> big_copy = big;
  ColMat<T> g(n, k);
  const T loss = smax::cross_entropy(big_copy.block(1, 2, n, k), yv, g, o);
  const T loss_in = smax::cross_entropy(big.block(1, 2, n, k), yv, big.block(1, 2, n, k), o);
  CHECK(ce_ref::same_bits_scalar(loss, loss_in));
  CHECK(ce_ref::same_bits(big.block(1, 2, n, k), g));
  CHECK((big.topRows(1).array() == T(5)).all());
  CHECK((big.bottomRows(2).array() == T(5)).all());
  CHECK((big.leftCols(2).array() == T(5)).all());
}

TEMPLATE_TEST_CASE("a column-major batch with a class stride of 4 KiB gives the same bits",
                   "[cross_entropy][layout]", float, double) {
  // Every class vector of a group on one L1 set: groups of 5 to 128 classes run in a stack tile
  // (the same arithmetic as in place, which a stride one vector longer takes).
  using T = TestType;
  const Index l = ce_ref::lanes<T>;
  const Index n = 2 * l + 3;
  const Index k = GENERATE(Index(9), Index(64), Index(128));
  const int m = GENERATE(0, 31);
  const bool probs = GENERATE(false, true);
  const Combo c = ce_ref::all_combos()[static_cast<std::size_t>(m)];
  if (probs && c.ignore != 0) return;
  INFO(ce_ref::type_name<T>() << ", " << c.describe() << (probs ? ", probability targets" : "")
                              << ", K = " << k);
  const std::uint64_t seed = ce_ref::seed_of(16, k, sizeof(T));
  const RowMat<T> x = ce_ref::logits<T>(n, k, seed, c.capped ? 8.0 : 3.0);
  const smax::CrossEntropyOptions o = ce_ref::options_of(c, k, seed);
  const RowMat<T> t = ce_ref::probs<T>(n, k, seed + 2);
  const auto yv = ce_ref::to_eigen(ce_ref::labels_of(c, n, k, seed + 2));
  const auto run = [&](Index stride) {
    ColMat<T> bx(stride, k), bt(stride, k), bg = ColMat<T>::Constant(stride, k, T(-7));
    bx.topRows(n) = x;
    bt.topRows(n) = t;
    auto g = bg.topRows(n);
    const T loss = probs ? smax::cross_entropy(bx.topRows(n), bt.topRows(n), g, o)
                         : smax::cross_entropy(bx.topRows(n), yv, g, o);
    return std::make_pair(loss, RowMat<T>(g));
  };
  const auto crowded = run(4096 / static_cast<Index>(sizeof(T)));
  const auto spread = run(4096 / static_cast<Index>(sizeof(T)) + l);
  CHECK(ce_ref::same_bits_scalar(crowded.first, spread.first));
  CHECK(ce_ref::same_bits(crowded.second, spread.second));
}

// ---- label vectors and target views
// --------------------------------------------------------------

TEMPLATE_TEST_CASE("every kind of label vector gives the same bits", "[cross_entropy][labels]",
                   float, double) {
  using T = TestType;
  const Index n = GENERATE(Index(1), Index(7), Index(18));
  const Index k = 9;
  const bool row_major = GENERATE(false, true);
  INFO(ce_ref::type_name<T>() << ", N = " << n << (row_major ? ", row-major" : ", column-major"));
  const RowMat<T> x = ce_ref::logits<T>(n, k, ce_ref::seed_of(9, n, sizeof(T)));
  const ce_ref::Labels y = ce_ref::labels(n, k, ce_ref::seed_of(10, n), 0.2);
  smax::CrossEntropyOptions o;
  o.label_smoothing = 0.05;
  o.class_weights = ce_ref::weights(k, 11);

  const auto run = [&](const auto& labels) {
    std::pair<T, RowMat<T>> r;
    if (row_major) {
      RowMat<T> g(n, k);
      r.first = smax::cross_entropy(x, labels, g, o);
      r.second = g;
    } else {
      const ColMat<T> xc = x;
      ColMat<T> g(n, k);
      r.first = smax::cross_entropy(xc, labels, g, o);
      r.second = g;
    }
    return r;
  };
  const Eigen::VectorXi y32 = ce_ref::to_eigen<int>(y);
  const auto base = run(y32);
  const auto same = [&](const std::pair<T, RowMat<T>>& r) {
    CHECK(ce_ref::same_bits_scalar(r.first, base.first));
    CHECK(ce_ref::same_bits(r.second, base.second));
  };
  SECTION("Eigen::Matrix<int64_t, -1, 1>") { same(run(ce_ref::to_eigen<std::int64_t>(y))); }
  SECTION("a RowVector") {
    const Eigen::RowVectorXi row = y32.transpose();
    same(run(row));
    same(run(y32.transpose()));
  }
  SECTION("a Map over a std::vector<int64_t>") {
    const Eigen::Map<const Eigen::Matrix<std::int64_t, Eigen::Dynamic, 1>> m(y.data(), n);
    same(run(m));
  }
  SECTION("a strided Map (every third int64 of a buffer)") {
    std::vector<std::int64_t> buf(static_cast<std::size_t>(3 * n), 99);
    for (Index i = 0; i < n; ++i) buf[static_cast<std::size_t>(3 * i)] = y[i];
    const Eigen::Map<const Eigen::Matrix<std::int64_t, Eigen::Dynamic, 1>, 0, Eigen::InnerStride<3>>
        m(buf.data(), n);
    same(run(m));
  }
  SECTION("a column of a row-major label matrix (strided)") {
    Eigen::Matrix<int, Eigen::Dynamic, 2, Eigen::RowMajor> two(n, 2);
    two.col(0).setConstant(55);
    two.col(1) = y32;
    same(run(two.col(1)));
  }
  SECTION("narrow and unsigned integer types") {
    same(run(y32.cast<std::int16_t>()));
    Eigen::Matrix<std::uint32_t, Eigen::Dynamic, 1> u(n);
    smax::CrossEntropyOptions o2 = o;
    for (Index i = 0; i < n; ++i) u(i) = y[i] < 0 ? 1000u : static_cast<std::uint32_t>(y[i]);
    o2.ignore_index = 1000;
    RowMat<T> g(n, k);
    const T l = smax::cross_entropy(x, u, g, o2);
    RowMat<T> g2(n, k);
    const T l2 = smax::cross_entropy(x, y32, g2, o);
    CHECK(ce_ref::same_bits_scalar(l, l2));
    CHECK(ce_ref::same_bits(g, g2));
  }
  SECTION("an expression (evaluated once)") { same(run(y32.array().matrix() + 0 * y32)); }
}

TEMPLATE_TEST_CASE("probability targets as blocks, Maps and expressions give the same bits",
                   "[cross_entropy][targets]", float, double) {
  using T = TestType;
  const Index n = GENERATE(Index(1), Index(6), Index(17));
  const Index k = 11;
  const bool row_major = GENERATE(false, true);
  INFO(ce_ref::type_name<T>() << ", N = " << n << (row_major ? ", row-major" : ", column-major"));
  const RowMat<T> x = ce_ref::logits<T>(n, k, ce_ref::seed_of(12, n, sizeof(T)));
  const RowMat<T> t = ce_ref::probs<T>(n, k, ce_ref::seed_of(13, n));
  smax::CrossEntropyOptions o;
  o.label_smoothing = 0.2;
  o.class_weights = ce_ref::weights(k, 14);
  o.z_loss = 1e-3;

  const auto run = [&](const auto& target) {
    std::pair<T, RowMat<T>> r;
    if (row_major) {
      RowMat<T> g(n, k);
      r.first = smax::cross_entropy(x, target, g, o);
      r.second = g;
    } else {
      const ColMat<T> xc = x;
      ColMat<T> g(n, k);
      r.first = smax::cross_entropy(xc, target, g, o);
      r.second = g;
    }
    return r;
  };
  const auto base = run(t);
  const auto same = [&](const std::pair<T, RowMat<T>>& r) {
    CHECK(ce_ref::same_bits_scalar(r.first, base.first));
    CHECK(ce_ref::same_bits(r.second, base.second));
  };
  same(run(ColMat<T>(t)));
  RowMat<T> big_r = RowMat<T>::Constant(n + 4, k + 5, T(9));
  big_r.block(3, 2, n, k) = t;
  same(run(big_r.block(3, 2, n, k)));
  ColMat<T> big_c = ColMat<T>::Constant(n + 4, k + 5, T(9));
  big_c.block(1, 4, n, k) = t;
  same(run(big_c.block(1, 4, n, k)));
  std::vector<T> buf(static_cast<std::size_t>(n * (k + 3)), T(9));
  Eigen::Map<RowMat<T>, 0, Eigen::OuterStride<>> m(buf.data(), n, k, Eigen::OuterStride<>(k + 3));
  m = t;
  same(run(m));
  std::vector<T> sbuf(static_cast<std::size_t>(2 * n * k), T(9));
  Eigen::Map<RowMat<T>, 0, Eigen::Stride<Eigen::Dynamic, 2>> strided(
      sbuf.data(), n, k, Eigen::Stride<Eigen::Dynamic, 2>(2 * k, 2));
  strided = t;
  same(run(strided));                    // every other element: copied into the logits' layout
  same(run(t.array().matrix() * T(1)));  // an expression, evaluated once
  same(run(t.transpose().transpose()));
}

#endif  // SMAX_TEST_KERNEL_PATHS_ONLY
