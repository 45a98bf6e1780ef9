// The translation unit scripts/tidy.sh runs clang-tidy on: every public header, every public
// function instantiated for float and double, row- and column-major, so that the checks see the
// kernels the way users compile them.
#include <smax/smax.hpp>

#include <cstdint>

namespace {

template <class T, int Layout>
T exercise() {
  using M = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Layout>;
  M x = M::Random(9, 21), y(9, 21), g(9, 21);
  y = smax::softmax(x);
  y = smax::log_softmax(x, smax::colwise);
  Eigen::Matrix<T, Eigen::Dynamic, 1> lse = smax::logsumexp(x);
  g = smax::softmax_backward(y, x);
  g = smax::log_softmax_backward(y, x);
  Eigen::Matrix<std::int64_t, Eigen::Dynamic, 1> labels = Eigen::Matrix<std::int64_t, Eigen::Dynamic, 1>::Zero(9);
  smax::CrossEntropyOptions o;
  o.label_smoothing = 0.1;
  T loss = smax::cross_entropy(x, labels, g, o) + smax::cross_entropy(x, y, o);
  smax::cross_entropy_per_row(x, labels, lse, o);
  const auto stats = smax::cross_entropy_shard_stats(x, labels, 0, 21, o);
  loss += smax::cross_entropy_shard(x, labels, 0, 21, stats, g, o);
  return loss + lse.sum();
}

}  // namespace

int main() {
  try {
    return static_cast<int>(exercise<float, Eigen::RowMajor>() +
                            exercise<double, Eigen::ColMajor>() +
                            exercise<float, Eigen::ColMajor>() + exercise<double, Eigen::RowMajor>());
  } catch (...) {
    return 1;
  }
}
