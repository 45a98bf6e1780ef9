// Masked scaled-dot-product attention over a padded batch, forward and backward, with smax's
// softmax and softmax_backward.
//
// A batch of B sequences padded to L positions is stored stacked, as frameworks store [B, L, d]:
// Q and K are (B*L) x d, V is (B*L) x dv, and sequence b owns rows [b*L, b*L + L) of each. Its
// first lengths[b] positions are tokens, the rest padding (any finite values).
//
//   forward:   S = Q_b K_b^T / sqrt(d)   per sequence, L x L, stacked into (B*L) x L
//              S_ij = -inf                where query i may not see key j (masks below)
//              P = softmax(S)             rowwise, one smax call for all B*L rows
//              O_b = P_b V_b
//   backward:  dV_b = P_b^T dO_b,  dP_b = dO_b V_b^T,  dS = softmax_backward(P, dP),
//              dQ_b = dS_b K_b / sqrt(d),  dK_b = dS_b^T Q_b / sqrt(d)
//
// Masks: padding (a key j >= length is never seen; a query i >= length sees nothing) and, when
// causal, no key after the query (j > i). A padding query's row of S is all -inf. A naive
// max-subtracting softmax turns that row into exp(-inf - (-inf)) = NaN, which P V then spreads
// to the outputs and the backward pass to every gradient; frameworks special-case it. smax's
// softmax gives a fully masked row 0 instead, so that row of O is 0 and softmax_backward gives
// dS = 0 * (dP - <dP, 0>) = 0 there: zero outputs and zero gradients for padding, with no special
// case below. A masked entry next to unmasked ones gets probability exactly 0, so padding keys
// and values get exactly zero gradients too.
#pragma once

#include <smax/smax.hpp>

#include <Eigen/Core>

#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

namespace attention {

using Eigen::Index;

/// Row-major, so that each query's scores (one distribution) are contiguous.
template <class T>
using Matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// The lengths of the B sequences of a batch padded to max_len positions, and causality.
struct Mask {
  Index max_len = 0;
  std::vector<Index> lengths;
  bool causal = true;

  Index batch() const { return static_cast<Index>(lengths.size()); }

  /// Whether query i of sequence b may attend to key j.
  bool visible(Index b, Index i, Index j) const {
    const Index n = lengths[static_cast<std::size_t>(b)];
    return i < n && j < n && (!causal || j <= i);
  }
};

template <class T>
struct Forward {
  Matrix<T> P;  ///< (B*L) x L attention weights; rows of padding queries are 0
  Matrix<T> O;  ///< (B*L) x dv outputs; rows of padding queries are 0
};

template <class T>
struct Gradients {
  Matrix<T> dQ, dK, dV;
};

namespace detail {

inline std::string shape(Index rows, Index cols) {
  return std::to_string(rows) + "x" + std::to_string(cols);
}

template <class T>
void check(const Mask& mask, const Matrix<T>& Q, const Matrix<T>& K, const Matrix<T>& V) {
  const Index rows = mask.batch() * mask.max_len;
  if (Q.rows() != rows || K.rows() != rows || V.rows() != rows || K.cols() != Q.cols())
    throw std::invalid_argument("attention: Q is " + shape(Q.rows(), Q.cols()) + ", K is " +
                                shape(K.rows(), K.cols()) + ", V is " + shape(V.rows(), V.cols()) +
                                "; expected " + std::to_string(rows) +
                                " rows each (batch x max_len) and as many columns in K as in Q");
  for (const Index n : mask.lengths)
    if (n < 0 || n > mask.max_len)
      throw std::invalid_argument("attention: a length of " + std::to_string(n) +
                                  " is outside [0, " + std::to_string(mask.max_len) + "]");
}

}  // namespace detail

/// Attention weights and outputs. Throws std::invalid_argument on inconsistent shapes.
template <class T>
Forward<T> forward(const Mask& mask, const Matrix<T>& Q, const Matrix<T>& K, const Matrix<T>& V) {
  detail::check(mask, Q, K, V);
  const Index L = mask.max_len;
  const T scale = T(1) / std::sqrt(T(Q.cols()));
  const T masked = -std::numeric_limits<T>::infinity();

  Forward<T> f;
  f.P.resize(Q.rows(), L);
  f.O.resize(Q.rows(), V.cols());
  for (Index b = 0; b < mask.batch(); ++b) {
    auto S = f.P.middleRows(b * L, L);
    S.noalias() = (scale * Q.middleRows(b * L, L)) * K.middleRows(b * L, L).transpose();
    for (Index i = 0; i < L; ++i)
      for (Index j = 0; j < L; ++j)
        if (!mask.visible(b, i, j)) S(i, j) = masked;
  }
  f.P = smax::softmax(f.P);  // in place, over all B*L rows at once
  for (Index b = 0; b < mask.batch(); ++b)
    f.O.middleRows(b * L, L).noalias() = f.P.middleRows(b * L, L) * V.middleRows(b * L, L);
  return f;
}

/// Gradients of a loss with respect to Q, K and V, given f = forward(mask, Q, K, V) and
/// dO = dLoss/dO. Zero on every padding position.
template <class T>
Gradients<T> backward(const Mask& mask, const Matrix<T>& Q, const Matrix<T>& K, const Matrix<T>& V,
                      const Forward<T>& f, const Matrix<T>& dO) {
  detail::check(mask, Q, K, V);
  if (dO.rows() != f.O.rows() || dO.cols() != f.O.cols())
    throw std::invalid_argument("attention: dO is " + detail::shape(dO.rows(), dO.cols()) +
                                " but O is " + detail::shape(f.O.rows(), f.O.cols()));
  const Index L = mask.max_len;
  const T scale = T(1) / std::sqrt(T(Q.cols()));

  Matrix<T> dP(Q.rows(), L);
  for (Index b = 0; b < mask.batch(); ++b)
    dP.middleRows(b * L, L).noalias() =
        dO.middleRows(b * L, L) * V.middleRows(b * L, L).transpose();
  const Matrix<T> dS = smax::softmax_backward(f.P, dP);

  Gradients<T> g;
  g.dQ.resize(Q.rows(), Q.cols());
  g.dK.resize(K.rows(), K.cols());
  g.dV.resize(V.rows(), V.cols());
  for (Index b = 0; b < mask.batch(); ++b) {
    const auto dS_b = dS.middleRows(b * L, L);
    g.dQ.middleRows(b * L, L).noalias() = scale * (dS_b * K.middleRows(b * L, L));
    g.dK.middleRows(b * L, L).noalias() = scale * (dS_b.transpose() * Q.middleRows(b * L, L));
    g.dV.middleRows(b * L, L).noalias() =
        f.P.middleRows(b * L, L).transpose() * dO.middleRows(b * L, L);
  }
  return g;
}

}  // namespace attention
