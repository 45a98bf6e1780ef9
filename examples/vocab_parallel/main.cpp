// Vocabulary-parallel cross-entropy on any number of MPI ranks (vocab_parallel.hpp), checked
// against single-process smax::cross_entropy on the whole logits matrix, in float and double.
//
//   mpirun -n 3 ./vocab_parallel
//
// Each rank generates only its own slice of the logits, from a deterministic function of
// (row, global class, seed), so ranks agree on the problem without communicating it. Then:
//   the algorithm   vocab_parallel::cross_entropy on the slice: one all-reduce of N x 6 values.
//   the check       each rank rebuilds the whole N x K matrix from the same function, *only to
//                   verify*, runs smax::cross_entropy on it and compares the loss and its own
//                   columns of the gradient. A few more all-reduces gather the verdicts.
// Tolerances (tol = 1e-6 float, 1e-12 double):
//   loss      |loss − reference| <= tol · |reference|
//   gradient  |g_ij − reference_ij| <= tol · scale_i, row i's largest term of the gradient formula
//             (gradient_scale below), the measure smax's own accuracy is stated in
// Rank 0 prints the problem, the losses and the largest errors over all ranks, and "ok" last if
// every rank passed; every rank exits 1 if any failed.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <string>

#include "vocab_parallel.hpp"

