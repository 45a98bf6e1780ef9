// The raw-pointer kernels of smax::detail, called directly with the no-SIMD fallback
// (scalar_arch) and with the build's widest vectors (best_arch), on each of the three memory
// paths the driver picks (path_of: contiguous, across, scalar), out of place and in place,
// against the long double reference with the budgets of reference.hpp. Memory outside the
// described elements must stay untouched.
#include "reference.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <utility>
#include <vector>

namespace {

using ref::Index;
using ref::ld;
using smax::detail::path;
using smax::detail::per_dist;
using smax::detail::strided;
template <class T>
using RowMatX = ref::Mat<T>;

template <class Arch, class T>
struct on {
  using arch = Arch;
  using type = T;
};
using scalar_float = on<smax::detail::scalar_arch, float>;
using scalar_double = on<smax::detail::scalar_arch, double>;
using best_float = on<smax::detail::best_arch, float>;
using best_double = on<smax::detail::best_arch, double>;

const char* name(path p) {
  switch (p) {
    case path::contiguous:
      return "contiguous";
    case path::across:
      return "across";
    case path::scalar:
      return "scalar";
  }
  return "?";
}

/// Where element j of distribution i lives: i * ds + j * cs, with strides chosen so that the
/// driver takes path p: unit class stride (contiguous, rows padded by `pad`), unit distribution
/// stride (across, columns padded by `pad`), or neither (scalar, interleaved). pad = 0: rows
/// (columns) follow each other, as in a plain matrix (the rows-in-lanes tiles of such rows are
/// dense).
struct layout {
  Index ds, cs, extent;
  layout(path p, Index n, Index k, Index pad = 3) {
    switch (p) {
      case path::contiguous:
        ds = k + pad, cs = 1;
        break;
      case path::across:
        ds = 1, cs = n + pad;
        break;
      case path::scalar:
        ds = 2, cs = 2 * n + 3 + pad;
        break;
    }
    extent = n > 0 && k > 0 ? (n - 1) * ds + (k - 1) * cs + 1 + 2 : 2;  // 2 spare at the end
  }
  Index at(Index i, Index j) const { return i * ds + j * cs; }
};

template <class T>
std::vector<T> place(const RowMatX<T>& m, const layout& lay, T fill) {
  std::vector<T> buf(static_cast<std::size_t>(lay.extent), fill);
  for (Index i = 0; i < m.rows(); ++i)
    for (Index j = 0; j < m.cols(); ++j) buf[static_cast<std::size_t>(lay.at(i, j))] = m(i, j);
  return buf;
}

template <class T>
ref::LMat gather(const std::vector<T>& buf, const layout& lay, Index n, Index k) {
  ref::LMat m(n, k);
  for (Index i = 0; i < n; ++i)
    for (Index j = 0; j < k; ++j) m(i, j) = buf[static_cast<std::size_t>(lay.at(i, j))];
  return m;
}

/// Whether every element of buf that is not one of the n x k described still holds `fill`.
template <class T>
bool untouched_outside(const std::vector<T>& buf, const layout& lay, Index n, Index k, T fill) {
  std::vector<bool> inside(buf.size(), false);
  for (Index i = 0; i < n; ++i)
    for (Index j = 0; j < k; ++j) inside[static_cast<std::size_t>(lay.at(i, j))] = true;
  for (std::size_t e = 0; e < buf.size(); ++e)
    if (!inside[e] && !(buf[e] == fill)) return false;
  return true;
}

template <class T>
strided<const T> view(const std::vector<T>& buf, const layout& lay) {
  return {buf.data(), lay.ds, lay.cs};
}
template <class T>
strided<T> view(std::vector<T>& buf, const layout& lay) {
  return {buf.data(), lay.ds, lay.cs};
}

/// K and N around the vector width of T in this build: the across path's groups of rows, the
/// contiguous path's vectors, partial tails and 16-vector summation blocks, half a vector, 3/8 of
/// one (the largest K of dense tiles), and around the largest K that the contiguous path processes
/// with rows in lanes: L (backward passes) and 64 (softmax, log_softmax, logsumexp). 127-129,
/// around cross-entropy's limit (its tiles are tested in test_cross_entropy), are rows here.
template <class T>
std::vector<Index> kernel_class_counts() {
  const Index l = ref::lanes<T>, h = l / 2 > 1 ? l / 2 : 2, dense = 3 * l / 8;
  std::vector<Index> k = {
      0,  1,     2,         3,     h - 1,      h,      h + 1,      dense,      dense + 1, l - 1,
      l,  l + 1, 2 * l + 1, 4 * l, 4 * l + 1,  15,     16,         17,         63,        64,
      65, 127,   128,       129,   16 * l - 1, 16 * l, 16 * l + 1, 64 * l + 3, 1000};
  std::sort(k.begin(), k.end());
  k.erase(std::unique(k.begin(), k.end()), k.end());
  if (k.front() == 0) k.erase(k.begin());  // n = L: one class per period
  return k;
}
template <class T>
std::vector<Index> kernel_batch_sizes() {
  const Index l = ref::lanes<T>;
  std::vector<Index> n = {0, 1, 2, l - 1, l, l + 1, 2 * l + 3};
  std::sort(n.begin(), n.end());
  n.erase(std::unique(n.begin(), n.end()), n.end());
  return n;
}

/// Every kernel with Arch on the n x k logits x placed by `lay`, out of place and in place,
/// against the reference, and nothing outside the n x k elements written: softmax, log_softmax,
/// logsumexp (into a contiguous and a strided vector), and the backward passes on inputs of
/// scenario `bs`.
template <class Arch, class T>
void check_every_kernel(Index n, Index k, const layout& lay, const RowMatX<T>& x,
                        ref::scenario bs) {
  namespace d = smax::detail;
  const T fill = T(-4321);
  const ref::LMat xl = ref::to_ld(x);
  const std::vector<T> xb = place(x, lay, fill);
  std::vector<T> yb(xb.size(), fill);
  {
    INFO("softmax and log_softmax");
    d::softmax<Arch>(n, k, view(xb, lay), view(yb, lay));
    REF_CHECK(ref::check_softmax<T>(xl, gather(yb, lay, n, k)));
    CHECK(untouched_outside(yb, lay, n, k, fill));
    std::fill(yb.begin(), yb.end(), fill);
    d::log_softmax<Arch>(n, k, view(xb, lay), view(yb, lay));
    REF_CHECK(ref::check_log_softmax<T>(xl, gather(yb, lay, n, k)));
    CHECK(untouched_outside(yb, lay, n, k, fill));

    std::vector<T> a = xb;  // in place: input and output the same view
    d::softmax<Arch>(n, k, view(std::as_const(a), lay), view(a, lay));
    REF_CHECK(ref::check_softmax<T>(xl, gather(a, lay, n, k)));
    CHECK(untouched_outside(a, lay, n, k, fill));
    a = xb;
    d::log_softmax<Arch>(n, k, view(std::as_const(a), lay), view(a, lay));
    REF_CHECK(ref::check_log_softmax<T>(xl, gather(a, lay, n, k)));
  }
  for (const Index stride : {Index{1}, Index{3}}) {
    INFO("logsumexp, output stride " << stride);
    std::vector<T> out(static_cast<std::size_t>(n * stride + 2), fill);
    d::logsumexp<Arch>(n, k, view(xb, lay), per_dist<T>{out.data(), stride});
    ref::LMat got(n, 1);
    for (Index i = 0; i < n; ++i) got(i, 0) = out[static_cast<std::size_t>(i * stride)];
    REF_CHECK(ref::check_logsumexp<T>(xl, got));
    for (std::size_t e = 0; e < out.size(); ++e)
      if (static_cast<Index>(e) >= n * stride || static_cast<Index>(e) % stride != 0)
        CHECK(out[e] == fill);
  }
  {
    INFO("softmax_backward and log_softmax_backward, inputs: " << ref::name(bs));
    const auto in = ref::make_backward_inputs<T>(bs, n, k, ref::seed_of(7, n, k, sizeof(T)));
    const std::vector<T> y = place(in.y, lay, fill), dy = place(in.dy, lay, fill),
                         lp = place(in.logp, lay, fill), dlp = place(in.dlogp, lay, fill);
    const ref::LMat yl = ref::to_ld(in.y), dyl = ref::to_ld(in.dy);
    const ref::LMat lpl = ref::to_ld(in.logp), dlpl = ref::to_ld(in.dlogp);
    std::fill(yb.begin(), yb.end(), fill);
    d::softmax_backward<Arch>(n, k, view(y, lay), view(dy, lay), view(yb, lay));
    REF_CHECK(ref::check_softmax_backward<T>(yl, dyl, gather(yb, lay, n, k)));
    CHECK(untouched_outside(yb, lay, n, k, fill));
    std::fill(yb.begin(), yb.end(), fill);
    d::log_softmax_backward<Arch>(n, k, view(lp, lay), view(dlp, lay), view(yb, lay));
    REF_CHECK(ref::check_log_softmax_backward<T>(lpl, dlpl, gather(yb, lay, n, k)));
    CHECK(untouched_outside(yb, lay, n, k, fill));

    std::vector<T> a = dy;  // dx over dy
    d::softmax_backward<Arch>(n, k, view(y, lay), view(std::as_const(a), lay), view(a, lay));
    REF_CHECK(ref::check_softmax_backward<T>(yl, dyl, gather(a, lay, n, k)));
    a = lp;  // dx over logp
    d::log_softmax_backward<Arch>(n, k, view(std::as_const(a), lay), view(dlp, lay), view(a, lay));
    REF_CHECK(ref::check_log_softmax_backward<T>(lpl, dlpl, gather(a, lay, n, k)));
  }
}

}  // namespace

