// The attention example against a straightforward double-precision reference: outputs, central
// finite differences of a scalar loss for dQ, dK and dV, and zeros (never NaN) for padding.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <stdexcept>
#include <type_traits>
#include <vector>

#include "attention.hpp"

namespace {

using attention::Index;
using attention::Mask;
using MatD = attention::Matrix<double>;

MatD random_matrix(Index rows, Index cols, std::mt19937& rng) {
  std::uniform_real_distribution<double> u(-1.0, 1.0);
  MatD m(rows, cols);
  for (Index i = 0; i < m.size(); ++i) m.data()[i] = u(rng);
  return m;
}

/// The reference: one query at a time, the softmax over the visible keys only, written out.
MatD reference_outputs(const Mask& mask, const MatD& Q, const MatD& K, const MatD& V) {
  const Index L = mask.max_len;
  const double scale = 1.0 / std::sqrt(double(Q.cols()));
  MatD O = MatD::Zero(Q.rows(), V.cols());
  for (Index b = 0; b < mask.batch(); ++b)
    for (Index i = 0; i < L; ++i) {
      std::vector<double> s(static_cast<std::size_t>(L), 0.0);
      double m = -std::numeric_limits<double>::infinity();
      for (Index j = 0; j < L; ++j)
        if (mask.visible(b, i, j)) {
          s[j] = scale * Q.row(b * L + i).dot(K.row(b * L + j));
          m = std::max(m, s[j]);
        }
      double sum = 0.0;
      for (Index j = 0; j < L; ++j)
        if (mask.visible(b, i, j)) sum += std::exp(s[j] - m);
      for (Index j = 0; j < L; ++j)
        if (mask.visible(b, i, j)) O.row(b * L + i) += std::exp(s[j] - m) / sum * V.row(b * L + j);
    }
  return O;
}

double loss(const Mask& mask, const MatD& Q, const MatD& K, const MatD& V, const MatD& W) {
  return reference_outputs(mask, Q, K, V).cwiseProduct(W).sum();
}

/// d loss / d X by central differences, X being one of Q, K, V (`which`).
MatD finite_differences(const Mask& mask, MatD Q, MatD K, MatD V, const MatD& W, int which) {
  MatD& X = which == 0 ? Q : which == 1 ? K : V;
  MatD grad(X.rows(), X.cols());
  const double h = 1e-5;
  for (Index i = 0; i < X.size(); ++i) {
    const double x = X.data()[i];
    X.data()[i] = x + h;
    const double up = loss(mask, Q, K, V, W);
    X.data()[i] = x - h;
    const double down = loss(mask, Q, K, V, W);
    X.data()[i] = x;
    grad.data()[i] = (up - down) / (2 * h);
  }
  return grad;
}

template <class A, class B>
double max_abs_diff(const A& a, const B& b) {
  return (a.template cast<double>() - b).cwiseAbs().maxCoeff();
}

/// Rows of m on padding positions (position >= the sequence's length) are exactly zero.
template <class M>
bool zero_on_padding(const Mask& mask, const M& m) {
  for (Index b = 0; b < mask.batch(); ++b)
    for (Index i = mask.lengths[static_cast<std::size_t>(b)]; i < mask.max_len; ++i)
      if (!(m.row(b * mask.max_len + i).array() == 0).all()) return false;
  return true;
}

struct Problem {
  Mask mask;
  MatD Q, K, V, W;
};

Problem make_problem(bool causal, unsigned seed) {
  // Lengths: full, partial, one token, empty (every query and key is padding).
  Problem p{{5, {5, 3, 1, 0}, causal}, {}, {}, {}, {}};
  const Index rows = p.mask.batch() * p.mask.max_len, d = 4, dv = 3;
  std::mt19937 rng(seed);
  p.Q = 2.0 * random_matrix(rows, d, rng);
  p.K = 2.0 * random_matrix(rows, d, rng);
  p.V = random_matrix(rows, dv, rng);
  p.W = random_matrix(rows, dv, rng);
  return p;
}

}  // namespace

