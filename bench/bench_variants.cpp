// The rest of the sweep, smax only (with the naive Eigen loop where a C++ user has one to write):
// other element types (bfloat16 logits, double) and the backward passes.
//
//   BM_softmax_smax_bf16_row, BM_log_softmax_smax_bf16_row   bf16 in, bf16 out (4 bytes/element)
//   BM_ce_fwdbwd_smax_bf16_row                               bf16 logits and gradient
//   BM_softmax_smax_f64_row                                  double in and out (16 bytes/element)
//   BM_softmax_backward_{smax,eigen_loop,torch}_row          dx from y and dy (12 bytes/element)
//   BM_log_softmax_backward_{smax,eigen_loop,torch}_row      dx from logp and dlogp
//   BM_softmax_smax_2pass_row (K >= 4096)   the pass-structure study: a two-pass softmax made of
//       smax's own kernel pieces (pass 1: per chunk of 4096 classes, read from memory once, its
//       max and then its exp-sum from L1, chunks merged with exp(m_c - M); pass 2: exp again,
//       scaled, streamed out), against smax's three passes (max; exp, sum, store; scale)
//
// Table and plots read them as further implementations of the same op (impl smax_bf16,
// smax_f64), so that each compares with float smax on the same row of the table.
#include "common.hpp"

#include <smax/smax.hpp>

#ifdef SMAX_BENCH_HAVE_TORCH
#include "torch_peer.hpp"
#endif

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

