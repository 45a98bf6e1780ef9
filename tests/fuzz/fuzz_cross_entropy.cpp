// Differential fuzz target: smax's fused softmax-cross-entropy (smax::cross_entropy,
// smax::cross_entropy_per_row and the vocabulary-parallel calls) against the long double reference
// of fuzz_reference.hpp, with every option, class-index labels (int32 or int64, valid, ignored or
// out of range) or probability targets, on strided unaligned Maps, with the gradient separate, in
// place (grad is the logits) or overlapping the logits.
//
// Input format (every byte string is valid; see fuzz_common.hpp for the stream past the end):
//   0      flags: bit 0 double, bit 1 row-major, bit 2 probability targets, bit 3 int64 labels
//          (else int32), bits 4-6 the call (below), bit 7 the gradient in place
//   1..3   N = b1 & 63, K = b2 | (b3 & 15) << 8; N shrinks so that N*K <= 4096
//   4..7   seed of the stream past the end
//   8..9   value spec of the logits
//   10     bits 0-1 reduction (mean, sum, none, mean), bits 2-4 ignore_index
//          (-100, -100, -100, 0, 1, K-1, -1, INT64_MIN), bits 5-7 the label stream's rates
//   11..13 label_smoothing, z_loss, softcap: 0 below 128, else one of 16 values each, including
//          invalid ones (negative, > 1, NaN, inf) and extreme ones
//   14     class_weights: none below 128, else bits 0-2 the size (K, or a wrong one) and bits 3-6
//          how the weights are drawn
//   15     probability targets: how they are drawn
//   16     memory: bits 0-1 where grad lives (own buffer, in place, another view of the logits'
//          buffer, own buffer); bits 2-3 where losses live (own buffer, dloss itself, a view of the
//          logits' buffer, own buffer); bits 4-7 >= 12: one argument of the wrong shape (target,
//          grad, dloss, losses)
//   17     vocabulary-parallel calls: bits 0-1 number of shards - 1
//   18..27 layouts of the logits, target (labels or probabilities), grad, dloss, losses
//   then   N*K logits, N labels (2 bytes each) or N*K targets (1 byte each), the class weights
//          (1 byte each), N dloss values (1 byte each), shard boundaries (2 bytes each)
//
// The calls (flags bits 4-6): 0 cross_entropy(x, t, o); 1 and 5 cross_entropy(x, t, grad, o);
// 2 cross_entropy_per_row(x, t, losses, o); 3 and 6 cross_entropy_per_row(x, t, losses, dloss,
// grad, o); 4 cross_entropy_shard_stats + merge_shard_stats + cross_entropy_shard for every shard
// (the gradient assembled from the shards); 7 the same up to cross_entropy_from_stats (loss only).
//
// What is checked (budgets of tests/ce_reference.hpp, semantics of CONTRACT.md):
//   * the exception: std::invalid_argument exactly for K == 0, options out of range, class_weights
//     of the wrong size, Reduction::none in a reduced call, a wrong shape, grad or losses
//     overlapping the logits without being them; std::out_of_range exactly for a label outside
//     [0, K) that is not ignore_index (either one when both apply, as the order is not
//     documented); nothing else; and after a throw every buffer is untouched;
//   * no byte of any buffer changes except the elements of grad and losses;
//   * the loss (reduced or per row) within 1e-5 (float) / 1e-12 (double) relative plus the floor
//     8 eps sum_i |r_ce| A_i; an ignored row's loss exactly 0; NaN and infinities exactly;
//   * every gradient entry within 32 eps B_i; ignored rows (and dloss_i = 0) exactly 0; rows
//     with a NaN or +inf logit or all logits -inf are not checked (their gradient is not
//     specified), nor rows whose dloss is not finite, nor the gradient of `mean` when the valid
//     rows' weights sum to 0;
//   * accuracy is checked only for inputs the budgets are stated for: class weights and
//     probability targets finite, >= 0 and (when not 0) in [2^-60, 2^60]; other values (negative,
//     NaN, huge) make the loss a cancellation the relative budget does not cover, and are checked
//     for everything but accuracy;
//   * vocabulary-parallel: every shard returns the same loss, bit for bit.
#include <Eigen/Core>
#include <smax/smax.hpp>

#include "fuzz_common.hpp"
#include "fuzz_reference.hpp"

#include <algorithm>
#include <cstdint>
#include <exception>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