TEMPLATE_TEST_CASE("raw kernels match the reference on every memory path, scalar and SIMD",
                   "[kernels]", scalar_float, scalar_double, best_float, best_double) {
  using Arch = typename TestType::arch;
  using T = typename TestType::type;
  namespace d = smax::detail;
  const path p = GENERATE(path::contiguous, path::across, path::scalar);
  const Index k = GENERATE(from_range(kernel_class_counts<T>()));
  const Index n = GENERATE(from_range(kernel_batch_sizes<T>()));
  const ref::scenario s = GENERATE(ref::scenario::standard, ref::scenario::mixed);
  const Index pad = GENERATE(3, 0);
  INFO(Arch::name() << ", " << ref::type_name<T>() << ", path " << name(p) << ", K = " << k
                    << ", N = " << n << ", padding " << pad << ", inputs: " << ref::name(s));
  const layout lay(p, n, k, pad);
  const RowMatX<T> x = ref::logits<T>(s, n, k, ref::seed_of(static_cast<std::uint64_t>(s), n, k));
  // The driver picks the path this layout is for (with one class or one distribution several
  // paths fit, and it may pick any of them).
  const std::vector<T> xb = place(x, lay, T(0));
  std::vector<T> yb(xb.size());
  if (n >= 2 && k >= 2) CHECK(d::path_of(n, k, view(xb, lay), view(yb, lay)) == p);
  check_every_kernel<Arch>(n, k, lay, x, ref::scenario::standard);
}

