// Vocabulary-parallel cross-entropy (cross_entropy_shard_stats, merge_shard_stats,
// cross_entropy_shard, cross_entropy_from_stats) against the long double reference of
// ce_reference.hpp and the same budgets: the shards' gradients side by side are the whole
// gradient, every shard returns the loss of the whole vocabulary, for every option combination,
// splits with empty and fully masked shards, and bad input.
#include "ce_reference.hpp"

#include <initializer_list>

#include <cstdint>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

using ce_ref::Index;
using ce_ref::ld;
using ce_ref::RowMat;
template <class T>
using Stats = Eigen::Matrix<T, Eigen::Dynamic, smax::shard_stats_width, Eigen::RowMajor>;

/// Labels from a list (not a comma-initializer's .finished(): g++ -O1 warns, falsely, that the
/// copy reads uninitialized memory).
Eigen::VectorXi ints(std::initializer_list<int> v) {
  Eigen::VectorXi r(static_cast<Index>(v.size()));
  Index i = 0;
  for (int x : v) r(i++) = x;
  return r;
}

/// What the shards of one split return: each shard's loss, the gradient (its columns filled by
/// the shards), the merged statistics and cross_entropy_from_stats' loss.
template <class T>
struct Split {
  std::vector<T> losses;
  RowMat<T> grad;
  Stats<T> merged;
  T from_stats = 0;
};

/// The three steps on logits x split at `cuts` (0 = cuts[0] <= ... <= cuts.back() = K), as
/// every rank of an all-reduce would run them; the merge folds the shards in `order`.
template <class T>
Split<T> run_split(const RowMat<T>& x, const Eigen::VectorXi& y, const std::vector<Index>& cuts,
                   const std::vector<std::size_t>& order, const smax::CrossEntropyOptions& o) {
  const Index k = x.cols(), shards = static_cast<Index>(cuts.size()) - 1;
  const auto opts = [&](Index s) {
    smax::CrossEntropyOptions so = o;
    if (o.class_weights.size() != 0)
      so.class_weights = o.class_weights.segment(cuts[s], cuts[s + 1] - cuts[s]);
    return so;
  };
  std::vector<Stats<T>> stats;
  for (Index s = 0; s < shards; ++s)
    stats.push_back(smax::cross_entropy_shard_stats(
        x.middleCols(cuts[s], cuts[s + 1] - cuts[s]), y, cuts[s], k, opts(s)));
  Split<T> r;
  r.merged = stats[order[0]];
  for (std::size_t i = 1; i < order.size(); ++i) smax::merge_shard_stats(r.merged, stats[order[i]]);
  r.grad = RowMat<T>::Constant(x.rows(), k, T(7.25));
  for (Index s = 0; s < shards; ++s)
    r.losses.push_back(smax::cross_entropy_shard(x.middleCols(cuts[s], cuts[s + 1] - cuts[s]), y,
                                                 cuts[s], k, r.merged,
                                                 r.grad.middleCols(cuts[s], cuts[s + 1] - cuts[s]),
                                                 opts(s)));
  r.from_stats = smax::cross_entropy_from_stats(y, k, r.merged, o);
  return r;
}

Eigen::VectorXi to_int(const ce_ref::Labels& y) { return ce_ref::to_eigen<int>(y); }

template <class T>
bool same_bits(const Stats<T>& a, const Stats<T>& b) {
  return a.size() == b.size() &&
         std::memcmp(a.data(), b.data(), static_cast<std::size_t>(a.size()) * sizeof(T)) == 0;
}

}  // namespace

TEMPLATE_TEST_CASE("vocabulary-parallel: the shards' gradients are the whole gradient",
                   "[cross_entropy][shard]", float, double) {
  using T = TestType;
  const Index n = 7, k = 29;
  const auto combos = ce_ref::all_combos();
  const auto split = GENERATE(std::vector<Index>{0, 29}, std::vector<Index>{0, 0, 29},
                              std::vector<Index>{0, 11, 29}, std::vector<Index>{0, 1, 28, 29, 29});
  const ce_ref::Mode mode = GENERATE(ce_ref::Mode::mean, ce_ref::Mode::sum);
  for (std::size_t ci = 0; ci < combos.size(); ++ci) {
    const ce_ref::Combo& c = combos[ci];
    const std::uint64_t seed = ce_ref::seed_of(81, ci, sizeof(T), split.size());
    INFO(ce_ref::type_name<T>() << ", " << c.describe() << ", " << ce_ref::name(mode) << ", "
                                << split.size() - 1 << " shards, second cut " << split[1]);
    const RowMat<T> x = ce_ref::logits<T>(n, k, seed);
    const ce_ref::Labels y = ce_ref::labels_of(c, n, k, seed + 1);
    const smax::CrossEntropyOptions o = ce_ref::options_of(c, k, seed + 2, mode);
    const ce_ref::Result ref = ce_ref::cross_entropy(ce_ref::to_ld(x), y, o, mode);

    std::vector<std::size_t> forward(split.size() - 1), backward;
    for (std::size_t s = 0; s < forward.size(); ++s) forward[s] = s;
    backward.assign(forward.rbegin(), forward.rend());
    const Split<T> a = run_split<T>(x, to_int(y), split, forward, o);
    const Split<T> b = run_split<T>(x, to_int(y), split, backward, o);

    CE_CHECK(ce_ref::check_grad<T>(ref, a.grad));
    for (const T l : a.losses) CE_CHECK(ce_ref::check_loss<T>(ref.loss, l, ref.loss_scale));
    CE_CHECK(ce_ref::check_loss<T>(ref.loss, a.from_stats, ref.loss_scale, "from_stats loss"));
    // The merge is commutative bit for bit: two ranks that merge each other's statistics hold
    // the same ones, and so compute the same gradient. Over more shards the order of the
    // merges rounds differently (floating-point addition is not associative): within budget.
    if (split.size() == 3) {
      CHECK(same_bits(a.merged, b.merged));
      CHECK(std::memcmp(a.grad.data(), b.grad.data(), sizeof(T) * std::size_t(n * k)) == 0);
      CHECK(ce_ref::same_bits_scalar(a.from_stats, b.from_stats));
    } else {
      CE_CHECK(ce_ref::check_grad<T>(ref, b.grad));
      CE_CHECK(ce_ref::check_loss<T>(ref.loss, b.from_stats, ref.loss_scale, "from_stats loss"));
    }
    // Every shard returns the loss of the whole vocabulary, to within a few ulp (the kernel that
    // evaluates it depends on the shard's width); cross_entropy_from_stats is a function of the
    // merged statistics alone.
    // (NaN: mean over rows that are all ignored, as in PyTorch.)
    for (const T l : a.losses)
      CHECK(((std::isnan(l) && std::isnan(a.losses[0])) ||
             std::abs(l - a.losses[0]) <= 8 * ce_ref::eps<T> * std::abs(a.losses[0])));
  }
}

