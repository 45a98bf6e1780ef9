// The fused softmax-cross-entropy kernels: per distribution, one max pass, one pass that
// computes exp once per element (storing it in the gradient buffer), sums it and gathers what the
// loss needs, and one pass that turns the stored exps into the gradient. The logits are read
// twice; the gradient is written twice (the second write hits cache for rows up to L2 size).
//
// For a row with label y, weights w, smoothing ε, z-loss s, upstream scale r (1/denominator for
// mean, 1 for sum, the caller's per-row gradient for per-row losses), with p = softmax(x):
//   loss  = (1-ε) w_y (-log p_y) + (ε/K) Σ_c w_c (-log p_c) + s·lse²
//   grad  = coef·p_c − r (ε/K) w_c − r (1-ε) w_y [c = y],   coef = r((1-ε) w_y + (ε/K) Σw) + 2 s r
//   lse
// and at c = y the exact identity p_y − 1 = −Σ_{c≠y} p_c gives
//   grad_y = −coef·Σ_{c≠y} p_c + r (ε/K)(Σw − w_y) + 2 s r lse,
// which keeps the tiny gradients of confident predictions that p_y − 1 would round to 0. The pass
// that sums exp therefore leaves the label's class out of its sum.
// With probability targets t (smoothed: t' = (1-ε) t + ε/K):
//   loss = Σ_c w_c t'_c (-log p_c) + s·lse²,   grad = coef·p_c − r w_c t'_c,  coef = r Σ w t' + 2 s
//   r lse
// where a zero target contributes nothing even against a -inf logit (0 · log 0 = 0).
// -log p_c is computed as log(sum) − (x_c − max): both terms are >= 0, so no cancellation.
// Soft-capping replaces x by c·tanh(x/c) first and multiplies the gradient by 1 − tanh².
#pragma once

#include "smax/detail/kernels.hpp"

#include <type_traits>

namespace smax::detail {

/// Kernel-level parameters, in the logits' type.
template <class T>
struct ce_params {
  T smoothing = 0;             // ε in [0, 1]
  T z = 0;                     // z-loss coefficient
  T cap = 0;                   // soft-cap c; 0 is off
  const T* weights = nullptr;  // K class weights, or null for all 1
  T weight_sum = 0;            // Σ_c w_c (K when unweighted)
  T grad_ce = 1;               // gradient scale of the cross-entropy term
  T grad_z = 1;                // gradient scale of the z-loss term
  index_t ignore = -100;       // the label of rows that do not count
};

/// Compensated (Neumaier) sum in double: per-row losses of any number of rows add up without
/// losing digits.
class exact_sum {
 public:
  void add(double x) noexcept {
    const double t = s_ + x;
    c_ += std::abs(s_) >= std::abs(x) ? (s_ - t) + x : (x - t) + s_;
    s_ = t;
  }
  void add(const exact_sum& o) noexcept {
    add(o.s_);
    add(o.c_);
  }
  double value() const noexcept { return s_ + c_; }