/// K for n interleaved distributions (a vector every w = floor(L / n) * n elements, or every L
/// elements in P = n / gcd(n, L) phases): a few classes, one element either side of whole
/// vectors, of a period of the phases and of the 16-vector summation blocks, several blocks, a
/// long row.
std::vector<Index> interleaved_class_counts(Index l, Index n) {
  const Index per_vector = l / n;  // classes per vector
  const Index period = l / std::gcd(l, n);  // classes per period of the phases
  std::vector<Index> k = {1,
                          period - 1,
                          period + 1,
                          16 * period + 1,
                          2,
                          3,
                          per_vector,
                          per_vector + 1,
                          2 * per_vector + 1,
                          16 * per_vector,
                          16 * per_vector + 1,
                          17 * per_vector - 1,
                          64 * per_vector + 3,
                          1000};
  std::sort(k.begin(), k.end());
  k.erase(std::unique(k.begin(), k.end()), k.end());
  return k;
}

TEMPLATE_TEST_CASE("fewer distributions than lanes, interleaved in memory (every such batch)",
                   "[kernels]", float, double) {
  // n x k column-major with class stride n and 1 < n < L: the driver reads it as one array, lane
  // l of each vector holding distribution l mod n (interleaved_group); n = L takes the across
  // group. Out of place and in place, against the reference; nothing past the n x k elements
  // is written.
  using T = TestType;
  namespace d = smax::detail;
  using Arch = d::best_arch;
  const Index l = ref::lanes<T>;
  std::vector<Index> batches;
  for (Index n = 2; n <= l; ++n) batches.push_back(n);
  const Index n = GENERATE_COPY(from_range(batches));
  const Index k = GENERATE_COPY(from_range(interleaved_class_counts(l, n)));
  // offset -1e4: a max taken over lanes that hold no element (0) would make every exp 0.
  const ref::scenario s =
      GENERATE(ref::scenario::standard, ref::scenario::offset_down, ref::scenario::mixed);
  INFO(Arch::name() << ", " << ref::type_name<T>() << ", K = " << k << ", N = " << n
                    << ", inputs: " << ref::name(s));
  const layout lay(path::across, n, k, 0);
  REQUIRE(lay.cs == n);
  if (n < l) {  // every lane where lanes permute (then P = N / gcd(N, L) phases), else w of them
    using V = d::vec_t<T, Arch>;
    const d::interleaved_group<V> g(k, n);
    CHECK(g.w == (d::has_permute2<V>() ? l : l / n * n));
    CHECK(g.phases == (d::has_permute2<V>() ? n / std::gcd(n, l) : 1));
  }
  const RowMatX<T> x = ref::logits<T>(s, n, k, ref::seed_of(static_cast<std::uint64_t>(s), n, k));
  check_every_kernel<Arch>(n, k, lay, x, s);
}