namespace smax_bench {
namespace {

using BfMat = Eigen::Matrix<Eigen::bfloat16, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using F64Mat = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// Per-row softmax (log: log-softmax) of x, in double.
RefMat softmax_ref(const RefMat& x, bool log) {
  RefMat r = x;
  for (Index i = 0; i < r.rows(); ++i) {
    auto row = r.row(i).array();
    row -= row.maxCoeff();
    const double s = row.exp().sum();
    if (log) {
      row -= std::log(s);
    } else {
      row = row.exp() / s;
    }
  }
  return r;
}

/// bf16 holds 8 significant bits: a result rounded to it is within 2^-8 relative
constexpr double bf16_tolerance = 0x1p-7;  // and a margin for the float arithmetic

template <bool Log>
void BM_softmax_bf16(benchmark::State& st) {
  const Shape s = shape_of(st);
  const BfMat x = logits<RowMat>(s).cast<Eigen::bfloat16>();
  BfMat y(s.n, s.k);
  measure(
      st, {s, Log ? "log_softmax" : "softmax", "smax_bf16", "row", 4}, y,
      [&] {
        if constexpr (Log) {
          y = smax::log_softmax(x);
        } else {
          y = smax::softmax(x);
        }
      },
      [&] {
        const RefMat ref = softmax_ref(x.cast<double>(), Log);
        const RowMat got = y.cast<float>();
        return Log ? compare_log(got, ref, bf16_tolerance)
                   : compare_relative(got, ref, bf16_tolerance);
      });
}

void BM_softmax_f64(benchmark::State& st) {
  const Shape s = shape_of(st);
  const F64Mat x = logits<RowMat>(s).cast<double>();
  F64Mat y(s.n, s.k);
  measure(
      st, {s, "softmax", "smax_f64", "row", 16}, y, [&] { y = smax::softmax(x); },
      [&] { return compare_relative(y, softmax_ref(x, false), 1e-12); });
}

void BM_ce_fwdbwd_bf16(benchmark::State& st) {
  const Shape s = shape_of(st);
  const BfMat x = logits<RowMat>(s).cast<Eigen::bfloat16>();
  const Eigen::VectorXi y = labels(s);
  BfMat g(s.n, s.k);
  float loss = 0;
  measure(
      st, {s, "ce_fwdbwd", "smax_bf16", "row", 4}, g,
      [&] {
        loss = smax::cross_entropy(x, y, g);
        sink(loss);
      },
      [&] {
        const RefMat p = softmax_ref(x.cast<double>(), false);
        RefMat grad = p;
        double ref_loss = 0;
        for (Index i = 0; i < s.n; ++i) {
          ref_loss -= std::log(p(i, y(i)));
          grad(i, y(i)) -= 1.0;
        }
        ref_loss /= static_cast<double>(s.n);
        grad /= static_cast<double>(s.n);
        const double loss_err = std::abs(loss - ref_loss) / std::abs(ref_loss);
        if (!(loss_err <= tolerance(s.k))) return Verdict{loss_err, "the loss differs"};
        const double scale = grad.cwiseAbs().maxCoeff();
        return compare(RowMat(g.cast<float>()), grad, bf16_tolerance,
                       [scale](double) { return scale; });
      });
}

/// dx of softmax (Log: log-softmax) from the forward output and an upstream gradient.
template <bool Log>
RefMat backward_ref(const RowMat& out, const RowMat& d) {
  RefMat r(out.rows(), out.cols());
  for (Index i = 0; i < out.rows(); ++i) {
    const auto o = out.row(i).cast<double>().array();
    const auto g = d.row(i).cast<double>().array();
    if constexpr (Log) {
      r.row(i) = g - o.exp() * g.sum();
    } else {
      r.row(i) = o * (g - (o * g).sum());
    }
  }
  return r;
}

/// The forward output (probabilities or log-probabilities) and an upstream gradient.
template <bool Log>
std::pair<RowMat, RowMat> backward_inputs(const Shape& s) {
  const RowMat x = logits<RowMat>(s);
  RowMat out(s.n, s.k);
  if constexpr (Log) {
    out = smax::log_softmax(x);
  } else {
    out = smax::softmax(x);
  }
  // An upstream gradient of the same distribution as the logits, shifted along each row.
  RowMat d = Eigen::Map<const RowMat>(normal_logits(s.size() + 1) + 1, s.n, s.k);
  return {out, d};
}

/// Backward errors relative to each row's largest magnitude (entries cancel by nature).
Verdict compare_backward(const RowMat& got, const RefMat& ref, const RowMat& d, double tol) {
  const double scale = std::max<double>(1e-30, d.cwiseAbs().maxCoeff());
  return compare(got, ref, tol, [scale](double) { return scale; });
}

template <bool Log>
void BM_backward_smax(benchmark::State& st) {
  const Shape s = shape_of(st);
  const auto inputs = backward_inputs<Log>(s);
  const RowMat &out = inputs.first, &d = inputs.second;
  RowMat dx(s.n, s.k);
  measure(
      st, {s, Log ? "log_softmax_backward" : "softmax_backward", "smax", "row", 12}, dx,
      [&] {
        if constexpr (Log) {
          dx = smax::log_softmax_backward(out, d);
        } else {
          dx = smax::softmax_backward(out, d);
        }
      },
      [&] { return compare_backward(dx, backward_ref<Log>(out, d), d, tolerance(s.k)); });
}

/// The row loop an Eigen user writes for the same products.
template <bool Log>
void BM_backward_eigen_loop(benchmark::State& st) {
  const Shape s = shape_of(st);
  const auto inputs = backward_inputs<Log>(s);
  const RowMat &out = inputs.first, &d = inputs.second;
  RowMat dx(s.n, s.k);
  measure(
      st, {s, Log ? "log_softmax_backward" : "softmax_backward", "eigen_loop", "row", 12}, dx,
      [&] {
        for (Index i = 0; i < s.n; ++i) {
          if constexpr (Log) {
            const float sum = d.row(i).sum();
            dx.row(i).array() = d.row(i).array() - out.row(i).array().exp() * sum;
          } else {
            const float dot = out.row(i).dot(d.row(i));
            dx.row(i).array() = out.row(i).array() * (d.row(i).array() - dot);
          }
        }
      },
      [&] { return compare_backward(dx, backward_ref<Log>(out, d), d, tolerance(s.k)); });
}

#ifdef SMAX_BENCH_HAVE_TORCH
/// PyTorch: the operators autograd runs for softmax's and log_softmax's backward.
template <bool Log>
void BM_backward_torch(benchmark::State& st) {
  const Shape s = shape_of(st);
  const auto inputs = backward_inputs<Log>(s);
  const RowMat &out = inputs.first, &d = inputs.second;
  RowMat dx(s.n, s.k);
  torch_peer::call run(
      Log ? torch_peer::op::log_softmax_backward : torch_peer::op::softmax_backward, s.n, s.k, true,
      out.data(), d.data(), dx.data());
  measure(
      st, {s, Log ? "log_softmax_backward" : "softmax_backward", "torch", "row", 12}, dx,
      [&] { run(); },
      [&] { return compare_backward(dx, backward_ref<Log>(out, d), d, tolerance(s.k)); });
}
#endif

/// The two-pass candidate (see the top of this file), one row at a time.
void two_pass_softmax(const RowMat& x, RowMat& y, std::vector<float>& chunk_max,
                      std::vector<float>& chunk_sum) {
  namespace d = smax::detail;
  using V = d::vec_t<float, d::best_arch>;
  constexpr Index chunk = 4096;
  const Index k = x.cols(), chunks = (k + chunk - 1) / chunk;
  for (Index i = 0; i < x.rows(); ++i) {
    const d::strided<const float> xi{x.data() + i * k, k, 1};
    const d::strided<float> yi{y.data() + i * k, k, 1};
    float m = -std::numeric_limits<float>::infinity();
    for (Index c = 0; c < chunks; ++c) {
      const d::contiguous_group<V> g{std::min(k, (c + 1) * chunk), c * chunk};
      const float mc = g.reduce_max([=](const auto& io) { return io.load(xi); });
      const float shift = d::row_shift(mc);
      chunk_max[static_cast<std::size_t>(c)] = mc;
      chunk_sum[static_cast<std::size_t>(c)] =
          g.reduce_sum([=](const auto& io) { return d::exp_nonpos(io.load(xi) - io.splat(shift)); });
      m = std::max(m, mc);
    }
    const float shift = d::row_shift(m);
    d::pairwise_sum<float> total;
    for (Index c = 0; c < chunks; ++c) {
      const float mc = chunk_max[static_cast<std::size_t>(c)];
      const float f = mc == -std::numeric_limits<float>::infinity() ? 0.0f : d::exp_nonpos(mc - shift);
      total.add(chunk_sum[static_cast<std::size_t>(c)] * f);
    }
    const float inv = d::row_reciprocal(total.total());
    const d::contiguous_group<V> g{k, 0};
    g.for_each_stream(yi, [=](const auto& io) {
      io.store(yi, d::exp_nonpos(io.load(xi) - io.splat(shift)) * io.splat(inv));
    });
  }
  d::stream_fence();
}

void BM_softmax_2pass(benchmark::State& st) {
  const Shape s = shape_of(st);
  const RowMat x = logits<RowMat>(s);
  RowMat y(s.n, s.k);
  std::vector<float> cm(static_cast<std::size_t>(s.k / 4096 + 1)), cs(cm.size());
  measure(
      st, {s, "softmax", "smax_2pass", "row"}, y, [&] { two_pass_softmax(x, y, cm, cs); },
      [&] { return compare_relative(y, softmax_ref(x.cast<double>(), false), tolerance(s.k)); });
}

[[maybe_unused]] const bool registered = [] {
  const auto add = [](const char* name, void (*fn)(benchmark::State&)) {
    benchmark::RegisterBenchmark(name, fn)->Apply(sweep);
  };
  add("BM_softmax_smax_bf16_row", BM_softmax_bf16<false>);
  add("BM_log_softmax_smax_bf16_row", BM_softmax_bf16<true>);
  add("BM_ce_fwdbwd_smax_bf16_row", BM_ce_fwdbwd_bf16);
  add("BM_softmax_smax_f64_row", BM_softmax_f64);
  add("BM_softmax_backward_smax_row", BM_backward_smax<false>);
  add("BM_softmax_backward_eigen_loop_row", BM_backward_eigen_loop<false>);
  add("BM_log_softmax_backward_smax_row", BM_backward_smax<true>);
  add("BM_log_softmax_backward_eigen_loop_row", BM_backward_eigen_loop<true>);
#ifdef SMAX_BENCH_HAVE_TORCH
  add("BM_softmax_backward_torch_row", BM_backward_torch<false>);
  add("BM_log_softmax_backward_torch_row", BM_backward_torch<true>);
#endif
  benchmark::RegisterBenchmark("BM_softmax_smax_2pass_row", BM_softmax_2pass)
      ->ArgNames({"K", "total"})
      ->ArgsProduct({{4096, 10000, 32000, 50257, 128000, 262144}, kTotals})
      ->Unit(benchmark::kMicrosecond);
  return true;
}();

}  // namespace
}  // namespace smax_bench
