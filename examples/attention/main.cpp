// Masked causal attention on a padded batch: prints one sequence's attention weights and checks
// that padding gives zero outputs and zero gradients, never NaN. Exits 1 if it does not.
#include <algorithm>
#include <cstdio>
#include <random>

#include "attention.hpp"

namespace {

using attention::Index;
using Mat = attention::Matrix<float>;

Mat random_matrix(Index rows, Index cols, std::mt19937& rng) {
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  Mat m(rows, cols);
  for (Index i = 0; i < m.size(); ++i) m.data()[i] = u(rng);
  return m;
}

/// Largest |value| over the rows of padding positions (queries or keys past the length).
float max_on_padding(const attention::Mask& mask, const Mat& m) {
  float worst = 0.0f;
  for (Index b = 0; b < mask.batch(); ++b)
    for (Index i = mask.lengths[static_cast<std::size_t>(b)]; i < mask.max_len; ++i)
      worst = std::max(worst, m.row(b * mask.max_len + i).cwiseAbs().maxCoeff());
  return worst;
}

}  // namespace

int main() {
  const attention::Mask mask{6, {6, 4, 0}, true};  // max_len, lengths, causal
  const Index d = 8, dv = 4, rows = mask.batch() * mask.max_len;
  std::mt19937 rng(7);
  const Mat Q = random_matrix(rows, d, rng), K = random_matrix(rows, d, rng),
            V = random_matrix(rows, dv, rng);

  const auto f = attention::forward(mask, Q, K, V);
  const Mat W = random_matrix(rows, dv, rng);  // loss = sum(O .* W), so dO = W
  const auto g = attention::backward(mask, Q, K, V, f, W);

  std::printf("Causal attention over %td sequences padded to %td positions (lengths %td, %td, %td)",
              mask.batch(), mask.max_len, mask.lengths[0], mask.lengths[1], mask.lengths[2]);
  std::printf(", d = %td, dv = %td\n\n", d, dv);
  const Index b = 1, L = mask.max_len;
  std::printf("Attention weights of sequence %td (a row per query, a column per key):\n", b);
  for (Index i = 0; i < L; ++i) {
    std::printf("  query %td ", i);
    for (Index j = 0; j < L; ++j) std::printf(" %.3f", double(f.P(b * L + i, j)));
    std::printf("   sum %.6f%s\n", double(f.P.row(b * L + i).sum()),
                i < mask.lengths[b] ? "" : "  (padding)");
  }

  const bool finite = f.P.allFinite() && f.O.allFinite() && g.dQ.allFinite() && g.dK.allFinite() &&
                      g.dV.allFinite();
  const float pad_o = max_on_padding(mask, f.O), pad_dq = max_on_padding(mask, g.dQ),
              pad_dk = max_on_padding(mask, g.dK), pad_dv = max_on_padding(mask, g.dV);
  std::printf("\nBackward pass of loss = sum(O .* W): |dQ| = %.4f, |dK| = %.4f, |dV| = %.4f\n",
              double(g.dQ.norm()), double(g.dK.norm()), double(g.dV.norm()));
  std::printf("On padding positions: max |O| = %g, max |dQ| = %g, max |dK| = %g, max |dV| = %g\n",
              double(pad_o), double(pad_dq), double(pad_dk), double(pad_dv));
  std::printf("NaN or inf in P, O, dQ, dK, dV: %s\n", finite ? "none" : "FOUND");
  return finite && pad_o == 0 && pad_dq == 0 && pad_dk == 0 && pad_dv == 0 ? 0 : 1;
}