namespace {

using vocab_parallel::Index;
using vocab_parallel::Labels;
using vocab_parallel::Matrix;
using vocab_parallel::Shard;

constexpr std::uint64_t seed = 20240611;

std::uint64_t mix(std::uint64_t x) {  // splitmix64's finalizer
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

/// Uniform in [0, 1), a pure function of its arguments: the same on every rank.
double unit(std::uint64_t stream, std::uint64_t a, std::uint64_t b) {
  return static_cast<double>(mix(mix(mix(seed ^ stream) ^ a) ^ b) >> 11) * 0x1p-53;
}

/// Every fifth row is padding (ignore_index), as in a padded batch of sequences.
Labels make_labels(Index n, Index vocab) {
  Labels y(n);
  for (Index i = 0; i < n; ++i)
    y(i) = i % 5 == 3 ? -100
                      : static_cast<std::int64_t>(unit(1, static_cast<std::uint64_t>(i), 0) *
                                                  static_cast<double>(vocab));
  return y;
}

/// Columns [first, first + count) of the logits: noise in [-4, 4), plus a boost of up to 16 on
/// the label, so that predictions range from hopeless to confident as in a trained model.
template <class T>
Matrix<T> make_logits(const Labels& labels, Index first, Index count) {
  Matrix<T> x(labels.size(), count);
  for (Index i = 0; i < x.rows(); ++i) {
    const double boost = 16.0 * unit(2, static_cast<std::uint64_t>(i), 0);
    for (Index j = 0; j < count; ++j) {
      const Index c = first + j;
      const double v = 8.0 * unit(3, static_cast<std::uint64_t>(i), static_cast<std::uint64_t>(c));
      x(i, j) = static_cast<T>(v - 4.0 + (c == labels(i) ? boost : 0.0));
    }
  }
  return x;
}

/// Class weights of the whole vocabulary; a rank passes smax its own slice.
Eigen::VectorXd make_weights(Index vocab) {
  Eigen::VectorXd w(vocab);
  for (Index c = 0; c < vocab; ++c) w(c) = 0.5 + unit(4, static_cast<std::uint64_t>(c), 0);
  return w;
}

/// Row i's gradient scale: the largest term of the formula that gives its entries (see
/// smax/detail/cross_entropy_kernels.hpp), r((1 − ε) w_y + (ε/K) Σ_c w_c) + 2 s r' |lse|, with r
/// and r' the reductions' factors. smax's accuracy is stated relative to it. The row's largest
/// entry would not do: near the smoothed target (p_y ≈ 1 − ε) the label's entry cancels to far
/// below the terms it is computed from, in both codes. 0 for an ignored row.
template <class T>
Eigen::VectorXd gradient_scale(const Matrix<T>& logits, const Labels& labels,
                               const smax::CrossEntropyOptions& o) {
  const Index n = logits.rows(), k = logits.cols();
  const bool weighted = o.class_weights.size() != 0, mean = o.reduction == smax::Reduction::mean;
  const auto weight = [&](std::int64_t c) { return weighted ? o.class_weights(c) : 1.0; };
  const double weight_sum = weighted ? o.class_weights.sum() : static_cast<double>(k);
  double valid_weight = 0;
  Index valid = 0;
  for (Index i = 0; i < n; ++i) {
    if (labels(i) == o.ignore_index) continue;
    valid_weight += weight(labels(i));
    ++valid;
  }
  const double r = mean ? 1.0 / valid_weight : 1.0,
               r_z = mean ? 1.0 / static_cast<double>(valid) : 1.0;
  Eigen::VectorXd scale = Eigen::VectorXd::Zero(n);
  for (Index i = 0; i < n; ++i) {
    if (labels(i) == o.ignore_index) continue;
    Eigen::ArrayXd v = logits.row(i).transpose().template cast<double>().array();
    if (o.softcap > 0) v = o.softcap * (v / o.softcap).tanh();
    const double m = v.maxCoeff(), lse = m + std::log((v - m).exp().sum());
    const double eps = o.label_smoothing;
    scale(i) = r * ((1 - eps) * weight(labels(i)) + eps / static_cast<double>(k) * weight_sum) +
               2 * o.z_loss * r_z * std::abs(lse);
  }
  return scale;
}

struct Problem {
  Index n, vocab;
};

struct Setting {
  const char* name;
  smax::CrossEntropyOptions options;  // class_weights over the whole vocabulary
};

struct Errors {
  double loss = 0, grad = 0, from_stats = 0;
};

double relative(double got, double want) {
  return got == want ? 0.0 : std::abs(got - want) / std::abs(want);
}

/// Runs the algorithm on this rank's shard, then verifies it (see the top of the file).
template <class T>
Errors run(const Problem& p, const Setting& s, const Shard& shard, double& loss_out) {
  const Labels labels = make_labels(p.n, p.vocab);
  smax::CrossEntropyOptions mine = s.options;
  if (s.options.class_weights.size() != 0)
    mine.class_weights = s.options.class_weights.segment(shard.offset, shard.size);

  // ---- the algorithm: this rank's slice only -------------------------------------------------
  const vocab_parallel::StatsAllreduce<T> allreduce(MPI_COMM_WORLD);
  const Matrix<T> logits_shard = make_logits<T>(labels, shard.offset, shard.size);
  Matrix<T> grad_shard;
  const T loss =
      vocab_parallel::cross_entropy(allreduce, logits_shard, labels, shard, grad_shard, mine);

  // ---- the check: the whole matrix, rebuilt here only to verify ------------------------------
  const Matrix<T> logits = make_logits<T>(labels, 0, p.vocab);
  Matrix<T> grad;
  const T reference = smax::cross_entropy(logits, labels, grad, s.options);
  const Eigen::VectorXd scale = gradient_scale(logits, labels, s.options);
  Errors e;
  e.loss = relative(loss, reference);
  for (Index i = 0; i < p.n && shard.size != 0; ++i) {
    const double worst = (grad_shard.row(i) - grad.row(i).segment(shard.offset, shard.size))
                             .template cast<double>()
                             .cwiseAbs()
                             .maxCoeff();
    // An ignored row (scale 0) must be exactly 0 in both.
    e.grad = std::max(e.grad, worst == 0 ? 0.0 : worst / scale(i));
  }
  // The loss alone, as an evaluation pass would get it: statistics, no gradient.
  const auto merged = vocab_parallel::merged_stats(allreduce, logits_shard, labels, shard, mine);
  e.from_stats = relative(smax::cross_entropy_from_stats(labels, p.vocab, merged, mine), reference);
  loss_out = static_cast<double>(loss);
  return e;
}

std::string shard_list(Index vocab, int ranks) {
  std::string out;
  for (int r = 0; r < ranks; ++r) {
    const Shard s = vocab_parallel::shard_of(vocab, r, ranks);
    out += (r ? " [" : "[") + std::to_string(s.offset) + ", " + std::to_string(s.offset + s.size) +
           ")";
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, ranks = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &ranks);

  // GPT-2's vocabulary (odd, so shards are uneven for every even rank count, and for 3), and a
  // small one whose shards hold a class or two.
  const Problem problems[] = {{64, 50257}, {13, 10}};
  int failed = 0;
  if (rank == 0)
    std::printf(
        "vocabulary-parallel cross-entropy on %d ranks: each holds N x k_r logits and "
        "all N labels, and sends N x %td statistics\n",
        ranks, smax::shard_stats_width);
  try {
    for (const Problem& p : problems) {
      smax::CrossEntropyOptions llm;  // mean, ignore_index -100
      llm.label_smoothing = 0.1;
      llm.z_loss = 1e-4;
      smax::CrossEntropyOptions weighted = llm;
      weighted.reduction = smax::Reduction::sum;
      weighted.class_weights = make_weights(p.vocab);
      weighted.softcap = 15.0;
      const Setting settings[] = {
          {"mean, label_smoothing 0.1, z_loss 1e-4", llm},
          {"sum, + class_weights, softcap 15", weighted},
      };
      const Labels labels = make_labels(p.n, p.vocab);
      const Shard shard = vocab_parallel::shard_of(p.vocab, rank, ranks);
      if (rank == 0)
        std::printf("N = %td, K = %td (%td rows ignore_index -100), shards %s\n", p.n, p.vocab,
                    (labels.array() == -100).count(), shard_list(p.vocab, ranks).c_str());

      for (const Setting& s : settings) {
        for (const bool single : {true, false}) {
          const double tol = single ? 1e-6 : 1e-12;
          double loss = 0;
          const Errors e = single ? run<float>(p, s, shard, loss) : run<double>(p, s, shard, loss);
          const bool bad = !(e.loss <= tol && e.grad <= tol && e.from_stats <= tol);
          if (bad)
            std::fprintf(stderr,
                         "rank %d, shard [%td, %td), N = %td, K = %td, %s, %s: loss error %.3g, "
                         "gradient error %.3g, from_stats error %.3g > %.0e\n",
                         rank, shard.offset, shard.offset + shard.size, p.n, p.vocab, s.name,
                         single ? "float" : "double", e.loss, e.grad, e.from_stats, tol);
          failed |= bad;
          // Verification only: the largest errors, and the spread of the loss, over all ranks.
          double worst[3] = {e.loss, e.grad, e.from_stats}, lo = loss, hi = loss;
          MPI_Allreduce(MPI_IN_PLACE, worst, 3, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
          MPI_Allreduce(MPI_IN_PLACE, &lo, 1, MPI_DOUBLE, MPI_MIN, MPI_COMM_WORLD);
          MPI_Allreduce(MPI_IN_PLACE, &hi, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
          if (rank == 0)
            std::printf(
                "  %-40s %-6s loss %.10g  errors: loss %.1e, gradient %.1e, "
                "from_stats %.1e, across ranks %.1e (tolerance %.0e)\n",
                s.name, single ? "float" : "double", loss, worst[0], worst[1], worst[2],
                relative(hi, lo), tol);
        }
      }
    }
  } catch (const std::exception& ex) {
    std::fprintf(stderr, "rank %d: %s\n", rank, ex.what());
    MPI_Abort(MPI_COMM_WORLD, 2);  // the other ranks would wait for this one forever
  }

  MPI_Allreduce(MPI_IN_PLACE, &failed, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  if (rank == 0) std::printf("%s\n", failed ? "FAILED" : "ok");
  MPI_Finalize();
  return failed ? 1 : 0;
}