 private:
  double s_ = 0, c_ = 0;
};

/// Sums of the per-row loss terms (unnormalized): cross-entropy and z-loss, kept apart because
/// `mean` divides them by different counts.
struct ce_totals {
  exact_sum ce, z;
};

template <class G, class T>
void record_loss(const G& g, const typename G::state& ce, const typename G::state& zl,
                 const per_dist<T>& losses, ce_totals& tot) {
  g.each_lane(ce, [&](index_t, T v) { tot.ce.add(static_cast<double>(v)); });
  g.each_lane(zl, [&](index_t, T v) { tot.z.add(static_cast<double>(v)); });
  if (losses.p != nullptr) g.store_out(losses, ce + zl);
}

/// One group of distributions with class-index labels. General is false when there is no
/// soft-cap, smoothing or weights: the passes then carry nothing but exp and its sum.
template <bool HasGrad, bool General, class G, class T, class Lbl>
void ce_label_group(const G& g, const strided<const T>& x, const per_dist<const Lbl>& y,
                    const strided<T>& gr, const per_dist<const T>& up, const per_dist<T>& losses,
                    const ce_params<T>& prm, ce_totals& tot) {
  using S = typename G::state;
  const T zero(0), one(1);
  const auto lab = g.load_labels(y, prm.ignore);
  if (!any_valid(lab)) {
    if constexpr (HasGrad) g.for_each([&](const auto& io) { io.store(gr, io.splat(S(zero))); });
    record_loss(g, S(zero), S(zero), losses, tot);
    return;
  }
  const bool capped = General && prm.cap > 0;
  const bool smooth = General && prm.smoothing > 0;
  const bool weighted = General && prm.weights != nullptr;
  const T inv_cap = capped ? one / prm.cap : zero;
  const auto cap = [&](const auto& v) {
    using W = std::decay_t<decltype(v)>;
    return W(prm.cap) * detail::tanh(v * W(inv_cap));
  };

  // Pass 1: the max. Capped logits are kept in the gradient buffer, so tanh runs once.
  const S m = g.reduce_max([&](const auto& io) {
    auto v = io.load(x);
    if constexpr (General) {
      if (capped) {
        v = cap(v);
        if constexpr (HasGrad) io.store(gr, v);
      }
    }
    return v;
  });
  const strided<const T> src = capped && HasGrad ? strided<const T>{gr.p, gr.ds, gr.cs} : x;
  const bool recap = capped && !HasGrad;
  const auto logit = [&](const auto& io) {
    auto v = io.load(src);
    if constexpr (General) {
      if (recap) v = cap(v);
    }
    return v;
  };
  const S shift = row_shift(m);
  S xy = g.gather(src, lab);  // read before pass 2 overwrites it when grad is the logits
  if (recap) xy = cap(xy);
  const S dy = xy - shift;

  // Pass 2: exp once per element, stored for pass 3; the label's class is left out of the sum.
  const auto sum2 = g.reduce_sum([&](const auto& io) {
    const auto d = logit(io) - io.splat(shift);
    using W = std::decay_t<decltype(d)>;
    const W e = exp_nonpos(d);
    if constexpr (HasGrad) {
      if (!capped) io.store(gr, e);
    }
    const W other = select(io.is_class(lab), W(zero), e);
    if constexpr (General) {
      const W wd = weighted ? io.load(per_class<T>{prm.weights}) * d : d;
      return sums<W, 2>{{other, smooth ? wd : W(zero)}};
    } else {
      return other;
    }
  });
  S s_other, sum_wd(zero);
  if constexpr (General) {
    s_other = sum2[0];
    sum_wd = sum2[1];
  } else {
    s_other = sum2;
  }
  const S s = s_other + exp_nonpos(dy);
  const S log_s = row_log_sum(s);
  const S w_y = weighted ? g.gather(per_class<T>{prm.weights}, lab) : S(one);
  const T eps = prm.smoothing, eps_k = eps / static_cast<T>(g.k);
  S ce = S(one - eps) * w_y * (log_s - dy);
  if (smooth) ce = ce + S(eps_k) * (S(prm.weight_sum) * log_s - sum_wd);
  const S lse = shift + log_s;  // 0 for a fully masked row, whose loss is already +inf
  record_loss(g, keep_valid(lab, ce), keep_valid(lab, S(prm.z) * lse * lse), losses, tot);

  if constexpr (HasGrad) {
    const S u = up.p != nullptr ? g.load_out(up) : S(one);
    const S r_ce = S(prm.grad_ce) * u;
    const S zterm = S(T(2) * prm.z) * S(prm.grad_z) * u * lse;
    const S inv = row_reciprocal(s);
    const S coef = r_ce * (S(one - eps) * w_y + S(eps_k * prm.weight_sum)) + zterm;
    const S b = r_ce * S(eps_k);
    // Pass 3: the gradient from the stored exps (recomputed when the buffer holds capped logits).
    g.for_each([&](const auto& io) {
      using W = decltype(io.splat(coef));
      const W p =
          (capped ? exp_nonpos(io.load(src) - io.splat(shift)) : io.load(gr)) * io.splat(inv);
      W gv = io.splat(coef) * p;
      if constexpr (General) {
        if (smooth)
          gv = gv - io.splat(b) * (weighted ? io.load(per_class<T>{prm.weights}) : W(one));
        if (capped) {
          const W t = io.load(src) * W(inv_cap);
          gv = gv * fma(-t, t, W(one));
        }
      }
      io.store(gr, keep_valid(lab, gv));
    });
    S gy = zterm - coef * (s_other * inv) + r_ce * S(eps_k) * (S(prm.weight_sum) - w_y);
    if (capped) {
      const S t = xy * S(inv_cap);
      gy = gy * fma(-t, t, S(one));
    }
    g.scatter(gr, lab, gy);
  }
}

/// One group of distributions with probability targets of the logits' shape.
template <bool HasGrad, bool General, class G, class T>
void ce_prob_group(const G& g, const strided<const T>& x, const strided<const T>& t,
                   const strided<T>& gr, const per_dist<const T>& up, const per_dist<T>& losses,
                   const ce_params<T>& prm, ce_totals& tot) {
  using S = typename G::state;
  const T zero(0), one(1);
  const bool capped = General && prm.cap > 0;
  const bool weighted = General && prm.weights != nullptr;
  const T eps = General ? prm.smoothing : zero, eps_k = eps / static_cast<T>(g.k);
  const T inv_cap = capped ? one / prm.cap : zero;
  const auto cap = [&](const auto& v) {
    using W = std::decay_t<decltype(v)>;
    return W(prm.cap) * detail::tanh(v * W(inv_cap));
  };
  // w_c t'_c, the weight of class c in the loss.
  const auto target = [&](const auto& io) {
    auto tv = io.load(t);
    using W = std::decay_t<decltype(tv)>;
    if constexpr (General) {
      if (eps > zero) tv = fma(tv, W(one - eps), W(eps_k));
      if (weighted) tv = tv * io.load(per_class<T>{prm.weights});
    }
    return tv;
  };

  const S m = g.reduce_max([&](const auto& io) {
    auto v = io.load(x);
    if constexpr (General) {
      if (capped) {
        v = cap(v);
        if constexpr (HasGrad) io.store(gr, v);
      }
    }
    return v;
  });
  const strided<const T> src = capped && HasGrad ? strided<const T>{gr.p, gr.ds, gr.cs} : x;
  const bool recap = capped && !HasGrad;
  const S shift = row_shift(m);

  const auto sum3 = g.reduce_sum([&](const auto& io) {
    auto v = io.load(src);
    if constexpr (General) {
      if (recap) v = cap(v);
    }
    using W = std::decay_t<decltype(v)>;
    const W d = v - io.splat(shift);
    const W e = exp_nonpos(d);
    if constexpr (HasGrad) {
      if (!capped) io.store(gr, e);
    }
    const W wt = target(io);
    return sums<W, 3>{{e, wt, select(wt == W(zero), W(zero), wt * d)}};
  });
  const S s = sum3[0], tw = sum3[1];
  const S log_s = row_log_sum(s);
  const S lse = shift + log_s;
  record_loss(g, tw * log_s - sum3[2], S(prm.z) * lse * lse, losses, tot);

  if constexpr (HasGrad) {
    const S u = up.p != nullptr ? g.load_out(up) : S(one);
    const S r_ce = S(prm.grad_ce) * u;
    const S coef = r_ce * tw + S(T(2) * prm.z) * S(prm.grad_z) * u * lse;
    const S inv = row_reciprocal(s);
    g.for_each([&](const auto& io) {
      using W = decltype(io.splat(coef));
      const W p =
          (capped ? exp_nonpos(io.load(src) - io.splat(shift)) : io.load(gr)) * io.splat(inv);
      W gv = io.splat(coef) * p - io.splat(r_ce) * target(io);
      if constexpr (General) {
        if (capped) {
          const W c = io.load(src) * W(inv_cap);
          gv = gv * fma(-c, c, W(one));
        }
      }
      io.store(gr, gv);
    });
  }
}

template <class F>
void with_modes(bool has_grad, bool general, F&& f) {
  if (has_grad) {
    if (general) {
      f(std::true_type{}, std::true_type{});
    } else {
      f(std::true_type{}, std::false_type{});
    }
  } else if (general) {
    f(std::false_type{}, std::true_type{});
  } else {
    f(std::false_type{}, std::false_type{});
  }
}

/// Fused cross-entropy with class-index labels over n distributions of k classes.
/// grad.p == nullptr: loss only (grad must then carry x's strides); upstream.p == nullptr: a
/// per-row upstream gradient of 1; losses.p == nullptr: no per-row losses. Labels are assumed
/// validated (in [0, k) or equal to prm.ignore). grad may be x itself (in place).
template <class Arch = best_arch, class T, class Lbl>
ce_totals cross_entropy_labels(index_t n, index_t k, strided<const T> x, per_dist<const Lbl> y,
                               strided<T> grad, per_dist<const T> upstream, per_dist<T> losses,
                               const ce_params<T>& prm) noexcept {
  ce_totals tot;
  const bool general = prm.cap > 0 || prm.smoothing > 0 || prm.weights != nullptr;
  with_modes(grad.p != nullptr, general, [&](auto has_grad, auto gen) {
    run<Arch, T>(
        n, k,
        [&](const auto& g, const strided<const T>& xi, const per_dist<const Lbl>& yi,
            const strided<T>& gi, const per_dist<const T>& ui, const per_dist<T>& li) {
          ce_label_group<decltype(has_grad)::value, decltype(gen)::value>(g, xi, yi, gi, ui, li,
                                                                          prm, tot);
        },
        x, y, grad, upstream, losses);
  });
  return tot;
}

/// Fused cross-entropy with probability targets t of x's shape; arguments as above.
template <class Arch = best_arch, class T>
ce_totals cross_entropy_probs(index_t n, index_t k, strided<const T> x, strided<const T> t,
                              strided<T> grad, per_dist<const T> upstream, per_dist<T> losses,
                              const ce_params<T>& prm) noexcept {
  ce_totals tot;
  const bool general = prm.cap > 0 || prm.smoothing > 0 || prm.weights != nullptr;
  with_modes(grad.p != nullptr, general, [&](auto has_grad, auto gen) {
    run<Arch, T>(
        n, k,
        [&](const auto& g, const strided<const T>& xi, const strided<const T>& ti,
            const strided<T>& gi, const per_dist<const T>& ui, const per_dist<T>& li) {
          ce_prob_group<decltype(has_grad)::value, decltype(gen)::value>(g, xi, ti, gi, ui, li, prm,
                                                                         tot);
        },
        x, t, grad, upstream, losses);
  });
  return tot;
}

}  // namespace smax::detail
