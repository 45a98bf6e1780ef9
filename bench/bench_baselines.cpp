// Ceilings to read the other results against, over the same N x K buffers as the sweep:
// memcpy (read x, write y: the memory-bound ceiling, so out-of-cache results read as % of
// memcpy) and one vectorized exp per element (Eigen's, the compute ceiling of a one-exp softmax).
#include "common.hpp"

#include <cmath>
#include <cstring>
#include <string>

namespace smax_bench {
namespace {

void BM_copy_memcpy(benchmark::State& st) {
  const Shape s = shape_of(st);
  const auto x = logits<RowMat>(s);
  RowMat y(s.n, s.k);
  measure(
      st, {s, "copy", "memcpy", "flat"}, y,
      [&] { std::memcpy(y.data(), x.data(), static_cast<std::size_t>(s.size()) * sizeof(float)); },
      [&] {
        return y == x ? Verdict{} : Verdict{1, "the copy differs"};
      });
}

void BM_exp_eigen(benchmark::State& st) {
  const Shape s = shape_of(st);
  const auto x = logits<RowMat>(s);
  RowMat y(s.n, s.k);
  measure(
      st, {s, "exp", "eigen", "flat"}, y, [&] { y.array() = x.array().exp(); },
      [&] { return compare_relative(y, RefMat(x.cast<double>().array().exp()), 1e-5); });
}

[[maybe_unused]] const bool registered = [] {
  benchmark::RegisterBenchmark("BM_copy_memcpy", BM_copy_memcpy)->Apply(sweep);
  benchmark::RegisterBenchmark("BM_exp_eigen", BM_exp_eigen)->Apply(sweep);
  return true;
}();

}  // namespace
}  // namespace smax_bench