TEMPLATE_TEST_CASE("vocabulary-parallel: an empty or fully masked shard beside a very negative max",
                   "[cross_entropy][shard][special]", float, double) {
  using T = TestType;
  constexpr T inf = std::numeric_limits<T>::infinity();
  // Every logit of the row far below exp's range: an empty shard, or one whose logits are all
  // -inf, has the statistics (max -inf, sum 0); merging them must not form exp(0 - max) = inf.
  const T low = std::is_same<T, float>::value ? T(-1e30) : T(-1e300);
  RowMat<T> x(2, 3);
  x << -inf, low, low,  //
      -inf, -inf, T(-800);
  const Eigen::VectorXi y = ints({1, 2});
  smax::CrossEntropyOptions o;
  o.reduction = smax::Reduction::sum;
  for (const auto& split : {std::vector<Index>{0, 0, 3}, std::vector<Index>{0, 1, 3},
                            std::vector<Index>{0, 2, 3}, std::vector<Index>{0, 1, 1, 3}}) {
    INFO(ce_ref::type_name<T>() << ", " << split.size() - 1 << " shards, cut " << split[1]);
    const ce_ref::Result ref = ce_ref::cross_entropy(ce_ref::to_ld(x), ce_ref::Labels{1, 2}, o, ce_ref::Mode::sum);
    std::vector<std::size_t> order(split.size() - 1);
    for (std::size_t s = 0; s < order.size(); ++s) order[s] = s;
    const Split<T> r = run_split<T>(x, y, split, order, o);
    CHECK(ref.loss == Approx(double(std::log(2.0L))));  // row 0: ln 2; row 1: 0
    for (const T l : r.losses) CE_CHECK(ce_ref::check_loss<T>(ref.loss, l, ref.loss_scale));
    CE_CHECK(ce_ref::check_loss<T>(ref.loss, r.from_stats, ref.loss_scale, "from_stats loss"));
    CE_CHECK(ce_ref::check_grad<T>(ref, r.grad));
    CHECK(r.grad(0, 0) == T(0));
    CHECK(r.grad(1, 1) == T(0));
  }
}

TEST_CASE("vocabulary-parallel: bad input is named and nothing is written",
          "[cross_entropy][shard][errors]") {
  using Catch::Matchers::Contains;
  const RowMat<float> x = ce_ref::logits<float>(3, 5, 5);
  const Eigen::VectorXi y = ints({0, 4, 7});  // 7: in the vocabulary
  CHECK_THROWS_WITH(smax::cross_entropy_shard_stats(x, y, 4, 8),
                    Contains("smax::cross_entropy_shard_stats") && Contains("[4, 9)") &&
                        Contains("8"));
  CHECK_THROWS_AS(smax::cross_entropy_shard_stats(x, y, -1, 8), std::invalid_argument);
  const Eigen::VectorXi bad = ints({0, 8, 1});
  CHECK_THROWS_AS(smax::cross_entropy_shard_stats(x, bad, 0, 8), std::out_of_range);

  Stats<float> a = smax::cross_entropy_shard_stats(x, y, 0, 8);
  const Stats<float> keep = a;
  const Stats<float> fewer(2, smax::shard_stats_width);
  CHECK_THROWS_WITH(smax::merge_shard_stats(a, fewer),
                    Contains("smax::merge_shard_stats") && Contains("3") && Contains("2"));
  Eigen::MatrixXf narrow(3, 5);
  CHECK_THROWS_WITH(smax::merge_shard_stats(narrow, narrow), Contains("columns"));
  CHECK(same_bits(a, keep));

  RowMat<float> g = RowMat<float>::Constant(3, 4, 7.25f);  // the shard has 5 columns
  CHECK_THROWS_WITH(smax::cross_entropy_shard(x, y, 0, 8, a, g),
                    Contains("smax::cross_entropy_shard") && Contains("grad"));
  CHECK((g.array() == 7.25f).all());
}
