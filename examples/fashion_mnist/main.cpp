// Trains the Fashion-MNIST softmax classifier of mlp.hpp and reports one line per epoch; the last
// line printed is `test accuracy: 0.XXXX`.
//
//   fashion_mnist [--epochs 5] [--batch-size 128] [--lr 0.001] [--seed 1]
//                 [--data /usr/share/datasets/fashion-mnist] [--limit N]
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <random>
#include <stdexcept>
#include <string>

#include "dataset.hpp"
#include "mlp.hpp"

#ifndef FMNIST_DEFAULT_DATA
#define FMNIST_DEFAULT_DATA "/usr/share/datasets/fashion-mnist"
#endif

namespace {

struct Options {
  int epochs = 5;
  Eigen::Index batch_size = 128;
  float lr = 1e-3f;
  std::uint64_t seed = 1;
  std::string data = FMNIST_DEFAULT_DATA;
  Eigen::Index limit = 0;  ///< train on the first `limit` images only; 0 = all
};

constexpr const char* kUsage =
    "usage: fashion_mnist [--epochs N] [--batch-size N] [--lr X] [--seed N] [--data DIR] "
    "[--limit N]\n"
    "  --epochs N      passes over the training set (default 5)\n"
    "  --batch-size N  mini-batch size (default 128)\n"
    "  --lr X          Adam's learning rate (default 0.001)\n"
    "  --seed N        seed of the initialization and the shuffling (default 1)\n"
    "  --data DIR      folder of the four IDX files, .gz or not (default " FMNIST_DEFAULT_DATA
    ")\n"
    "  --limit N       train on the first N training images only (default: all)\n";

std::string text(double x) {
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%g", x);
  return buffer;
}

/// Parses `--name value` and `--name=value`; throws std::invalid_argument on anything else.
Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i], value;
    if (arg == "-h" || arg == "--help") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    }
    if (const auto eq = arg.find('='); eq != std::string::npos) {
      value = arg.substr(eq + 1);
      arg.resize(eq);
    } else if (i + 1 < argc) {
      value = argv[++i];
    } else {
      throw std::invalid_argument(arg + " needs a value");
    }
    // A number in [lo, hi]; a whole one unless `fraction`.
    auto number = [&](double lo, double hi, bool fraction = false) {
      std::size_t used = 0;
      double x = 0;
      try {
        x = std::stod(value, &used);
      } catch (const std::exception&) {
      }
      if (used == 0 || used != value.size() || !(x >= lo && x <= hi) ||
          (!fraction && x != std::floor(x)))
        throw std::invalid_argument(arg + " " + value + ": expected " +
                                    (fraction ? "a number" : "a whole number") + " in [" +
                                    text(lo) + ", " + text(hi) + "]");
      return x;
    };
    if (arg == "--epochs") {
      o.epochs = int(number(1, 1000));
    } else if (arg == "--batch-size") {
      o.batch_size = Eigen::Index(number(1, 60000));
    } else if (arg == "--lr") {
      o.lr = float(number(1e-9, 10, true));
    } else if (arg == "--seed") {
      o.seed = std::uint64_t(number(0, 1e15));
    } else if (arg == "--data") {
      o.data = value;
    } else if (arg == "--limit") {
      o.limit = Eigen::Index(number(1, 1e9));
    } else {
      throw std::invalid_argument("unknown option " + arg);
    }
  }
  return o;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  try {
    o = parse(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fashion_mnist: %s\n%s", e.what(), kUsage);
    return 2;
  }

  fmnist::Dataset data;
  try {
    data = fmnist::load(o.data);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fashion_mnist: %s\n", e.what());
    return 1;
  }
  if (o.limit > 0 && o.limit < data.train.size()) {
    data.train.images.conservativeResize(o.limit, Eigen::NoChange);
    data.train.labels.conservativeResize(o.limit);
  }

  const Eigen::Index hidden = 128;
  std::mt19937_64 rng(o.seed);
  fmnist::Params model = fmnist::he_init(fmnist::kPixels, hidden, fmnist::kClasses, rng);
  fmnist::Adam adam(model, o.lr);
  fmnist::Workspace ws;

  std::printf("Fashion-MNIST from %s: %td training, %td test images\n", o.data.c_str(),
              data.train.size(), data.test.size());
  std::printf("MLP %d-%td-%d (ReLU), Adam lr %g, batch %td, seed %llu\n", fmnist::kPixels, hidden,
              fmnist::kClasses, double(o.lr), o.batch_size,
              static_cast<unsigned long long>(o.seed));
  std::fflush(stdout);

  const auto start = std::chrono::steady_clock::now();
  double test_accuracy = 0;
  for (int epoch = 1; epoch <= o.epochs; ++epoch) {
    const auto t0 = std::chrono::steady_clock::now();
    const auto stats = fmnist::train_epoch(model, adam, data.train, o.batch_size, rng, ws);
    const double train_seconds = seconds_since(t0);
    const double train_accuracy = fmnist::accuracy(model, data.train);
    test_accuracy = fmnist::accuracy(model, data.test);
    std::printf(
        "epoch %d/%d  loss %.4f  train accuracy %.4f  test accuracy %.4f  %.2f s (+%.2f s "
        "evaluating)\n",
        epoch, o.epochs, stats.mean_loss, train_accuracy, test_accuracy, train_seconds,
        seconds_since(t0) - train_seconds);
    std::fflush(stdout);
  }
  std::printf("total %.2f s\n", seconds_since(start));
  std::printf("test accuracy: %.4f\n", test_accuracy);
}