TEMPLATE_TEST_CASE("an interleaved block too large for every lane keeps floor(L / N) N of them",
                   "[kernels]", float, double) {
  // Beyond phased_max_bytes the interleaved group reads a vector every floor(L / N) N elements
  // (one phase), where L - 1 rows use L - 1 lanes: one block just past the bound.
  using T = TestType;
  namespace d = smax::detail;
  using Arch = d::best_arch;
  using G = d::interleaved_group<d::vec_t<T, Arch>>;
  const Index n = ref::lanes<T> - 1;
  if (n < 2) return;  // no interleaved batches (SSE2 doubles)
  const Index k =
      static_cast<Index>(G::phased_max_bytes / (static_cast<std::size_t>(n) * sizeof(T))) + 1;
  INFO(Arch::name() << ", " << ref::type_name<T>() << ", K = " << k << ", N = " << n);
  REQUIRE(G(k, n).phases == 1);
  REQUIRE(G(k, n).w == n);
  const layout lay(path::across, n, k, 0);
  const RowMatX<T> x = ref::logits<T>(ref::scenario::standard, n, k, ref::seed_of(22, n, k));
  check_every_kernel<Arch>(n, k, lay, x, ref::scenario::standard);
}

TEMPLATE_TEST_CASE("rows in lanes at every K up to the vector width, each K its own loop",
                   "[kernels]", float, double) {
  // Rows of 2 to L classes run in tiles whose class count is a compile-time constant (one
  // instantiation per K, each inlining the kernel; dense tiles up to 3L/8 classes, square
  // transposes above): every kernel against the reference, in place and out, and nothing
  // outside the rows written. (Not bit for bit against the column-major batch, whose groups
  // run the same operations with a run-time K: under GCC's default -ffp-contract=fast, which
  // multiply-adds become FMAs depends on how each instantiation is optimized.)
  using T = TestType;
  using Arch = smax::detail::best_arch;
  const Index l = ref::lanes<T>;
  const Index k = GENERATE_COPY(range(Index(1), l + 2));
  const Index n = GENERATE_COPY(values<Index>({l, 2 * l + 3}));
  const Index pad = GENERATE(0, 3);
  const ref::scenario s = GENERATE(ref::scenario::standard, ref::scenario::mixed);
  INFO(Arch::name() << ", " << ref::type_name<T>() << ", K = " << k << ", N = " << n << ", padding "
                    << pad << ", inputs: " << ref::name(s));
  const layout rows(path::contiguous, n, k, pad);
  const RowMatX<T> x = ref::logits<T>(s, n, k, ref::seed_of(23, n, k));
  check_every_kernel<Arch>(n, k, rows, x, s);
}

TEMPLATE_TEST_CASE("the last rows of a batch across memory: copied into rows, or a partial vector",
                   "[kernels]", float, double) {
  // n mod L rows left past the last whole vector of rows: one or two of copied_row_min classes
  // or more, and at most copied_row_bytes, are each copied into a contiguous stack row and run
  // there; others run in one partial vector. Either side of each limit, every kernel against the
  // reference, in place and out, nothing else written.
  using T = TestType;
  namespace d = smax::detail;
  using Arch = d::best_arch;
  const Index l = ref::lanes<T>;
  const Index most = static_cast<Index>(d::copied_row_bytes / sizeof(T));
  const Index k =
      GENERATE_COPY(values<Index>({d::copied_row_min - 1, d::copied_row_min, most, most + 1}));
  const Index n = GENERATE_COPY(values<Index>({1, 2, l + 1, l + 2, l + 3}));
  INFO(Arch::name() << ", " << ref::type_name<T>() << ", K = " << k << ", N = " << n);
  const layout lay(path::across, n, k, 1);
  const RowMatX<T> x = ref::logits<T>(ref::scenario::mixed, n, k, ref::seed_of(24, n, k));
  check_every_kernel<Arch>(n, k, lay, x, ref::scenario::mixed);
}

