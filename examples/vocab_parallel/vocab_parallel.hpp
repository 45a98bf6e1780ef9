// Vocabulary-parallel cross-entropy over MPI, with smax's shard API.
//
// A language model's output layer is often split by vocabulary: with K classes over R ranks,
// rank r computes only logits[:, offset_r : offset_r + k_r] (N x k_r), because the full N x K
// matrix (and the K x d weight behind it) is what does not fit. Every rank holds all N labels.
// One step, on every rank:
//
//   stats = smax::cross_entropy_shard_stats(shard logits)   N x 6: this shard's max, Σ exp, ...
//   all-reduce stats with smax::merge_shard_stats            the only communication: N x 6 values
//   loss  = smax::cross_entropy_shard(shard logits, stats)   and this shard's slice of the gradient
//
// so no rank ever sees another rank's logits, and the loss and gradient slices are those of
// smax::cross_entropy on the whole matrix.
#pragma once

#include <mpi.h>

#include <Eigen/Core>
#include <smax/smax.hpp>

#include <algorithm>
#include <cstdint>
#include <type_traits>

namespace vocab_parallel {

using Eigen::Index;

/// Row-major: each sample's logits over the shard (one distribution's slice) are contiguous.
template <class T>
using Matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using Stats = Eigen::Matrix<T, Eigen::Dynamic, smax::shard_stats_width, Eigen::RowMajor>;
using Labels = Eigen::Matrix<std::int64_t, Eigen::Dynamic, 1>;

/// Classes [offset, offset + size) of a vocabulary of `vocab`.
struct Shard {
  Index offset, size, vocab;
};

/// Rank `rank` of `ranks`: contiguous ranges, the first vocab % ranks of them one class larger,
/// so any K splits over any number of ranks (a rank past K gets an empty shard).
inline Shard shard_of(Index vocab, int rank, int ranks) {
  const Index base = vocab / ranks, extra = vocab % ranks;
  return {rank * base + std::min<Index>(rank, extra), base + (rank < extra ? 1 : 0), vocab};
}

template <class T>
MPI_Datatype mpi_scalar() {
  static_assert(std::is_same<T, float>::value || std::is_same<T, double>::value,
                "vocab_parallel: float or double logits");
  return std::is_same<T, float>::value ? MPI_FLOAT : MPI_DOUBLE;
}

/// The all-reduce of shard statistics: a user-defined MPI_Op over an MPI datatype of one whole
/// row of statistics. The row type matters: MPI may split a large reduction into segments at any
/// element boundary, and a row's six values only merge together.
template <class T>
class StatsAllreduce {
 public:
  explicit StatsAllreduce(MPI_Comm comm) : comm_(comm) {
    MPI_Type_contiguous(static_cast<int>(smax::shard_stats_width), mpi_scalar<T>(), &row_);
    MPI_Type_commit(&row_);
    // merge_shard_stats is commutative, which lets MPI pick its fastest algorithm; rounding then
    // may differ in the last bits between ranks (the loss agrees to within the tolerance).
    MPI_Op_create(&merge_rows, /*commute=*/1, &op_);
  }
  ~StatsAllreduce() {
    MPI_Op_free(&op_);
    MPI_Type_free(&row_);
  }
  StatsAllreduce(const StatsAllreduce&) = delete;
  StatsAllreduce& operator=(const StatsAllreduce&) = delete;

  /// Every rank's `stats` becomes the statistics of the union of all ranks' classes.
  void operator()(Stats<T>& stats) const {
    MPI_Allreduce(MPI_IN_PLACE, stats.data(), static_cast<int>(stats.rows()), row_, op_, comm_);
  }

 private:
  // MPI's contract: inout = in ⊕ inout, over `rows` elements of the row type.
  static void merge_rows(void* in, void* inout, int* rows, MPI_Datatype*) {
    const Eigen::Map<const Stats<T>> other(static_cast<const T*>(in), *rows,
                                           smax::shard_stats_width);
    Eigen::Map<Stats<T>> into(static_cast<T*>(inout), *rows, smax::shard_stats_width);
    smax::merge_shard_stats(into, other);
  }

  MPI_Comm comm_;
  MPI_Datatype row_ = MPI_DATATYPE_NULL;
  MPI_Op op_ = MPI_OP_NULL;
};

/// The statistics of the whole vocabulary (the same on every rank, up to rounding), from this
/// rank's logits (N x shard.size) and all N labels: one all-reduce of N rows.
/// options.class_weights, when given, is this shard's slice (shard.size entries).
template <class L, class Y>
Stats<typename L::Scalar> merged_stats(const StatsAllreduce<typename L::Scalar>& allreduce,
                                       const Eigen::MatrixBase<L>& logits_shard,
                                       const Eigen::MatrixBase<Y>& labels, const Shard& shard,
                                       const smax::CrossEntropyOptions& options = {}) {
  Stats<typename L::Scalar> stats =
      smax::cross_entropy_shard_stats(logits_shard, labels, shard.offset, shard.vocab, options);
  allreduce(stats);
  return stats;
}

/// One step: returns the loss over the whole vocabulary and writes this rank's slice of its
/// gradient into grad_shard (N x shard.size; an empty Matrix is resized; it may be logits_shard
/// itself). Every rank must call it together. Options as smax::cross_entropy, except probability
/// targets and Reduction::none; class_weights as in merged_stats.
template <class L, class Y, class G>
typename L::Scalar cross_entropy(const StatsAllreduce<typename L::Scalar>& allreduce,
                                 const Eigen::MatrixBase<L>& logits_shard,
                                 const Eigen::MatrixBase<Y>& labels, const Shard& shard,
                                 const Eigen::MatrixBase<G>& grad_shard,
                                 const smax::CrossEntropyOptions& options = {}) {
  const auto merged = merged_stats(allreduce, logits_shard, labels, shard, options);
  return smax::cross_entropy_shard(logits_shard, labels, shard.offset, shard.vocab, merged,
                                   grad_shard, options);
}

}  // namespace vocab_parallel
