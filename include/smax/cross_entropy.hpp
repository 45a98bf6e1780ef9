// The fused softmax-cross-entropy: the loss, and its gradient with respect to the logits written
// in the same pass, for class-index labels or probability targets, with PyTorch's options
// (reduction, ignore_index, label_smoothing, class_weights) and those of large-language-model
// training (z_loss, softcap). Formulas: see detail/cross_entropy_kernels.hpp and the README.
#pragma once

#include <Eigen/Core>

#include "smax/detail/cross_entropy_kernels.hpp"
#include "smax/detail/eigen_bridge.hpp"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

namespace smax {

/// How the per-row losses become the returned loss.
enum class Reduction {
  mean,  ///< labels: divided by the summed class weights of the valid rows (their count when
         ///< unweighted); probability targets: divided by N. z-loss: by the valid rows.
  sum,   ///< summed
  none,  ///< one loss per row: use smax::cross_entropy_per_row
};

/// Options of smax::cross_entropy, with PyTorch's defaults.
struct CrossEntropyOptions {
  Reduction reduction = Reduction::mean;
  /// Rows whose label equals this contribute no loss and get a zero gradient.
  std::int64_t ignore_index = -100;
  /// ε in [0, 1]: the target becomes (1 − ε)·onehot + ε/K (PyTorch's definition).
  double label_smoothing = 0.0;
  /// s >= 0: adds s·logsumexp(x)² per valid row (not class-weighted).
  double z_loss = 0.0;
  /// c >= 0: each logit x becomes c·tanh(x/c) before everything else; 0 is off.
  double softcap = 0.0;
  /// K class weights (PyTorch's `weight`); empty means all 1.
  Eigen::VectorXd class_weights;
};

namespace detail {

template <class X>
inline constexpr bool is_integer_v = std::is_integral<scalar_t<X>>::value;

template <class O>
void require_writable_shape(const char* fn, const char* name, O& out, index_t rows, index_t cols) {
  if (out.rows() == rows && out.cols() == cols) return;
  throw std::invalid_argument(std::string(fn) + ": " + name + " is " +
                              shape(out.rows(), out.cols()) + " but must be " + shape(rows, cols));
}

/// Resizes a plain Matrix/Array that is empty; anything else must already have the shape.
template <class O>
void fit_output(O& out, index_t rows, index_t cols) {
  if constexpr (std::is_base_of<Eigen::PlainObjectBase<O>, O>::value) {
    if (out.size() == 0 && (out.rows() != rows || out.cols() != cols)) out.resize(rows, cols);
  }
}
template <class O>
bool fits_output(const O& out, index_t rows, index_t cols) {
  if (out.rows() == rows && out.cols() == cols) return true;
  return std::is_base_of<Eigen::PlainObjectBase<O>, O>::value && out.size() == 0;
}

/// A vector's memory as one value per index: stride between consecutive entries.
template <class X>
auto vector_view(X& v) noexcept {
  const auto s = dist_view(v, true);
  using P = std::remove_reference_t<decltype(*v.data())>;
  return per_dist<P>{v.data(), v.rows() == 1 ? s.cs : s.ds};
}

/// Checks every label (in [0, k) or ignore); calls on_valid(label) for each valid one; returns
/// their count. One pass counts and checks (scan_labels, in vectors); the labels are read again
/// only to find a bad one, or for on_valid.
template <class Y, class F>
index_t validate_labels(const char* fn, const Y& target, index_t k, std::int64_t ignore,
                        F&& on_valid) {
  index_t valid = 0;
  const auto v = vector_view(target);
  using Lbl = std::remove_const_t<std::remove_pointer_t<decltype(v.p)>>;
  const bool bad = scan_labels(per_dist<const Lbl>{v.p, v.stride}, target.size(), k, ignore, valid);
  for (index_t i = 0; bad && i < target.size(); ++i) {
    const auto y = static_cast<std::int64_t>(target(i));
    if (y != ignore && (y < 0 || y >= k))
      throw std::out_of_range(std::string(fn) + ": target(" + std::to_string(i) +
                              ") = " + std::to_string(y) + " is not a class index in [0, " +
                              std::to_string(k) + ") nor ignore_index (" + std::to_string(ignore) +
                              ")");
  }
  if constexpr (!std::is_same<std::decay_t<F>, std::nullptr_t>::value) {
    for (index_t i = 0; i < target.size(); ++i) {
      const auto y = static_cast<std::int64_t>(target(i));
      if (y != ignore) on_valid(static_cast<index_t>(y));
    }
  }
  return valid;
}

/// The returned loss from the per-row sums: `mean` divides the cross-entropy by the summed
/// weights of the valid rows and the z-loss by their count.
inline double reduce_loss(const ce_totals& tot, bool mean, double weight_of_valid,
                          index_t valid_rows, double z_loss) {
  if (!mean) return tot.ce.value() + tot.z.value();
  double loss = tot.ce.value() / weight_of_valid;
  if (z_loss != 0.0) loss += tot.z.value() / static_cast<double>(valid_rows);
  return loss;
}

template <class Y>
void require_label_vector(const char* fn, const Y& target, index_t n) {
  if (!((target.rows() == 1 || target.cols() == 1) && target.size() == n))
    throw std::invalid_argument(
        std::string(fn) + ": target is " + shape(target.rows(), target.cols()) +
        ": labels must be a vector of N = " + std::to_string(n) + " class indices");
}

/// A double as the messages show it: shortest round-trip form (1e-40, not 0.000000).
inline std::string number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  for (int digits = 1; digits <= 17; ++digits) {
    std::snprintf(buf, sizeof buf, "%.*g", digits, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  return buf;
}

/// The options, checked before anything is written. T is the logits' compute type (float for
/// 16-bit logits): the kernels compute with T(softcap), 1 / T(softcap) and T(z_loss), which must
/// be finite and nonzero.
template <class T>
void check_options(const char* fn, const CrossEntropyOptions& o, index_t k) {
  const auto bad = [&](const std::string& what) {
    throw std::invalid_argument(std::string(fn) + ": " + what);
  };
  if (!(o.label_smoothing >= 0.0 && o.label_smoothing <= 1.0))
    bad("options.label_smoothing = " + number(o.label_smoothing) + " is not in [0, 1]");
  if (!(o.z_loss >= 0.0 && std::isfinite(o.z_loss)))
    bad("options.z_loss = " + number(o.z_loss) + " is not a finite value >= 0");
  if (!(o.softcap >= 0.0 && std::isfinite(o.softcap)))
    bad("options.softcap = " + number(o.softcap) + " is not a finite value >= 0");
  const char* type = sizeof(T) == 4 ? "float" : "double";  // 16-bit logits compute in float
  if (o.softcap > 0) {
    const T c = static_cast<T>(o.softcap);
    if (!(c > T(0) && std::isfinite(c) && std::isfinite(T(1) / c)))
      bad("options.softcap = " + number(o.softcap) + " is outside the range of " + type +
          " (the logits' compute type): c and 1/c must both be finite");
  }
  if (o.z_loss > 0) {
    const T z = static_cast<T>(o.z_loss);
    if (!(z > T(0) && std::isfinite(z)))
      bad("options.z_loss = " + number(o.z_loss) + " is outside the range of " + type +
          " (the logits' compute type)");
  }
  if (o.class_weights.size() != 0 && o.class_weights.size() != k)
    bad("options.class_weights has " + std::to_string(o.class_weights.size()) +
        " entries but the logits have K = " + std::to_string(k) + " classes");
}

/// An optional argument as the kernels read it: nested_t<D>, or nothing for std::nullptr_t.
template <class D>
struct held {
  nested_t<D> value;
  explicit held(const D* d) : value(*d) {}
};
template <>
struct held<std::nullptr_t> {
  explicit held(const std::nullptr_t*) noexcept {}
};

/// The common body of every cross-entropy call. grad, dloss and losses may be null.
template <class L, class Y, class G, class D, class O>
double cross_entropy_impl(const char* fn, const L& logits_in, const Y& target_in, G* grad,
                          const D* dloss_in, O* losses, const CrossEntropyOptions& opt) {
  check_scalar<L>();
  using X = scalar_t<L>;  // the logits' (and gradient's, and probability targets') type
  using T = compute_t<X>;  // the type of the arithmetic, the losses and dloss
  using V = vec_t<T, best_arch>;
  const nested_t<L> logits(logits_in);
  const nested_t<Y> target(target_in);
  const index_t n = logits.rows(), k = logits.cols();
  constexpr bool labels = is_integer_v<Y>;

  // ---- every check before anything is written -------------------------------------------------
  if (k == 0)
    throw std::invalid_argument(std::string(fn) + ": logits are " + shape(n, k) +
                                ": K must be at least 1");
  check_options<T>(fn, opt, k);
  if constexpr (labels) {
    if (!((target.rows() == 1 || target.cols() == 1) && target.size() == n))
      throw std::invalid_argument(
          std::string(fn) + ": target is " + shape(target.rows(), target.cols()) +
          " but the logits are " + shape(n, k) +
          ": labels must be a vector of N = " + std::to_string(n) + " class indices");
  } else {
    static_assert(std::is_same<scalar_t<Y>, X>::value,
                  "smax::cross_entropy: probability targets have the logits' scalar type");
    if (target.rows() != n || target.cols() != k)
      throw std::invalid_argument(std::string(fn) + ": target is " +
                                  shape(target.rows(), target.cols()) + " but the logits are " +
                                  shape(n, k) + ": probability targets have the logits' shape");
  }
  if constexpr (!std::is_same<G, std::nullptr_t>::value) {
    if (!fits_output(*grad, n, k)) require_writable_shape(fn, "grad", *grad, n, k);
  }
  if constexpr (!std::is_same<D, std::nullptr_t>::value) {
    if (!((dloss_in->rows() == 1 || dloss_in->cols() == 1) && dloss_in->size() == n))
      throw std::invalid_argument(std::string(fn) + ": dloss is " +
                                  shape(dloss_in->rows(), dloss_in->cols()) +
                                  " but must be a vector of N = " + std::to_string(n) + " values");
  }
  if constexpr (!std::is_same<O, std::nullptr_t>::value) {
    if (!fits_output(*losses, n, 1) && !fits_output(*losses, 1, n))
      throw std::invalid_argument(std::string(fn) + ": losses is " +
                                  shape(losses->rows(), losses->cols()) +
                                  " but must be a vector of N = " + std::to_string(n) + " values");
  }
  // Labels: every one validated, the denominators of `mean` counted.
  double weight_of_valid = 0.0;
  index_t valid_rows = n;
  if constexpr (labels) {
    if (opt.class_weights.size() == 0) {
      valid_rows = validate_labels(fn, target, k, opt.ignore_index, nullptr);
      weight_of_valid = static_cast<double>(valid_rows);
    } else {
      valid_rows = validate_labels(fn, target, k, opt.ignore_index,
                                   [&](index_t c) { weight_of_valid += opt.class_weights(c); });
    }
  } else {
    weight_of_valid = static_cast<double>(n);
  }

  // ---- memory: views, aliasing, layouts -------------------------------------------------------
  const strided<const X> x = dist_view(logits, true);
  const auto xs = span_of(x, n, k);
  const auto tv = dist_view(target, true);
  using Plain = typename L::PlainObject;
  Plain grad_tmp, target_tmp;
  strided<X> g{nullptr, x.ds, x.cs};
  bool copy_grad = false;
  if constexpr (!std::is_same<G, std::nullptr_t>::value) {
    static_assert(std::is_same<scalar_t<G>, X>::value,
                  "smax::cross_entropy: grad has the logits' scalar type");
    fit_output(*grad, n, k);
    g = dist_view(*grad, true);
    const bool in_place = g.p == x.p && g.ds == x.ds && g.cs == x.cs;
    if (!in_place && overlap(span_of(g, n, k), xs))
      throw std::invalid_argument(std::string(fn) +
                                  ": grad overlaps the logits without being the logits themselves");
    if (overlap(span_of(g, n, k), labels ? span_of(vector_view(target), n, 1) : span_of(tv, n, k)))
      throw std::invalid_argument(std::string(fn) + ": grad overlaps target");
    // Another layout than the logits (or one that would keep them from their loop: the results
    // do not depend on grad's layout).
    if (loop_of<V>(n, k, x, g) != loop_of<V>(n, k, x)) {
      grad_tmp.resize(n, k);
      g = dist_view(grad_tmp, true);
      copy_grad = true;
    }
  }
  per_dist<const T> up{nullptr, 0};
  const held<D> dl(dloss_in);  // an expression is evaluated once, and lives until the kernel ran
  if constexpr (!std::is_same<D, std::nullptr_t>::value) {
    static_assert(std::is_same<scalar_t<D>, T>::value,
                  "smax: dloss has the logits' scalar type (float for 16-bit logits)");
    up = vector_view(dl.value);
    if (g.p != nullptr && overlap(span_of(up, n, 1), span_of(g, n, k)))
      throw std::invalid_argument(std::string(fn) + ": grad overlaps dloss");
  }
  per_dist<T> lv{nullptr, 0};
  if constexpr (!std::is_same<O, std::nullptr_t>::value) {
    if (losses->size() == 0) {
      if constexpr (O::RowsAtCompileTime == 1) {
        fit_output(*losses, 1, n);
      } else {
        fit_output(*losses, n, 1);
      }
    }
    static_assert(std::is_same<scalar_t<O>, T>::value,
                  "smax: losses have the logits' scalar type (float for 16-bit logits)");
    lv = vector_view(*losses);
    if (overlap(span_of(lv, n, 1), xs) || (g.p && overlap(span_of(lv, n, 1), span_of(g, n, k))))
      throw std::invalid_argument(std::string(fn) + ": losses overlaps the logits or grad");
    // losses may be dloss itself (each row's dloss is read before its loss is written), but
    // not any other view of dloss's memory.
    if (up.p != nullptr && overlap(span_of(lv, n, 1), span_of(up, n, 1)) &&
        !(lv.p == up.p && (lv.stride == up.stride || n <= 1)))
      throw std::invalid_argument(std::string(fn) +
                                  ": losses overlaps dloss without being dloss itself");
  }

  ce_params<T> prm;
  prm.smoothing = static_cast<T>(opt.label_smoothing);
  prm.z = static_cast<T>(opt.z_loss);
  prm.cap = static_cast<T>(opt.softcap);
  prm.labels = {static_cast<index_t>(opt.ignore_index), 0, k};
  prm.k_total = k;
  std::vector<T> weights_t;  // float logits: the weights converted once per call
  if (opt.class_weights.size() != 0) {
    if constexpr (std::is_same<T, double>::value) {
      prm.weights = opt.class_weights.data();
    } else {
      weights_t.assign(opt.class_weights.data(), opt.class_weights.data() + k);
      prm.weights = weights_t.data();
    }
    prm.weight_sum = static_cast<T>(opt.class_weights.sum());
  } else {
    prm.weight_sum = static_cast<T>(k);
  }
  const bool mean = opt.reduction == Reduction::mean && dloss_in == nullptr && losses == nullptr;
  prm.grad_ce = mean ? static_cast<T>(1.0 / weight_of_valid) : T(1);
  prm.grad_z = mean ? static_cast<T>(1.0 / static_cast<double>(valid_rows)) : T(1);

  ce_totals tot;
  constexpr bool has_grad = !std::is_same<G, std::nullptr_t>::value;
  if constexpr (labels) {
    using Lbl = std::remove_const_t<scalar_t<Y>>;
    const per_dist<const Lbl> yv = vector_view(target);
    tot = cross_entropy_labels<has_grad, best_arch>(n, k, x, yv, g, up, lv, prm, thread_count());
  } else {
    strided<const X> t = tv;
    if (loop_of<V>(n, k, x, t) != loop_of<V>(n, k, x)) {
      target_tmp = target;
      t = dist_view(std::as_const(target_tmp), true);
    }
    tot = cross_entropy_probs<has_grad, best_arch>(n, k, x, t, g, up, lv, prm, thread_count());
  }
  if constexpr (!std::is_same<G, std::nullptr_t>::value) {
    if (copy_grad) *grad = grad_tmp;
  }

  return reduce_loss(tot, mean, weight_of_valid, valid_rows, opt.z_loss);
}

inline void require_reduced(const char* fn, const CrossEntropyOptions& o) {
  if (o.reduction == Reduction::none)
    throw std::invalid_argument(std::string(fn) +
                                ": options.reduction is Reduction::none, which gives one loss per "
                                "row: call smax::cross_entropy_per_row(logits, target, losses"
                                "[, dloss, grad], options)");
}

/// The validated arguments of a vocabulary-parallel call: logits of classes
/// [offset, offset + k) of a vocabulary of `vocab`, and every label.
template <class L, class Y>
struct shard_job {
  using T = scalar_t<L>;
  nested_t<L> logits;
  nested_t<Y> labels;
  index_t n, k, offset, vocab;
  const CrossEntropyOptions& opt;
  index_t valid_rows = 0;

  ce_params<T> params(std::vector<T>& weights) const {
    ce_params<T> prm;
    prm.smoothing = static_cast<T>(opt.label_smoothing);
    prm.z = static_cast<T>(opt.z_loss);
    prm.cap = static_cast<T>(opt.softcap);
    prm.labels = {static_cast<index_t>(opt.ignore_index), offset, k};
    prm.k_total = vocab;
    if (opt.class_weights.size() != 0 && k != 0) {
      weights.assign(opt.class_weights.data(), opt.class_weights.data() + k);
      prm.weights = weights.data();
      prm.weight_sum = static_cast<T>(opt.class_weights.sum());
    } else {
      prm.weight_sum = static_cast<T>(k);
    }
    return prm;
  }

  void run_stats(T* out) const {
    std::vector<T> w;
    const ce_params<T> prm = params(w);
    using Lbl = std::remove_const_t<scalar_t<Y>>;
    cross_entropy_shard_stats<best_arch>(n, k, dist_view(logits, true),
                                         per_dist<const Lbl>(vector_view(labels)), out, prm,
                                         thread_count());
  }

  template <class S, class G>
  double run_finish(const char* fn, const S& merged_in, G* grad) const {
    static_assert(std::is_same<scalar_t<S>, T>::value,
                  "smax: the statistics have the logits' scalar type");
    if (merged_in.rows() != n || merged_in.cols() != ce_stats_width)
      throw std::invalid_argument(std::string(fn) + ": the statistics are " +
                                  shape(merged_in.rows(), merged_in.cols()) + " but must be " +
                                  shape(n, ce_stats_width));
    const strided<const T> x = dist_view(logits, true);
    strided<T> g{nullptr, x.ds, x.cs};
    using Plain = typename L::PlainObject;  // the logits' layout, so their loop
    Plain grad_tmp;
    constexpr bool has_grad = !std::is_same<G, std::nullptr_t>::value;  // else the loss only
    if constexpr (has_grad) {
      if (!fits_output(*grad, n, k)) require_writable_shape(fn, "grad", *grad, n, k);
      fit_output(*grad, n, k);
      g = dist_view(*grad, true);
      const bool in_place = g.p == x.p && g.ds == x.ds && g.cs == x.cs;
      if (!in_place && overlap(span_of(g, n, k), span_of(x, n, k)))
        throw std::invalid_argument(std::string(fn) +
                                    ": grad overlaps the logits without being the logits");
      using V = vec_t<T, best_arch>;
      if (loop_of<V>(n, k, x, g) != loop_of<V>(n, k, x)) {
        grad_tmp.resize(n, k);
        g = dist_view(grad_tmp, true);
      }
    }
    // The kernel reads rows of ce_stats_width contiguous values: a Ref binds to such memory as
    // it is and evaluates anything else (another layout, an expression) once.
    using Stats = Eigen::Matrix<T, Eigen::Dynamic, ce_stats_width, Eigen::RowMajor>;
    const Eigen::Ref<const Stats, 0, Eigen::OuterStride<ce_stats_width>> merged(merged_in);
    double weight_of_valid = 0.0;
    for (index_t i = 0; i < n; ++i)
      if (static_cast<std::int64_t>(labels(i)) != opt.ignore_index)
        weight_of_valid += static_cast<double>(merged(i, 5));
    std::vector<T> w;
    ce_params<T> prm = params(w);
    const bool mean = opt.reduction == Reduction::mean;
    prm.grad_ce = mean ? static_cast<T>(1.0 / weight_of_valid) : T(1);
    prm.grad_z = mean ? static_cast<T>(1.0 / static_cast<double>(valid_rows)) : T(1);
    using Lbl = std::remove_const_t<scalar_t<Y>>;
    const ce_totals tot = cross_entropy_shard_finish<has_grad, best_arch>(
        n, k, x, per_dist<const Lbl>(vector_view(labels)), merged.data(), g,
        per_dist<const T>{nullptr, 0}, per_dist<T>{nullptr, 0}, prm, thread_count());
    if constexpr (has_grad) {
      if (grad_tmp.size() != 0) *grad = grad_tmp;
    }
    return reduce_loss(tot, mean, weight_of_valid, valid_rows, opt.z_loss);
  }
};

template <class L, class Y>
shard_job<L, Y> shard_setup(const char* fn, const L& logits, const Y& labels, index_t offset,
                            index_t vocab, const CrossEntropyOptions& opt) {
  check_real_scalar<L>();
  static_assert(is_integer_v<Y>, "smax: vocabulary-parallel cross-entropy takes class indices");
  shard_job<L, Y> job{logits, labels, logits.rows(), logits.cols(), offset, vocab, opt};
  require_reduced(fn, opt);
  if (vocab < 1 || offset < 0 || job.k > vocab - offset)
    throw std::invalid_argument(std::string(fn) + ": the shard [offset, offset + k) = [" +
                                std::to_string(offset) + ", " + std::to_string(offset + job.k) +
                                ") is not inside the vocabulary [0, " + std::to_string(vocab) +
                                ")");
  check_options<typename shard_job<L, Y>::T>(fn, opt,
                                             job.k == 0 ? opt.class_weights.size() : job.k);
  require_label_vector(fn, job.labels, job.n);
  job.valid_rows = validate_labels(fn, job.labels, vocab, opt.ignore_index, nullptr);
  return job;
}

}  // namespace detail

/// The cross-entropy loss of `logits` (N x K, rows are samples) against `target`.
///
/// @param logits  any dense Eigen expression of float, double, Eigen::bfloat16 or Eigen::half
///                (16-bit logits are computed in float), row- or column-major.
/// @param target  class indices (any integer Eigen vector of length N: int, int64_t, a Map over
///                another framework's buffer), or probabilities of the logits' shape and type.
/// @param options reduction (mean or sum here), ignore_index, label_smoothing, z_loss, softcap,
///                class_weights; see CrossEntropyOptions and the README for the exact formulas.
/// @return the loss, in the logits' type (float for 16-bit logits; accumulated in double over
///         rows).
/// Accuracy: within 1e-5 (float) / 1e-12 (double) relative of the exact loss.
/// Special values: -inf logits are masked classes (probability 0); a label on a masked class
///   gives +inf; NaN/+inf logits in a valid row give NaN. Every row ignored (or N = 0): mean is
///   NaN, sum is 0. With probability targets, a zero target contributes 0 even where the logit is
///   -inf; targets need not sum to 1 (as in PyTorch).
/// Throws (before anything is written): std::out_of_range for a label outside [0, K) that is not
///   ignore_index; std::invalid_argument for K == 0, mismatched shapes, options out of range,
///   class_weights of the wrong size, and Reduction::none (use cross_entropy_per_row).
template <class L, class Y>
detail::compute_t<detail::scalar_t<L>> cross_entropy(const Eigen::DenseBase<L>& logits,
                                                     const Eigen::DenseBase<Y>& target,
                                                     const CrossEntropyOptions& options = {}) {
  constexpr const char* fn = "smax::cross_entropy";
  detail::require_reduced(fn, options);
  return static_cast<detail::compute_t<detail::scalar_t<L>>>(detail::cross_entropy_impl(
      fn, logits.derived(), target.derived(), static_cast<std::nullptr_t*>(nullptr),
      static_cast<const std::nullptr_t*>(nullptr), static_cast<std::nullptr_t*>(nullptr), options));
}

/// The loss, and grad = ∂loss/∂logits written in the same pass.
///
/// @param grad  a writable dense object of the logits' shape and scalar type (an empty plain
///              Matrix is resized); it may be the logits object itself (in place: no second N x K
///              buffer). 16-bit gradients are computed in float and rounded once per entry.
/// Gradient: (softmax − onehot)/denominator for the defaults; with every option, the exact
///   derivative of the returned loss (formulas in the README). The label's own entry is computed
///   as −Σ_{j≠y} p_j, so confident predictions keep their tiny gradients. Ignored rows get 0.
/// Accuracy: every entry within 32 eps of the largest term of its row's gradient formula.
/// Everything else as the loss-only overload.
template <class L, class Y, class G>
detail::compute_t<detail::scalar_t<L>> cross_entropy(const Eigen::DenseBase<L>& logits,
                                                     const Eigen::DenseBase<Y>& target,
                                                     const Eigen::DenseBase<G>& grad,
                                                     const CrossEntropyOptions& options = {}) {
  constexpr const char* fn = "smax::cross_entropy";
  detail::require_reduced(fn, options);
  // Eigen's idiom for output arguments that may be temporaries (blocks, Maps).
  auto& out = const_cast<G&>(grad.derived());
  return static_cast<detail::compute_t<detail::scalar_t<L>>>(detail::cross_entropy_impl(
      fn, logits.derived(), target.derived(), &out, static_cast<const std::nullptr_t*>(nullptr),
      static_cast<std::nullptr_t*>(nullptr), options));
}

/// Reduction::none: the loss of each row, written into `losses` (length N; ignored rows get 0).
/// options.reduction is not used. Otherwise as cross_entropy.
template <class L, class Y, class O>
void cross_entropy_per_row(const Eigen::DenseBase<L>& logits, const Eigen::DenseBase<Y>& target,
                           const Eigen::DenseBase<O>& losses,
                           const CrossEntropyOptions& options = {}) {
  auto& out = const_cast<O&>(losses.derived());
  detail::cross_entropy_impl("smax::cross_entropy_per_row", logits.derived(), target.derived(),
                             static_cast<std::nullptr_t*>(nullptr),
                             static_cast<const std::nullptr_t*>(nullptr), &out, options);
}

/// Reduction::none with the backward pass: the loss of each row into `losses`, and grad = the
/// gradient of Σ_i dloss_i · loss_i — row i of the gradient scaled by the upstream dloss_i (per
/// sample weights, policy-gradient advantages, distillation coefficients). dloss and losses have
/// N entries of the logits' type (float for 16-bit logits). options.reduction is not used.
template <class L, class Y, class O, class D, class G>
void cross_entropy_per_row(const Eigen::DenseBase<L>& logits, const Eigen::DenseBase<Y>& target,
                           const Eigen::DenseBase<O>& losses, const Eigen::DenseBase<D>& dloss,
                           const Eigen::DenseBase<G>& grad,
                           const CrossEntropyOptions& options = {}) {
  auto& out = const_cast<O&>(losses.derived());
  auto& g = const_cast<G&>(grad.derived());
  detail::cross_entropy_impl("smax::cross_entropy_per_row", logits.derived(), target.derived(), &g,
                             &dloss.derived(), &out, options);
}

/// Vocabulary-parallel cross-entropy: the number of statistics per row.
inline constexpr Eigen::Index shard_stats_width = detail::ce_stats_width;

/// Vocabulary-parallel cross-entropy, step 1 of 3: the per-row statistics of one shard.
///
/// When a vocabulary of K classes is split across processes, the process holding classes
/// [offset, offset + k) holds `logits_shard` (N x k) and every label. Its statistics (N rows of
/// shard_stats_width values: max, Σ exp(x − max) without the label's class, the smoothing sum,
/// the shard's weight sum, the label's logit and weight when the label is in the shard) are
/// merged over all shards with merge_shard_stats (associative and commutative: an all-reduce,
/// e.g. MPI_Allreduce with a user-defined op), then step 3 gives each shard its gradient.
/// No process ever needs another's logits. Supports every option except probability targets
/// and Reduction::none; options.class_weights is this shard's slice (k entries). float and
/// double logits (not 16-bit ones).
/// Throws as smax::cross_entropy, and std::invalid_argument when the shard is not inside [0, K).
template <class L, class Y>
Eigen::Matrix<detail::scalar_t<L>, Eigen::Dynamic, shard_stats_width, Eigen::RowMajor>
cross_entropy_shard_stats(const Eigen::DenseBase<L>& logits_shard,
                          const Eigen::DenseBase<Y>& labels, Eigen::Index offset,
                          Eigen::Index vocab, const CrossEntropyOptions& options = {}) {
  constexpr const char* fn = "smax::cross_entropy_shard_stats";
  using T = detail::scalar_t<L>;
  const auto prm_and_views =
      detail::shard_setup(fn, logits_shard.derived(), labels.derived(), offset, vocab, options);
  Eigen::Matrix<T, Eigen::Dynamic, shard_stats_width, Eigen::RowMajor> stats(prm_and_views.n,
                                                                             shard_stats_width);
  prm_and_views.run_stats(stats.data());
  return stats;
}

/// Vocabulary-parallel cross-entropy, step 2 of 3: `into` becomes the statistics of the union
/// of both shards' classes (row by row). Both are N x shard_stats_width, of the same type.
template <class A, class B>
void merge_shard_stats(const Eigen::DenseBase<A>& into, const Eigen::DenseBase<B>& other) {
  auto& a = const_cast<A&>(into.derived());
  const auto& b = other.derived();
  using T = detail::scalar_t<A>;
  static_assert(std::is_same<T, detail::scalar_t<B>>::value,
                "smax::merge_shard_stats: both statistics have the same scalar type");
  detail::require_same_shape("smax::merge_shard_stats", "into", a, "other", b);
  if (a.cols() != shard_stats_width)
    throw std::invalid_argument("smax::merge_shard_stats: statistics have " +
                                std::to_string(a.cols()) + " columns, not " +
                                std::to_string(shard_stats_width));
  for (Eigen::Index i = 0; i < a.rows(); ++i) {
    const detail::ce_stats<T> x{a(i, 0), a(i, 1), a(i, 2), a(i, 3), a(i, 4), a(i, 5)};
    const detail::ce_stats<T> y{b(i, 0), b(i, 1), b(i, 2), b(i, 3), b(i, 4), b(i, 5)};
    const detail::ce_stats<T> m = detail::merge_stats(x, y);
    a(i, 0) = m.max;
    a(i, 1) = m.sum_other;
    a(i, 2) = m.smooth;
    a(i, 3) = m.weight_sum;
    a(i, 4) = m.target;
    a(i, 5) = m.target_weight;
  }
}

/// Vocabulary-parallel cross-entropy, step 3 of 3: the loss over the whole vocabulary (the same
/// on every shard, from the merged statistics) and this shard's gradient grad_shard (N x k),
/// equal to the columns [offset, offset + k) of smax::cross_entropy's gradient on the whole
/// logits matrix. Arguments as in step 1, plus the merged statistics.
template <class L, class Y, class S, class G>
detail::scalar_t<L> cross_entropy_shard(const Eigen::DenseBase<L>& logits_shard,
                                        const Eigen::DenseBase<Y>& labels, Eigen::Index offset,
                                        Eigen::Index vocab, const Eigen::DenseBase<S>& merged,
                                        const Eigen::DenseBase<G>& grad_shard,
                                        const CrossEntropyOptions& options = {}) {
  constexpr const char* fn = "smax::cross_entropy_shard";
  auto& g = const_cast<G&>(grad_shard.derived());
  const auto setup =
      detail::shard_setup(fn, logits_shard.derived(), labels.derived(), offset, vocab, options);
  return static_cast<detail::scalar_t<L>>(setup.run_finish(fn, merged.derived(), &g));
}

/// The loss of vocabulary-parallel cross-entropy from merged statistics alone (no logits).
template <class Y, class S>
detail::scalar_t<S> cross_entropy_from_stats(const Eigen::DenseBase<Y>& labels, Eigen::Index vocab,
                                             const Eigen::DenseBase<S>& merged,
                                             const CrossEntropyOptions& options = {}) {
  constexpr const char* fn = "smax::cross_entropy_from_stats";
  using T = detail::scalar_t<S>;
  const Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic> none(merged.rows(), 0);
  const auto setup = detail::shard_setup(fn, none, labels.derived(), 0, vocab, options);
  return static_cast<T>(
      setup.run_finish(fn, merged.derived(), static_cast<std::nullptr_t*>(nullptr)));
}

}  // namespace smax
