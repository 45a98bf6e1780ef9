// The fused cross-entropy sweep: smax::cross_entropy with class-index labels, forward only (the
// loss) and forward+backward (the loss and the gradient, mean reduction), against what a training
// loop would otherwise do in Eigen: a hand-written row loop, and the textbook whole-matrix
// composition (log_softmax, gather, then softmax - onehot); and what PyTorch's F.cross_entropy
// runs on a CPU tensor, when the build found libtorch.
//
// BM_<op>_<impl>_<layout>: op is ce_fwd or ce_fwdbwd. Every implementation writes the gradient into
// a preallocated matrix of the logits' layout, single-threaded. Bytes per element are the
// compulsory traffic: the logits read once, and the gradient written once (fwdbwd).
#include "common.hpp"

#include <smax/smax.hpp>

#ifdef SMAX_BENCH_HAVE_TORCH
#include "torch_peer.hpp"
#endif

#include <cmath>
#include <string>

namespace smax_bench {
namespace {

enum class Op { fwd, fwdbwd };

constexpr const char* name(Op op) { return op == Op::fwd ? "ce_fwd" : "ce_fwdbwd"; }
constexpr int bytes_per_element(Op op) { return (op == Op::fwd ? 1 : 2) * int{sizeof(float)}; }

template <int Layout>
constexpr const char* layout_name() {
  return Layout == Eigen::RowMajor ? "row" : "col";
}

/// The mean loss and its gradient (softmax - onehot) / N, in double.
struct Reference {
  double loss = 0;
  RefMat grad;
};
Reference reference(const Shape& s) {
  const RowMat x = logits<RowMat>(s);
  const Eigen::VectorXi y = labels(s);
  Reference r;
  r.grad = x.cast<double>();
  for (Index i = 0; i < s.n; ++i) {
    auto row = r.grad.row(i).array();
    const double m = row.maxCoeff();
    const double lse = m + std::log((row - m).exp().sum());
    r.loss += lse - row(y(i));
    row = (row - lse).exp();
    row(y(i)) -= 1.0;
  }
  r.loss /= static_cast<double>(s.n);
  r.grad /= static_cast<double>(s.n);
  return r;
}

/// The loss within the tolerance (relative) and, for fwdbwd, the gradient (relative to the
/// largest |entry| of the reference: entries are p/N, small by nature).
template <class G>
Verdict check(Op op, const Shape& s, double loss, const G& grad) {
  const Reference ref = reference(s);
  const double tol = tolerance(s.k);
  const double loss_err = std::abs(loss - ref.loss) / std::abs(ref.loss);
  if (!(loss_err <= tol)) {
    char buf[128];
    std::snprintf(buf, sizeof buf, "the loss is %.9g, the reference %.9g", loss, ref.loss);
    return {loss_err, buf};
  }
  if (op == Op::fwd) return {loss_err};
  const double scale = ref.grad.cwiseAbs().maxCoeff();
  Verdict v = compare(grad, ref.grad, tol, [scale](double) { return scale; });
  v.worst = std::max(v.worst, loss_err);
  return v;
}

// ---- the implementations ------------------------------------------------------------------------

/// smax: one call, the gradient written in the same pass.
template <Op op, int Layout>
void BM_smax(benchmark::State& st) {
  const Shape s = shape_of(st);
  const auto x = logits<Mat<Layout>>(s);
  const Eigen::VectorXi y = labels(s);
  Mat<Layout> g(s.n, s.k);
  float loss = 0;
  measure(
      st, {s, name(op), "smax", layout_name<Layout>(), bytes_per_element(op)}, g,
      [&] {
        if constexpr (op == Op::fwd) {
          loss = smax::cross_entropy(x, y);
        } else {
          loss = smax::cross_entropy(x, y, g);
        }
        sink(loss);
      },
      [&] { return check(op, s, loss, g); });
}

/// The row loop a C++ user writes: per row, max, logsumexp, loss += lse - x[y], and for the
/// gradient exp(x - lse), minus 1 at the label, scaled by 1/N.
template <Op op>
void BM_eigen_loop(benchmark::State& st) {
  const Shape s = shape_of(st);
  const auto x = logits<RowMat>(s);
  const Eigen::VectorXi y = labels(s);
  RowMat g(s.n, s.k);
  float loss = 0;
  measure(
      st, {s, name(op), "eigen_loop", "row", bytes_per_element(op)}, g,
      [&] {
        const float inv_n = 1.0f / static_cast<float>(s.n);
        double total = 0;
        for (Index i = 0; i < s.n; ++i) {
          const float m = x.row(i).maxCoeff();
          const float lse = m + std::log((x.row(i).array() - m).exp().sum());
          total += lse - x(i, y(i));
          if constexpr (op == Op::fwdbwd) {
            g.row(i).array() = (x.row(i).array() - lse).exp() * inv_n;
            g(i, y(i)) -= inv_n;
          }
        }
        loss = static_cast<float>(total / static_cast<double>(s.n));
        sink(loss);
      },
      [&] { return check(op, s, loss, g); });
}

/// The textbook composition over whole matrices: log_softmax (max, shift, exp, row sums, log),
/// gather the labels' log-probabilities, then the gradient as softmax - onehot.
template <Op op>
void BM_eigen_expr(benchmark::State& st) {
  const Shape s = shape_of(st);
  const auto x = logits<RowMat>(s);
  const Eigen::VectorXi y = labels(s);
  RowMat logp(s.n, s.k), g(s.n, s.k);
  Eigen::VectorXf m(s.n), t(s.n);
  float loss = 0;
  measure(
      st, {s, name(op), "eigen_expr", "row", bytes_per_element(op)}, g,
      [&] {
        m = x.rowwise().maxCoeff();
        logp = x.colwise() - m;
        t = logp.array().exp().rowwise().sum().log();
        logp.array().colwise() -= t.array();
        double total = 0;
        for (Index i = 0; i < s.n; ++i) total -= logp(i, y(i));
        loss = static_cast<float>(total / static_cast<double>(s.n));
        if constexpr (op == Op::fwdbwd) {
          g = logp.array().exp().matrix();
          for (Index i = 0; i < s.n; ++i) g(i, y(i)) -= 1.0f;
          g /= static_cast<float>(s.n);
        }
        sink(loss);
      },
      [&] { return check(op, s, loss, g); });
}

#ifdef SMAX_BENCH_HAVE_TORCH
/// PyTorch: what F.cross_entropy(x, y) runs (log_softmax, nll_loss) and, for fwdbwd, what its
/// backward runs (nll_loss_backward, log_softmax_backward), into tensors allocated outside the
/// timed loop.
template <Op op>
void BM_torch(benchmark::State& st) {
  const Shape s = shape_of(st);
  const auto x = logits<RowMat>(s);
  const Eigen::VectorXi y = labels(s);
  RowMat g(s.n, s.k);
  torch_peer::call run(op == Op::fwd ? torch_peer::op::ce_fwd : torch_peer::op::ce_fwdbwd, s.n, s.k,
                       true, x.data(), nullptr, g.data(), y.data());
  measure(
      st, {s, name(op), "torch", "row", bytes_per_element(op)}, g, [&] { run(); },
      [&] { return check(op, s, run.loss(), g); });
}
#endif

// ---- registration -------------------------------------------------------------------------------

template <Op op>
void register_op() {
  const std::string prefix = std::string("BM_") + name(op) + "_";
  // small: also every other K below 17 (row-major, cache-resident).
  auto add = [&](const char* impl, void (*fn)(benchmark::State&), bool small = false) {
    auto* b = benchmark::RegisterBenchmark((prefix + impl).c_str(), fn)->Apply(sweep);
    if (small) b->Apply(small_k);
  };
  add("smax_row", BM_smax<op, Eigen::RowMajor>, true);
  add("smax_col", BM_smax<op, Eigen::ColMajor>);
  add("eigen_loop_row", BM_eigen_loop<op>, true);
  add("eigen_expr_row", BM_eigen_expr<op>);
#ifdef SMAX_BENCH_HAVE_TORCH
  add("torch_row", BM_torch<op>, true);
#endif
}

[[maybe_unused]] const bool registered = [] {
  register_op<Op::fwd>();
  register_op<Op::fwdbwd>();
  return true;
}();

}  // namespace
}  // namespace smax_bench
