// One short epoch on a subset of the real Fashion-MNIST: the loss falls, the accuracy beats chance
// (0.1) by far, and a seed gives the same run twice. When the data is absent the program says so
// and exits with 77, which CTest reports as skipped (SKIP_RETURN_CODE).
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <cstdio>
#include <numeric>
#include <random>
#include <string>

#include "dataset.hpp"
#include "mlp.hpp"

#ifndef FMNIST_DEFAULT_DATA
#define FMNIST_DEFAULT_DATA "/usr/share/datasets/fashion-mnist"
#endif

namespace {

constexpr int kSkipped = 77;
constexpr Eigen::Index kSubset = 10000;

/// The real data, loaded once: the training set cut to its first kSubset images.
const fmnist::Dataset& data() {
  static const fmnist::Dataset d = [] {
    fmnist::Dataset full = fmnist::load(FMNIST_DEFAULT_DATA);
    REQUIRE(full.train.size() == 60000);
    REQUIRE(full.test.size() == 10000);
    full.train.images.conservativeResize(kSubset, Eigen::NoChange);
    full.train.labels.conservativeResize(kSubset);
    return full;
  }();
  return d;
}

struct Run {
  fmnist::Params model;
  fmnist::EpochStats stats;
  double test_accuracy;
};

Run one_epoch(std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  Run r{fmnist::he_init(fmnist::kPixels, 128, fmnist::kClasses, rng), {}, 0.0};
  fmnist::Adam adam(r.model, 1e-3f);
  fmnist::Workspace ws;
  r.stats = fmnist::train_epoch(r.model, adam, data().train, 128, rng, ws);
  r.test_accuracy = fmnist::accuracy(r.model, data().test);
  return r;
}

double mean(const float* first, const float* last) {
  return std::accumulate(first, last, 0.0) / double(last - first);
}

}  // namespace

TEST_CASE("one epoch on 10000 images: the loss falls, the accuracy beats chance", "[train]") {
  const Run r = one_epoch(1);
  const auto& losses = r.stats.batch_losses;
  REQUIRE(losses.size() == 79);  // ceil(10000 / 128)
  const double first = mean(losses.data(), losses.data() + 10);
  const double last = mean(losses.data() + losses.size() - 10, losses.data() + losses.size());
  INFO("mean loss of the first 10 batches " << first << ", of the last 10 " << last
                                            << "; test accuracy " << r.test_accuracy);
  CHECK(first > 1.2);  // ln 10 = 2.30 at the start: He-initialized logits are near uniform
  CHECK(last < 0.5 * first);
  CHECK(r.test_accuracy > 0.6);
}

TEST_CASE("a seed gives the same run twice", "[train]") {
  const Run a = one_epoch(7), b = one_epoch(7), c = one_epoch(8);
  CHECK(a.stats.batch_losses == b.stats.batch_losses);
  CHECK(a.model.W1 == b.model.W1);
  CHECK(a.test_accuracy == b.test_accuracy);
  CHECK(a.stats.batch_losses != c.stats.batch_losses);
}

int main(int argc, char** argv) {
  if (!fmnist::available(FMNIST_DEFAULT_DATA)) {
    std::printf(
        "SKIPPED: Fashion-MNIST is not in %s (Debian: apt-get install "
        "dataset-fashion-mnist; or configure with -DSMAX_FASHION_MNIST_DIR=<folder>)\n",
        FMNIST_DEFAULT_DATA);
    return kSkipped;
  }
  return Catch::Session().run(argc, argv);
}