TEMPLATE_TEST_CASE("distributions across memory on a few 4 KiB offsets go through tiles",
                   "[kernels]", float, double) {
  // A column-major batch whose class stride is 4 KiB: every class vector of a group on one L1
  // set. Groups of more than 4 and up to 128 classes are copied into a stack tile and run there
  // (crowded), with the arithmetic of the direct loop: against the reference, and the same bits
  // as a class stride one vector longer, which the driver runs in place.
  using T = TestType;
  namespace d = smax::detail;
  using Arch = d::best_arch;
  using V = d::vec_t<T, Arch>;
  const Index l = ref::lanes<T>;
  const Index n = GENERATE_COPY(values<Index>({l, 2 * l + 3}));
  const Index k = GENERATE(Index(2), Index(4), Index(5), Index(8), Index(9), Index(17), Index(64),
                           Index(128), Index(129));
  const Index stride = 4096 / static_cast<Index>(sizeof(T));
  INFO(Arch::name() << ", " << ref::type_name<T>() << ", K = " << k << ", N = " << n);
  const layout crowded(path::across, n, k, stride - n), spread(path::across, n, k, stride + l - n);
  REQUIRE(crowded.cs == stride);
  const RowMatX<T> x = ref::logits<T>(ref::scenario::mixed, n, k, ref::seed_of(21, n, k));
  const std::vector<T> xc = place(x, crowded, T(0)), xs = place(x, spread, T(0));
  if (!d::is_scalar_v<V>) {
    CHECK(d::crowded<V>(view(xc, crowded), k));
    CHECK(!d::crowded<V>(view(xs, spread), k));
  }
  check_every_kernel<Arch>(n, k, crowded, x, ref::scenario::mixed);
  // The same bits either way (the elements each layout holds, compared in place), or NaN in both:
  // which NaN an operation returns depends on the order of its operands in the instruction.
  std::vector<T> yc(xc.size()), ys(xs.size());
  const auto same = [&](const char* what) {
    INFO(what);
    for (Index i = 0; i < n; ++i)
      for (Index j = 0; j < k; ++j) {
        const T a = yc[static_cast<std::size_t>(crowded.at(i, j))];
        const T b = ys[static_cast<std::size_t>(spread.at(i, j))];
        REQUIRE((std::memcmp(&a, &b, sizeof a) == 0 || (std::isnan(a) && std::isnan(b))));
      }
  };
  d::softmax<Arch>(n, k, view(xc, crowded), view(yc, crowded));
  d::softmax<Arch>(n, k, view(xs, spread), view(ys, spread));
  same("softmax");
  d::log_softmax<Arch>(n, k, view(xc, crowded), view(yc, crowded));
  d::log_softmax<Arch>(n, k, view(xs, spread), view(ys, spread));
  same("log_softmax");
  std::vector<T> dxc(xc.size()), dxs(xs.size());
  d::softmax_backward<Arch>(n, k, view(xc, crowded), view(std::as_const(yc), crowded),
                            view(dxc, crowded));
  d::softmax_backward<Arch>(n, k, view(xs, spread), view(std::as_const(ys), spread),
                            view(dxs, spread));
  yc = dxc, ys = dxs;
  same("softmax_backward");
}

TEMPLATE_TEST_CASE("the scalar fallback and the SIMD kernels agree closely", "[kernels]", float,
                   double) {
  // Both are checked against the reference above; here, on a long row and a batch of short
  // ones, they must also agree with each other to within the budget of either (a sanity check
  // that the two builds of one kernel compute the same function, not just accurate ones).
  using T = TestType;
  namespace d = smax::detail;
  const Index l = ref::lanes<T>;
  const Index n = GENERATE_COPY(Index(1), 4 * l + 1);
  const Index k = n == 1 ? 50257 : 3 * l + 2;
  const path p = GENERATE(path::contiguous, path::across);
  INFO("N = " << n << ", K = " << k << ", path " << name(p));
  const layout lay(p, n, k);
  const RowMatX<T> x = ref::logits<T>(ref::scenario::standard, n, k, ref::seed_of(8, n, k));
  const std::vector<T> xb = place(x, lay, T(0));
  std::vector<T> ys(xb.size()), yv(xb.size());
  d::softmax<d::scalar_arch>(n, k, view(xb, lay), view(ys, lay));
  d::softmax<d::best_arch>(n, k, view(xb, lay), view(yv, lay));
  const ref::LMat a = gather(ys, lay, n, k), b = gather(yv, lay, n, k);
  ref::verdict v("softmax scalar vs SIMD", ref::type_name<T>());
  for (Index i = 0; i < n; ++i)
    for (Index j = 0; j < k; ++j) {
      const ld unit = ref::ulp<T>(a(i, j));
      v.add<T>(i, j, b(i, j), a(i, j), unit,
               2 * ref::softmax_budget_ulps<T>(k, x(i, j) - x.row(i).maxCoeff()) * unit);
    }
  REF_CHECK(v);
}