namespace {

using namespace smax_fuzz;
using Eigen::Dynamic;

enum class call { loss, grad, per_row, per_row_grad, shard, from_stats };

call call_of(int bits) {
  static const call table[8] = {call::loss,         call::grad,  call::per_row, call::per_row_grad,
                                call::shard,        call::grad,  call::per_row_grad,
                                call::from_stats};
  return table[bits & 7];
}
const char* name(call c) {
  switch (c) {
    case call::loss:
      return "smax::cross_entropy(logits, target, options)";
    case call::grad:
      return "smax::cross_entropy(logits, target, grad, options)";
    case call::per_row:
      return "smax::cross_entropy_per_row(logits, target, losses, options)";
    case call::per_row_grad:
      return "smax::cross_entropy_per_row(logits, target, losses, dloss, grad, options)";
    case call::shard:
      return "smax::cross_entropy_shard_stats + merge_shard_stats + cross_entropy_shard";
    default:
      return "smax::cross_entropy_shard_stats + merge_shard_stats + cross_entropy_from_stats";
  }
}
bool has_grad(call c) { return c == call::grad || c == call::per_row_grad || c == call::shard; }
bool has_losses(call c) { return c == call::per_row || c == call::per_row_grad; }
bool sharded(call c) { return c == call::shard || c == call::from_stats; }

double smoothing_of(std::uint8_t b) {
  static const double t[16] = {0.1,  1,    0.5, 1e-30, 0.999, 0.25, 1e-8,           0.01,
                               -0.1, 1.5, std::numeric_limits<double>::quiet_NaN(), -0.0,
                               std::numeric_limits<double>::infinity(), 1 + 0x1p-52, 5e-324, 0.9};
  return b < 128 ? 0.0 : t[b & 15];
}
double z_of(std::uint8_t b) {
  static const double t[16] = {1e-4, 0.02, 1,    1e3,   1e-30, 1e30, -1e-4, std::numeric_limits<double>::quiet_NaN(),
                               std::numeric_limits<double>::infinity(), -0.0, 1e300, 5e-324, 0.5, 1e-8, 100, 2};
  return b < 128 ? 0.0 : t[b & 15];
}
double cap_of(std::uint8_t b) {
  static const double t[16] = {5,    30,    1,     0.5,    1e-3,  1e4, 1e30, 1e-30,
                               1e-40, 5e-324, 1e300, -1, std::numeric_limits<double>::quiet_NaN(),
                               std::numeric_limits<double>::infinity(), -0.0, 50};
  return b < 128 ? 0.0 : t[b & 15];
}

struct fuzz_case {
  bool is_double = false, row_major = true, probs = false, int64_labels = false, in_place = false;
  call what = call::loss;
  Index n = 0, k = 0;
  value_spec xs;
  smax::CrossEntropyOptions opt;
  std::uint8_t label_rates = 0, weights_spec = 0, target_spec = 0;
  int grad_home = 0, losses_home = 0;  // 0 own buffer, 1 in place / dloss itself, 2 logits' buffer
  int bad = 0;                         // 0 none, 1 target, 2 grad, 3 dloss, 4 losses
  int shards = 1;
  std::uint8_t lay[5][2] = {};  // logits, target, grad, dloss, losses

