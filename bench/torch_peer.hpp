// PyTorch's CPU kernels (libtorch's ATen, Debian's libtorch-dev) as a peer: the operators that
// torch.softmax, torch.log_softmax, their backward passes and F.cross_entropy (log_softmax, then
// nll_loss) run on a CPU tensor, called directly (no autograd graph) into the benchmark's own
// buffers, on one thread. Declared here and defined in torch_peer.cpp, so that only that file
// compiles ATen's headers. Included only when the build found libtorch (SMAX_BENCH_HAVE_TORCH).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

namespace smax_bench::torch_peer {

/// Keeps ATen's intra-op pool to the calling thread; returns the threads it may use afterwards.
int single_thread();

/// "1.13.1 (cpu capability AVX2)": the version, and which of ATen's kernel builds it runs.
std::string version();

enum class op { softmax, log_softmax, softmax_backward, log_softmax_backward, ce_fwd, ce_fwdbwd };

/// One call of an operator over an N x K float tensor along K, in row-major or column-major
/// memory, reading and writing the caller's buffers (wrapped once, outside the timed loop):
///   softmax, log_softmax:       out = f(a) (column-major: ATen's contiguous result, copied)
///   softmax_backward:           out = dx from a = y (the softmax) and b = dy
///   log_softmax_backward:       out = dx from a = logp and b = dlogp
///   ce_fwd, ce_fwdbwd:          loss() = mean cross-entropy of logits a against `labels`
///                               (ignore_index -100), and for ce_fwdbwd out = its gradient; the
///                               log-probabilities (and their gradient) go to tensors of its own.
class call {
 public:
  call(op o, std::int64_t n, std::int64_t k, bool row_major, const float* a, const float* b,
       float* out, const int* labels = nullptr);
  ~call();
  call(const call&) = delete;
  call& operator=(const call&) = delete;
  void operator()();
  float loss() const;

 private:
  struct state;
  std::unique_ptr<state> s_;
};

}  // namespace smax_bench::torch_peer
