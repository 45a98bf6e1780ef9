// The softmax sweep: smax's softmax and log_softmax against what an Eigen user would write
// otherwise (a loop over rows; one whole-matrix expression) and against oneDNN's primitive and
// PyTorch's operator (each when the build found it), over
// K = 2 .. 262144 classes in the cache-resident and out-of-cache regimes (common.hpp).
//
// BM_<op>_<impl>_<layout>: op is softmax or log_softmax; layout is row (an N x K row-major
// matrix, each row contiguous) or col (N x K column-major, still normalized per row: smax and
// oneDNN vectorize across rows). Every implementation writes into a preallocated matrix of its
// input's layout, single-threaded.
#include "common.hpp"

#include <smax/smax.hpp>

#ifdef SMAX_BENCH_HAVE_DNNL
#include "dnnl_peer.hpp"
#endif
#ifdef SMAX_BENCH_HAVE_TORCH
#include "torch_peer.hpp"
#endif

#include <algorithm>
#include <cmath>
#include <string>

namespace smax_bench {
namespace {

enum class Op { softmax, log_softmax };

constexpr const char* name(Op op) { return op == Op::softmax ? "softmax" : "log_softmax"; }

template <int Layout>
constexpr const char* layout_name() {
  return Layout == Eigen::RowMajor ? "row" : "col";
}

/// softmax or log_softmax of each row, in double: the reference every implementation meets.
RefMat reference(Op op, const RowMat& x) {
  RefMat r = x.cast<double>();
  for (Index i = 0; i < r.rows(); ++i) {
    auto row = r.row(i).array();
    row -= row.maxCoeff();
    const double s = row.exp().sum();
    if (op == Op::softmax) {
      row = row.exp() / s;
    } else {
      row -= std::log(s);
    }
  }
  return r;
}

template <class Y>
Verdict check(Op op, const Shape& s, const Y& y) {
  const RefMat ref = reference(op, logits<RowMat>(s));
  return op == Op::softmax ? compare_relative(y, ref, tolerance(s.k))
                           : compare_log(y, ref, tolerance(s.k));
}

// ---- the implementations ------------------------------------------------------------------------

/// smax: `y = smax::softmax(x)` (rowwise, the default).
template <Op op, int Layout>
void BM_smax(benchmark::State& st) {
  const Shape s = shape_of(st);
  const auto x = logits<Mat<Layout>>(s);
  Mat<Layout> y(s.n, s.k);
  measure(
      st, {s, name(op), "smax", layout_name<Layout>()}, y,
      [&] {
        if constexpr (op == Op::softmax) {
          y = smax::softmax(x);
        } else {
          y = smax::log_softmax(x);
        }
      },
      [&] { return check(op, s, y); });
}

/// The loop an Eigen user writes first: per row, max, exp, sum, scale (row-major, so each row is
/// one contiguous, vectorized Eigen expression).
template <Op op>
void BM_eigen_loop(benchmark::State& st) {
  const Shape s = shape_of(st);
  const auto x = logits<RowMat>(s);
  RowMat y(s.n, s.k);
  measure(
      st, {s, name(op), "eigen_loop", "row"}, y,
      [&] {
        for (Index i = 0; i < s.n; ++i) {
          const float m = x.row(i).maxCoeff();
          if constexpr (op == Op::softmax) {
            y.row(i).array() = (x.row(i).array() - m).exp();
            y.row(i) /= y.row(i).sum();
          } else {
            const float lse = m + std::log((x.row(i).array() - m).exp().sum());
            y.row(i).array() = x.row(i).array() - lse;
          }
        }
      },
      [&] { return check(op, s, y); });
}

/// The whole matrix as Eigen expressions: the row maxima and sums are N-vectors (preallocated,
/// like y), everything else is elementwise over N x K and left to Eigen's vectorizer. The shift
/// and the exp are two statements on purpose: Eigen 3.4 evaluates the fused
/// `(x.colwise() - m).array().exp()` one scalar std::exp at a time (3-7x slower here), and a fair
/// peer is the fast idiom.
template <Op op, int Layout>
void BM_eigen_expr(benchmark::State& st) {
  const Shape s = shape_of(st);
  const auto x = logits<Mat<Layout>>(s);
  Mat<Layout> y(s.n, s.k);
  Eigen::VectorXf m(s.n), t(s.n);
  measure(
      st, {s, name(op), "eigen_expr", layout_name<Layout>()}, y,
      [&] {
        m = x.rowwise().maxCoeff();
        y = x.colwise() - m;
        if constexpr (op == Op::softmax) {
          y.array() = y.array().exp();
          t = y.rowwise().sum();
          y.array().colwise() /= t.array();
        } else {
          t = y.array().exp().rowwise().sum().log();
          y.array().colwise() -= t.array();
        }
      },
      [&] { return check(op, s, y); });
}

#ifdef SMAX_BENCH_HAVE_DNNL
/// oneDNN's softmax primitive (dnnl_peer.hpp), on the same buffers.
template <Op op, int Layout>
void BM_dnnl(benchmark::State& st) {
  const Shape s = shape_of(st);
  const auto x = logits<Mat<Layout>>(s);
  Mat<Layout> y(s.n, s.k);
  dnnl_peer::softmax prim(op == Op::log_softmax, s.n, s.k, Layout == Eigen::RowMajor, x.data(),
                          y.data());
  measure(
      st,
      {s, name(op), "dnnl", layout_name<Layout>(), 2 * int{sizeof(float)}, "dnnl=" + prim.impl()},
      y, [&] { prim(); }, [&] { return check(op, s, y); });
}
#endif

#ifdef SMAX_BENCH_HAVE_TORCH
/// PyTorch: the operator torch.softmax / torch.log_softmax runs (at::_softmax_out), over the
/// same buffer as a strided CPU tensor.
template <Op op, int Layout>
void BM_torch(benchmark::State& st) {
  const Shape s = shape_of(st);
  const auto x = logits<Mat<Layout>>(s);
  Mat<Layout> y(s.n, s.k);
  torch_peer::call run(op == Op::softmax ? torch_peer::op::softmax : torch_peer::op::log_softmax,
                       s.n, s.k, Layout == Eigen::RowMajor, x.data(), nullptr, y.data());
  measure(
      st, {s, name(op), "torch", layout_name<Layout>()}, y, [&] { run(); },
      [&] { return check(op, s, y); });
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
  add("eigen_expr_row", BM_eigen_expr<op, Eigen::RowMajor>);
  add("eigen_expr_col", BM_eigen_expr<op, Eigen::ColMajor>);
#ifdef SMAX_BENCH_HAVE_DNNL
  add("dnnl_row", BM_dnnl<op, Eigen::RowMajor>, true);
  add("dnnl_col", BM_dnnl<op, Eigen::ColMajor>);
#endif
#ifdef SMAX_BENCH_HAVE_TORCH
  add("torch_row", BM_torch<op, Eigen::RowMajor>, true);
  add("torch_col", BM_torch<op, Eigen::ColMajor>);
#endif
}

[[maybe_unused]] const bool registered = [] {
  register_op<Op::softmax>();
  register_op<Op::log_softmax>();
  return true;
}();

}  // namespace
}  // namespace smax_bench