  std::string describe() const {
    std::ostringstream s;
    s.precision(17);
    s << name(what) << ": " << (is_double ? "double" : "float")
      << (row_major ? " row-major" : " col-major") << " N=" << n << " K=" << k
      << (probs ? " probability targets" : int64_labels ? " int64 labels" : " int32 labels")
      << " logits " << smax_fuzz::name(xs.enc) << " offset " << static_cast<double>(xs.offset)
      << " scale " << static_cast<double>(xs.scale) << "; reduction "
      << (opt.reduction == smax::Reduction::mean  ? "mean"
          : opt.reduction == smax::Reduction::sum ? "sum"
                                                  : "none")
      << " ignore_index " << opt.ignore_index << " label_smoothing " << opt.label_smoothing
      << " z_loss " << opt.z_loss << " softcap " << opt.softcap << " class_weights "
      << opt.class_weights.size() << (in_place ? "; in place" : "") << " grad_home " << grad_home
      << " losses_home " << losses_home << " bad " << bad << " shards " << shards;
    return s.str();
  }
};

/// A weight for class c: exact multiples of 1/16 (as the unit tests use), zeros, extreme and
/// invalid values, by the spec's bits 3-6.
double weight_of(reader& r, int how) {
  const std::uint8_t c = r.u8();
  switch (how) {
    case 6:
      return c % 3 == 0 ? 0.0 : (1 + c % 48) / 16.0;
    case 7:
      return 0.0;
    case 8:
      return 0.1 * (1 + c);
    case 9:
      return 1e-30 * (1 + c);
    case 10:
      return 1e30 * (1 + c);
    case 11:
      return (c & 1 ? -1.0 : 1.0) * (1 + c % 48) / 16.0;
    case 12: {
      static const double t[4] = {std::numeric_limits<double>::quiet_NaN(),
                                  std::numeric_limits<double>::infinity(), 1.0, 0.5};
      return t[c & 3];
    }
    case 13:
      return 0x1p-70 * (1 + c);
    case 14:
      return 1.0;
    case 15: {
      const std::uint64_t b = r.u64() ^ (std::uint64_t{c} << 56);
      double v;
      std::memcpy(&v, &b, sizeof v);
      return v;
    }
    default:
      return (1 + c % 48) / 16.0;
  }
}

/// A probability target: mostly in [0, scale], with zeros, ones, tiny, large, negative and
/// non-finite values.
template <class T>
T target_of(reader& r, std::uint8_t spec) {
  static const ld scales[8] = {1, 1, 0.01L, 10, 1e-6L, 100, 0.5L, 1e-30L};
  const std::uint8_t c = r.u8();
  if (r.exhausted() && (spec & 8) == 0 && c >= 200) return T(c % 3 == 0 ? 0 : 0.25);  // tame
  if (c < 200) return static_cast<T>(c / 200.0L * scales[spec & 7]);
  if (c < 216) return T(0);
  if (c < 224) return T(1);
  if (c < 232) return T(1e-30);
  if (c < 240) return T(1e3);
  if (c < 244) return T(-0.5);
  if (c < 248) return std::numeric_limits<T>::quiet_NaN();
  if (c < 252) return std::numeric_limits<T>::infinity();
  return -T(0);
}

/// An upstream gradient dloss_i: zeros, ordinary values of both signs, large, tiny, non-finite.
template <class T>
T dloss_of(reader& r) {
  const std::uint8_t c = r.u8();
  if (c < 16) return T(0);
  if (c < 240) return static_cast<T>((static_cast<int>(c) - 128) / 32.0);
  switch (c & 15) {
    case 0:
      return T(1e10);
    case 1:
      return T(-1e10);
    case 8:
      return std::numeric_limits<T>::quiet_NaN();
    case 9:
      return std::numeric_limits<T>::infinity();
    case 10:
      return -std::numeric_limits<T>::infinity();
    case 11:
      return -T(0);
    default:
      return T(1e-30);
  }
}

/// A label: a class, ignore_index, or one of the invalid values.
std::int64_t label_of(reader& r, const fuzz_case& c) {
  const std::int64_t k = c.k, ignore = c.opt.ignore_index;
  const bool past_end = r.exhausted();
  const std::uint16_t v = r.u16();
  unsigned kind = v & 0xff;
  if (past_end) {
    // Past the end: mostly classes; ignored and invalid labels at the spec's rates.
    // rates: bits 0-1 ignored labels (0, 9, 19, 28 %), all three bits set: invalid ones (3 %).
    const unsigned ignore_rate = (c.label_rates & 3) * 24;
    const bool invalid = c.label_rates == 7;
    kind = kind < ignore_rate ? 216 : 0;
    if (invalid && (v >> 8) < 8) kind = 240 + (v >> 8);
  }
  if (kind < 216) return k > 0 ? static_cast<std::int64_t>((v >> 8) + 256 * kind) % k : 0;
  if (kind < 240) return ignore;
  const std::int64_t invalid[16] = {-1,
                                    k,
                                    k + 1,
                                    -100,
                                    std::numeric_limits<std::int32_t>::max(),
                                    std::numeric_limits<std::int32_t>::min(),
                                    2 * k + 7,
                                    -2,
                                    std::numeric_limits<std::int64_t>::max(),
                                    std::numeric_limits<std::int64_t>::min(),
                                    std::int64_t{1} << 40,
                                    k - 1,
                                    0,
                                    -101,
                                    k + 1000,
                                    -(std::int64_t{1} << 33)};
  std::int64_t y = invalid[kind - 240];
  if (!c.int64_labels &&
      (y > std::numeric_limits<std::int32_t>::max() || y < std::numeric_limits<std::int32_t>::min()))
    y = -7;
  return y;
}

// ---- the Eigen side -----------------------------------------------------------------------------

template <class T>
using Vec = Eigen::Matrix<T, Dynamic, 1>;
template <class T>
using VecMap = Eigen::Map<Vec<T>, Eigen::Unaligned, Eigen::InnerStride<Dynamic>>;

template <class T>
VecMap<T> vec_map(buffer<T>& b, const layout& l) {
  return VecMap<T>(b.data() + l.offset, l.rows, Eigen::InnerStride<Dynamic>(l.inner));
}

template <class T, int Storage>
struct mats {
  using M = Eigen::Matrix<T, Dynamic, Dynamic, Storage>;
  using Map = Eigen::Map<M, Eigen::Unaligned, Eigen::Stride<Dynamic, Dynamic>>;
  static Map map(buffer<T>& b, const layout& l) {
    return Map(b.data() + l.offset, l.rows, l.cols,
               Eigen::Stride<Dynamic, Dynamic>(l.outer, l.inner));
  }
};

/// A matrix layout from its two bytes.
layout mat_layout(const std::uint8_t (&bytes)[2], Index rows, Index cols, bool row_major,
                  bool reads_only) {
  reader r(bytes, 2);
  return read_layout(r, rows, cols, row_major, reads_only);
}
/// A vector layout: element i at offset + i * inner.
layout vec_layout(const std::uint8_t (&bytes)[2], Index len, bool reads_only) {
  return mat_layout(bytes, len, 1, false, reads_only);
}

// ---- checks -------------------------------------------------------------------------------------

template <class T>
bool same_value(T a, T b) {
  return (std::isnan(a) && std::isnan(b)) || std::memcmp(&a, &b, sizeof a) == 0;
}

/// A loss against the exact one (tests/ce_reference.hpp's check_loss, with abs_error's handling of
/// values beyond T's range): empty when within budget, else the description of the mismatch.
template <class T>
std::string check_loss(const char* what, ld exact, T got, ld scale, const std::string& where) {
  const ld g = static_cast<ld>(got);
  bool ok;
  ld err = 0, allowed = 0;
  const T rounded = static_cast<T>(exact);
  if (std::isnan(exact) || std::isinf(rounded)) {
    ok = abs_error<T>(g, exact) == 0;
  } else {
    err = std::fabs(g - exact);
    // + the smallest subnormal: the rounding of a loss that underflows (z lse^2 with a tiny
    // lse), which no relative budget can meet; tests/reference.hpp does the same for backward.
    allowed = ref::loss_rtol<T> * std::fabs(exact) + ref::loss_floor_eps * ref::eps<T> * scale +
              ref::denorm<T>;
    ok = std::isfinite(g) && err <= allowed;
  }
  if (ok) return {};
  std::ostringstream s;
  s.precision(21);
  s << what << where << ": smax " << g << ", exact " << exact << ", error " << err << ", allowed "
    << allowed << " (relative error " << (exact != 0 ? err / std::fabs(exact) : err) << ")";
  return s.str();
}

/// A loss mismatch is a finding unless the row (or, for a reduced loss, some valid row) needs an
/// intermediate beyond T's range (known finding 4).
inline void loss_verdict(const std::string& mismatch, bool overflow) {
  if (mismatch.empty()) return;
  if (overflow && known_skip("huge finite logits overflow an intermediate of the loss in T"))
    return;
  finding(mismatch);
}

/// The gradient (row-major N x K values read back) against the reference.
template <class T>
void check_grad(const fuzz_case& c, const ref::ce_result& r, const std::vector<ld>& got,
                const std::vector<ld>& dloss, bool mean) {
  const Index n = c.n, k = c.k;
  if (mean && r.valid_rows > 0 && !(r.denominator != 0 && std::isfinite(1 / r.denominator))) return;
  for (Index i = 0; i < n; ++i) {
    const bool valid = r.valid[static_cast<std::size_t>(i)];
    const ld b = r.bound[static_cast<std::size_t>(i)];
    if (valid && std::isnan(b)) continue;  // poisoned or fully masked: not specified
    if (valid && !dloss.empty() && !std::isfinite(dloss[static_cast<std::size_t>(i)])) continue;
    if (!std::isfinite(b)) continue;  // the scale itself overflows: nothing to measure against
    for (Index j = 0; j < k; ++j) {
      const auto at = static_cast<std::size_t>(i * k + j);
      const ld g = got[at], e = valid ? r.grad[at] : 0;
      // + the smallest subnormal when B_i > 0: the rounding of an entry that underflows, which a
      // budget relative to B_i cannot cover (B_i = 0 still demands an exact 0).
      const ld err = abs_error<T>(g, e);
      const ld allowed = valid && b > 0 ? ref::grad_eps * ref::eps<T> * b + ref::denorm<T> : 0;
      if (err == 0 || err <= allowed) continue;
      // Known finding 4 (README.md): terms of the gradient formula (B_i) beyond T's range, e.g.
      // 2 z lse with huge logits, overflow although the entry itself may not.
      if (valid && (b > static_cast<ld>(std::numeric_limits<T>::max()) / 4 ||
                    r.overflow[static_cast<std::size_t>(i)]) &&
          known_skip("huge finite logits overflow a term of the gradient in T"))
        continue;
      std::ostringstream s;
      s.precision(21);
      s << "grad(" << i << ", " << j << ") = " << g << ", exact " << e << ", error " << err
        << " = " << static_cast<double>(err / (ref::eps<T> * b)) << " eps * B_i, allowed "
        << ref::grad_eps << " (B_i = " << b << ")" << (valid ? "" : "; the row is ignored");
      finding(s.str());
    }
  }
}

// ---- one case -----------------------------------------------------------------------------------

/// The expected exception: none, std::invalid_argument, std::out_of_range, or either (both kinds
/// of bad input at once).
struct expectation {
  bool invalid = false, out_of_range = false;
};

template <class T, int Storage, class I>
void run_case(fuzz_case& c, reader& r) {
  using Mt = mats<T, Storage>;
  const Index n = c.n, k = c.k;
  const bool grad = has_grad(c.what), losses = has_losses(c.what), shard = sharded(c.what);
  const bool with_dloss = c.what == call::per_row_grad;

  // ---- layouts and placement ----
  layout lx = mat_layout(c.lay[0], n, k, c.row_major, true);
  const bool bad_target = c.bad == 1, bad_grad = c.bad == 2 && grad;
  const bool bad_dloss = c.bad == 3 && with_dloss, bad_losses = c.bad == 4 && losses;
  layout lt = c.probs ? mat_layout(c.lay[1], bad_target ? n + 1 : n, k, c.row_major, true)
                      : vec_layout(c.lay[1], bad_target ? n + 1 : n, true);
  int grad_home = grad ? c.grad_home : 0;
  if (grad_home == 1 && (!lx.injective() || bad_grad)) grad_home = 0;
  if (grad_home == 2 && shard) grad_home = 0;
  layout lg = grad_home == 1 ? lx : mat_layout(c.lay[2], n, bad_grad ? k + 1 : k, c.row_major, false);
  layout ld_ = vec_layout(c.lay[3], bad_dloss ? n + 1 : n, true);
  int losses_home = losses ? c.losses_home : 0;
  if (losses_home == 1 && (!with_dloss || !ld_.injective() || bad_dloss || bad_losses))
    losses_home = 0;
  layout ll = losses_home == 1 ? ld_ : vec_layout(c.lay[4], bad_losses ? n + 1 : n, false);

  // ---- buffers and values ----
  buffer<T> bx(std::max({lx.end(), grad_home == 2 ? lg.end() : Index{0},
                         losses_home == 2 ? ll.end() : Index{0}}));
  buffer<T> bt(c.probs ? lt.end() : 0);
  buffer<I> bl(c.probs ? 0 : lt.end());
  buffer<T> bg(grad && grad_home == 0 ? lg.end() : 0);
  buffer<T> bd(with_dloss ? ld_.end() : 0);
  buffer<T> bo(losses && losses_home == 0 ? ll.end() : 0);

  for (Index i = 0; i < n; ++i)
    for (Index j = 0; j < k; ++j) bx[lx.at(i, j)] = next_value<T>(r, c.xs);
  std::vector<std::int64_t> labels_written;
  if (c.probs) {
    for (Index i = 0; i < lt.rows; ++i)
      for (Index j = 0; j < k; ++j) bt[lt.at(i, j)] = target_of<T>(r, c.target_spec);
  } else {
    for (Index i = 0; i < lt.rows; ++i) bl[lt.at(i, 0)] = static_cast<I>(label_of(r, c));
  }
  if (c.weights_spec >= 128) {
    static const int size_delta[8] = {0, 0, 0, 0, 0, -1, 1, 99};
    const int d = size_delta[c.weights_spec & 7];
    const Index size = d == 99 ? 1 : std::max<Index>(0, k + d);
    c.opt.class_weights.resize(size);
    for (Index j = 0; j < size; ++j) c.opt.class_weights(j) = weight_of(r, (c.weights_spec >> 3) & 15);
  }
  if (with_dloss)
    for (Index i = 0; i < ld_.rows; ++i) bd[ld_.at(i, 0)] = dloss_of<T>(r);
  // Shard boundaries: shards - 1 sorted cut points in [0, K].
  std::vector<Index> cuts = {0};
  for (int s = 1; s < c.shards; ++s) cuts.push_back(k > 0 ? r.u16() % (k + 1) : 0);
  cuts.push_back(k);
  std::sort(cuts.begin(), cuts.end());
  current_case() = c.describe();

  // What the call sees (aliased strides: the last value written wins).
  std::vector<ld> x(static_cast<std::size_t>(n * k)), t, dl;
  for (Index i = 0; i < n; ++i)
    for (Index j = 0; j < k; ++j) x[static_cast<std::size_t>(i * k + j)] = bx[lx.at(i, j)];
  std::vector<std::int64_t> y;
  if (c.probs) {
    if (!bad_target) {
      t.resize(x.size());
      for (Index i = 0; i < n; ++i)
        for (Index j = 0; j < k; ++j) t[static_cast<std::size_t>(i * k + j)] = bt[lt.at(i, j)];
    }
  } else {
    for (Index i = 0; i < lt.rows; ++i) y.push_back(static_cast<std::int64_t>(bl[lt.at(i, 0)]));
  }
  if (with_dloss && !bad_dloss)
    for (Index i = 0; i < n; ++i) dl.push_back(bd[ld_.at(i, 0)]);
  dump_inputs() = [&] {
    std::fprintf(stderr, "  inputs (row: label or -, dloss, logits | targets):\n");
    for (Index i = 0; i < n; ++i) {
      std::string line = "    " + std::to_string(i) + ": ";
      line += i < static_cast<Index>(y.size()) ? std::to_string(y[static_cast<std::size_t>(i)]) : "-";
      line += i < static_cast<Index>(dl.size()) ? " " + show(dl[static_cast<std::size_t>(i)]) : " -";
      for (Index j = 0; j < k; ++j) line += " " + show(x[static_cast<std::size_t>(i * k + j)]);
      if (!t.empty()) {
        line += " |";
        for (Index j = 0; j < k; ++j) line += " " + show(t[static_cast<std::size_t>(i * k + j)]);
      }
      std::fprintf(stderr, "%s\n", line.c_str());
    }
    for (Index j = 0; j < c.opt.class_weights.size(); ++j)
      std::fprintf(stderr, "    w[%td] = %.17g\n", j, c.opt.class_weights(j));
    std::fprintf(stderr, "    shard cuts:");
    for (Index v : cuts) std::fprintf(stderr, " %td", v);
    std::fprintf(stderr, "\n");
  };


  // ---- the expected exception ----
  expectation want;
  const auto& o = c.opt;
  const bool reduced_call = c.what == call::loss || c.what == call::grad || shard;
  if (reduced_call && o.reduction == smax::Reduction::none) want.invalid = true;
  if (k == 0) want.invalid = true;
  if (!(o.label_smoothing >= 0 && o.label_smoothing <= 1)) want.invalid = true;
  if (!(o.z_loss >= 0 && std::isfinite(o.z_loss))) want.invalid = true;
  if (!(o.softcap >= 0 && std::isfinite(o.softcap))) want.invalid = true;
  // Options the kernels cannot represent in T are invalid too (the fix of finding 2): T(softcap)
  // and 1 / T(softcap), T(z_loss) finite and nonzero.
  if (o.softcap > 0) {
    const T cap = static_cast<T>(o.softcap);
    if (!(cap > T(0) && std::isfinite(cap) && std::isfinite(T(1) / cap))) want.invalid = true;
  }
  if (o.z_loss > 0) {
    const T z = static_cast<T>(o.z_loss);
    if (!(z > T(0) && std::isfinite(z))) want.invalid = true;
  }
  const Index wsize = o.class_weights.size();
  if (wsize != 0 && wsize != k) want.invalid = true;
  if (bad_target || bad_grad || bad_dloss || bad_losses) want.invalid = true;
  if (grad_home == 2) {
    const bool same_view = lg.offset == lx.offset && lg.rs() == lx.rs() && lg.cs() == lx.cs();
    if (!same_view && overlap(span_of(lg), span_of(lx))) want.invalid = true;
  }
  if (losses_home == 2 && (overlap(span_of(ll), span_of(lx)) ||
                           (grad && grad_home != 0 && overlap(span_of(ll), span_of(lg)))))
    want.invalid = true;
  if (!c.probs && !bad_target)
    for (std::int64_t v : y)
      if (v != o.ignore_index && (v < 0 || v >= k)) want.out_of_range = true;

  // ---- the call ----
  const auto s_x = bx.snapshot(), s_t = bt.snapshot(), s_l = bl.snapshot(), s_g = bg.snapshot(),
             s_d = bd.snapshot(), s_o = bo.snapshot();
  T loss = 0;
  std::vector<T> shard_losses;
  std::string thrown;
  bool threw_invalid = false, threw_range = false;
  try {
    auto xm = Mt::map(bx, lx);
    buffer<T>& g_buf = grad_home == 0 ? bg : bx;
    auto gm = Mt::map(g_buf, lg);
    auto dm = vec_map(bd, ld_);
    auto om = vec_map(losses_home == 0 ? bo : losses_home == 1 ? bd : bx, ll);
    auto body = [&](const auto& target) {
      switch (c.what) {
        case call::loss:
          loss = smax::cross_entropy(xm, target, o);
          break;
        case call::grad:
          if (grad_home == 1)
            loss = smax::cross_entropy(xm, target, xm, o);
          else
            loss = smax::cross_entropy(xm, target, gm, o);
          break;
        case call::per_row:
          smax::cross_entropy_per_row(xm, target, om, o);
          break;
        default: {  // per_row_grad
          auto& g_ref = grad_home == 1 ? xm : gm;
          if (losses_home == 1)
            smax::cross_entropy_per_row(xm, target, dm, dm, g_ref, o);
          else
            smax::cross_entropy_per_row(xm, target, om, dm, g_ref, o);
        }
      }
    };
    if (shard) {
      {
        auto lm = vec_map(bl, lt);
        using Stats = Eigen::Matrix<T, Dynamic, smax::shard_stats_width, Eigen::RowMajor>;
        const int ns = static_cast<int>(cuts.size()) - 1;
        std::vector<smax::CrossEntropyOptions> so(static_cast<std::size_t>(ns), o);
        std::vector<layout> sx(static_cast<std::size_t>(ns)), sg(sx.size());
        for (int s = 0; s < ns; ++s) {
          const Index c0 = cuts[s], ks = cuts[s + 1] - cuts[s];
          sx[s] = lx;
          sx[s].cols = ks;
          sx[s].offset = lx.offset + c0 * lx.cs();
          sg[s] = lg;
          sg[s].cols = (bad_grad && s == 0) ? ks + 1 : ks;
          sg[s].offset = lg.offset + c0 * lg.cs();
          // Each shard gets its slice of the weights; a wrong-sized vector stays wrong (one more
          // than the shard's classes, which every shard with classes rejects).
          if (wsize != 0)
            so[s].class_weights = wsize == k ? o.class_weights.segment(c0, ks).eval()
                                             : Eigen::VectorXd::Ones(ks + 1).eval();
        }
        Stats merged;
        for (int s = 0; s < ns; ++s) {
          auto xs = Mt::map(bx, sx[s]);
          const Stats st = smax::cross_entropy_shard_stats(xs, lm, cuts[s], k, so[s]);
          if (s == 0)
            merged = st;
          else
            smax::merge_shard_stats(merged, st);
        }
        if (c.what == call::from_stats) {
          loss = smax::cross_entropy_from_stats(lm, k, merged, o);
        } else {
          for (int s = 0; s < ns; ++s) {
            auto xs = Mt::map(bx, sx[s]);
            if (grad_home == 1) {
              shard_losses.push_back(
                  smax::cross_entropy_shard(xs, lm, cuts[s], k, merged, xs, so[s]));
            } else {
              auto gs = Mt::map(bg, sg[s]);
              shard_losses.push_back(
                  smax::cross_entropy_shard(xs, lm, cuts[s], k, merged, gs, so[s]));
            }
          }
          loss = shard_losses.empty() ? T(0) : shard_losses[0];
        }
      }
    } else if (c.probs) {
      body(Mt::map(bt, lt));
    } else {
      body(vec_map(bl, lt));
    }
  } catch (const std::invalid_argument& e) {
    threw_invalid = true;
    thrown = std::string("std::invalid_argument: ") + e.what();
  } catch (const std::out_of_range& e) {
    threw_range = true;
    thrown = std::string("std::out_of_range: ") + e.what();
  } catch (const std::exception& e) {
    finding(std::string("an undocumented exception: ") + e.what());
  } catch (...) {
    finding("a non-std exception");
  }
  const bool want_throw = want.invalid || want.out_of_range;
  if (!want_throw && !thrown.empty()) finding("threw " + thrown + " on valid input");
  if (want_throw && thrown.empty())
    finding(std::string("did not throw ") +
            (want.invalid ? "std::invalid_argument" : "std::out_of_range") + " on invalid input");
  if (want_throw) {
    // Either kind when both apply; otherwise the one that applies.
    if ((threw_invalid && !want.invalid) || (threw_range && !want.out_of_range))
      finding("threw the wrong exception: " + thrown);
    const auto none = [](Index) { return false; };
    check_untouched("logits", bx, s_x, none);
    check_untouched("target", bt, s_t, none);
    check_untouched("labels", bl, s_l, none);
    check_untouched("grad", bg, s_g, none);
    check_untouched("dloss", bd, s_d, none);
    check_untouched("losses", bo, s_o, none);
    ++outcomes().threw;
    return;
  }

  // ---- nothing written but grad and losses ----
  std::vector<bool> wx(static_cast<std::size_t>(bx.size()), false), wd(wx.size(), false);
  // (mask_of only for the buffer a layout lives in: it indexes the buffer with the layout.)
  std::vector<bool> wg = grad && grad_home == 0 ? mask_of(lg, bg.size())
                                                : std::vector<bool>(static_cast<std::size_t>(bg.size()));
  std::vector<bool> wo = losses && losses_home == 0
                             ? mask_of(ll, bo.size())
                             : std::vector<bool>(static_cast<std::size_t>(bo.size()));
  if (grad && grad_home != 0) wx = mask_of(lg, bx.size());
  if (losses && losses_home == 2) {
    const auto m = mask_of(ll, bx.size());
    for (std::size_t i = 0; i < wx.size(); ++i) wx[i] = wx[i] || m[i];
  }
  const auto in = [](const std::vector<bool>& m) {
    return [&m](Index i) { return m[static_cast<std::size_t>(i)]; };
  };
  check_untouched("logits", bx, s_x, in(wx));
  check_untouched("target", bt, s_t, [](Index) { return false; });
  check_untouched("labels", bl, s_l, [](Index) { return false; });
  check_untouched("grad", bg, s_g, in(wg));
  if (losses_home == 1) {
    wd = mask_of(ll, bd.size());
    check_untouched("dloss", bd, s_d, in(wd));
  } else {
    check_untouched("dloss", bd, s_d, [](Index) { return false; });
  }
  check_untouched("losses", bo, s_o, in(wo));

  // ---- the reference ----
  // Accuracy is checked only where the budgets are stated (see the top of this file).
  const auto tame = [](ld v) {
    return std::isfinite(v) && v >= 0 && (v == 0 || (v >= 0x1p-60L && v <= 0x1p60L));
  };
  bool checked = true;
  for (Index j = 0; j < wsize; ++j) checked = checked && tame(o.class_weights(j));
  for (ld v : t) checked = checked && tame(v);
  if (!checked) {
    ++outcomes().unchecked;
    return;
  }
  ++outcomes().checked;

  ref::ce_options ro;
  ro.smoothing = o.label_smoothing;
  ro.z = o.z_loss;
  ro.cap = o.softcap;
  ro.t_max = std::numeric_limits<T>::max();
  for (Index j = 0; j < wsize; ++j) ro.weights.push_back(o.class_weights(j));
  const bool mean = o.reduction != smax::Reduction::sum;  // none only reaches per-row calls
  const ref::mode md = losses ? ref::mode::per_row : mean ? ref::mode::mean : ref::mode::sum;
  std::vector<ld> dl_ref = dl;
  if (losses && !with_dloss) dl_ref.assign(static_cast<std::size_t>(n), 1);
  const ref::ce_result res = c.probs ? ref::cross_entropy_probs(x, n, k, t, ro, md, dl_ref)
                                     : ref::cross_entropy_labels(x, n, k, y, o.ignore_index, ro,
                                                                 md, dl_ref);

  // A reduced loss also overflows when the sum of the row losses (accumulated in double before
  // mean divides it) exceeds double's range: known finding 4d.
  bool any_overflow = false;
  ld abs_total = 0;
  for (Index i = 0; i < n; ++i) {
    const auto at = static_cast<std::size_t>(i);
    any_overflow = any_overflow || (res.valid[at] && res.overflow[at]);
    if (res.valid[at]) abs_total += std::fabs(res.row_loss[at]);
  }
  if (abs_total > static_cast<ld>(std::numeric_limits<double>::max())) any_overflow = true;
  if (!losses)
    loss_verdict(check_loss<T>("loss", res.loss, loss, res.loss_scale, ""), any_overflow);
  // Every shard returns the whole vocabulary's loss within 8 eps relative (README: the kernel
  // that evaluates it depends on the shard's width; finding 7 made this the documented rule).
  for (std::size_t s = 1; s < shard_losses.size(); ++s)
    if (!same_value(shard_losses[s], shard_losses[0]) &&
        !(std::fabs(static_cast<ld>(shard_losses[s]) - shard_losses[0]) <=
          8 * ref::eps<T> * std::fabs(static_cast<ld>(shard_losses[0]))))
      finding("shard " + std::to_string(s) + " returned the loss " + show(shard_losses[s]) +
              ", shard 0 " + show(shard_losses[0]));
  if (losses) {
    buffer<T>& home = losses_home == 0 ? bo : losses_home == 1 ? bd : bx;
    for (Index i = 0; i < n; ++i) {
      const T got = home[ll.at(i, 0)];
      if (!res.valid[static_cast<std::size_t>(i)]) {
        if (got != 0) finding("the loss of ignored row " + std::to_string(i) + " is " + show(got));
        continue;
      }
      loss_verdict(check_loss<T>("row loss", res.row_loss[static_cast<std::size_t>(i)], got,
                                 res.row_scale[static_cast<std::size_t>(i)],
                                 " of row " + std::to_string(i)),
                   res.overflow[static_cast<std::size_t>(i)]);
    }
  }
  if (grad) {
    std::vector<ld> g(static_cast<std::size_t>(n * k));
    buffer<T>& home = grad_home == 0 ? bg : bx;
    for (Index i = 0; i < n; ++i)
      for (Index j = 0; j < k; ++j) g[static_cast<std::size_t>(i * k + j)] = home[lg.at(i, j)];
    check_grad<T>(c, res, g, with_dloss ? dl : std::vector<ld>{}, md == ref::mode::mean);
  }
}

template <class T, int Storage>
void run_storage(fuzz_case& c, reader& r) {
  if (c.int64_labels || c.probs)
    run_case<T, Storage, std::int64_t>(c, r);
  else
    run_case<T, Storage, std::int32_t>(c, r);
}

template <class T>
void run_typed(fuzz_case& c, reader& r) {
  if (c.row_major)
    run_storage<T, Eigen::RowMajor>(c, r);
  else
    run_storage<T, Eigen::ColMajor>(c, r);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  reader r(data, size);
  fuzz_case c;
  const std::uint8_t flags = r.u8();
  c.is_double = flags & 1;
  c.row_major = flags & 2;
  c.probs = flags & 4;
  c.int64_labels = flags & 8;
  c.what = call_of(flags >> 4);
  c.in_place = flags & 128;
  if (c.probs && sharded(c.what)) c.what = call::grad;  // the shards take class indices only
  const std::uint8_t b1 = r.u8(), b2 = r.u8(), b3 = r.u8();
  c.n = b1 & 63;
  c.k = b2 | ((b3 & 15) << 8);
  if (c.k > 0 && c.n * c.k > max_elements) c.n = max_elements / c.k;
  r.seed(r.u32());
  c.xs = read_value_spec(r);
  const std::uint8_t ob = r.u8();
  static const smax::Reduction reductions[4] = {smax::Reduction::mean, smax::Reduction::sum,
                                                smax::Reduction::none, smax::Reduction::mean};
  c.opt.reduction = reductions[ob & 3];
  const std::int64_t ignores[8] = {-100, -100, -100, 0, 1, c.k - 1, -1,
                                   std::numeric_limits<std::int64_t>::min()};
  c.opt.ignore_index = ignores[(ob >> 2) & 7];
  c.label_rates = static_cast<std::uint8_t>(ob >> 5);
  c.opt.label_smoothing = smoothing_of(r.u8());
  c.opt.z_loss = z_of(r.u8());
  c.opt.softcap = cap_of(r.u8());
  c.weights_spec = r.u8();
  c.target_spec = r.u8();
  const std::uint8_t mem = r.u8();
  c.grad_home = (mem & 3) == 3 ? 0 : mem & 3;
  if (c.in_place) c.grad_home = 1;
  c.losses_home = ((mem >> 2) & 3) == 3 ? 0 : (mem >> 2) & 3;
  c.bad = (mem >> 4) >= 12 ? (mem >> 4) - 11 : 0;
  c.shards = 1 + (r.u8() & 3);
  for (auto& l : c.lay) {
    l[0] = r.u8();
    l[1] = r.u8();
  }
  if (c.is_double)
    run_typed<double>(c, r);
  else
    run_typed<float>(c, r);
  return 0;
}