TEMPLATE_TEST_CASE("attention matches the double-precision reference", "[attention]", float,
                   double) {
  using T = TestType;
  using Mat = attention::Matrix<T>;
  const bool causal = GENERATE(true, false);
  const Problem p = make_problem(causal, causal ? 1u : 2u);
  const Mask& mask = p.mask;
  const Mat Q = p.Q.cast<T>(), K = p.K.cast<T>(), V = p.V.cast<T>(), W = p.W.cast<T>();
  // float: inputs rounded to float perturb the results by a few 1e-7, the GEMMs add a little.
  const double tol = std::is_same<T, float>::value ? 2e-5 : 1e-9;

  const auto f = attention::forward(mask, Q, K, V);
  const auto g = attention::backward(mask, Q, K, V, f, W);

  SECTION("outputs") { CHECK(max_abs_diff(f.O, reference_outputs(mask, p.Q, p.K, p.V)) < tol); }

  SECTION("gradients against central differences of loss = sum(O .* W)") {
    // The differences themselves are accurate to ~1e-10 (h = 1e-5, double).
    const double fd_tol = std::max(tol, 1e-8);
    CHECK(max_abs_diff(g.dQ, finite_differences(mask, p.Q, p.K, p.V, p.W, 0)) < fd_tol);
    CHECK(max_abs_diff(g.dK, finite_differences(mask, p.Q, p.K, p.V, p.W, 1)) < fd_tol);
    CHECK(max_abs_diff(g.dV, finite_differences(mask, p.Q, p.K, p.V, p.W, 2)) < fd_tol);
  }

  SECTION("masks: weights are 0 where masked, rows of real queries sum to 1") {
    const Index L = mask.max_len;
    for (Index b = 0; b < mask.batch(); ++b)
      for (Index i = 0; i < L; ++i) {
        for (Index j = 0; j < L; ++j)
          if (!mask.visible(b, i, j)) CHECK(f.P(b * L + i, j) == 0);
        const double expected = i < mask.lengths[static_cast<std::size_t>(b)] ? 1.0 : 0.0;
        CHECK(std::abs(double(f.P.row(b * L + i).sum()) - expected) < tol);
      }
  }

  SECTION("padding: zero outputs and zero gradients, no NaN anywhere") {
    CHECK(f.P.allFinite());
    CHECK(f.O.allFinite());
    CHECK(g.dQ.allFinite());
    CHECK(g.dK.allFinite());
    CHECK(g.dV.allFinite());
    CHECK(zero_on_padding(mask, f.O));
    CHECK(zero_on_padding(mask, g.dQ));
    CHECK(zero_on_padding(mask, g.dK));
    CHECK(zero_on_padding(mask, g.dV));
  }
}

TEST_CASE("attention: every sequence empty gives zeros, not NaN", "[attention]") {
  const Mask mask{3, {0, 0}, true};
  std::mt19937 rng(3);
  const MatD Q = random_matrix(6, 2, rng), K = random_matrix(6, 2, rng),
             V = random_matrix(6, 2, rng), W = random_matrix(6, 2, rng);
  const auto f = attention::forward(mask, Q, K, V);
  const auto g = attention::backward(mask, Q, K, V, f, W);
  CHECK((f.P.array() == 0).all());
  CHECK((f.O.array() == 0).all());
  CHECK((g.dQ.array() == 0).all());
  CHECK((g.dK.array() == 0).all());
  CHECK((g.dV.array() == 0).all());
}

TEST_CASE("attention: inconsistent shapes throw", "[attention]") {
  const Mask mask{3, {3, 2}, true};
  const MatD Q = MatD::Zero(6, 2), K = MatD::Zero(5, 2), V = MatD::Zero(6, 2);
  CHECK_THROWS_AS(attention::forward(mask, Q, K, V), std::invalid_argument);
  const Mask too_long{3, {4, 2}, true};
  CHECK_THROWS_AS(attention::forward(too_long, Q, Q, V), std::invalid_argument);
}
