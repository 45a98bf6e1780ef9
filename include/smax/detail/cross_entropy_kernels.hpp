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

#include <cmath>
#include <cstring>
#include <limits>
#include <new>
#include <type_traits>

namespace smax::detail {

/// Kernel-level parameters, in the logits' type.
template <class T>
struct ce_params {
  T smoothing = 0;             // ε in [0, 1]
  T z = 0;                     // z-loss coefficient
  T cap = 0;                   // soft-cap c; 0 is off
  const T* weights = nullptr;  // the weights of this kernel's classes, or null for all 1
  T weight_sum = 0;            // Σ_c w_c over this kernel's classes
  T grad_ce = 1;               // gradient scale of the cross-entropy term
  T grad_z = 1;                // gradient scale of the z-loss term
  index_t k_total = 0;         // K of the full vocabulary (ε/K); the kernel's k unless sharded
  label_spec labels{-100, 0, 0};
  bool stream = false;         // the gradient is large enough to stream past the caches
  bool general() const noexcept { return cap > 0 || smoothing > 0 || weights != nullptr; }
};

/// Compensated (Neumaier) sum in double: per-row losses of any number of rows add up without
/// losing digits.
class exact_sum {
 public:
  void add(double x) noexcept {
    const double t = s_ + x;
    // Once the sum is ±inf or NaN it is the answer; compensating would turn inf − inf into NaN.
    if (std::isfinite(t)) c_ += std::abs(s_) >= std::abs(x) ? (s_ - t) + x : (x - t) + s_;
    s_ = t;
  }
  double value() const noexcept { return std::isfinite(s_) ? s_ + c_ : s_; }

 private:
  double s_ = 0, c_ = 0;
};

/// Sums of the per-row loss terms (unnormalized): cross-entropy and z-loss, kept apart because
/// `mean` divides them by different counts.
struct ce_totals {
  exact_sum ce, z;
};

/// What one chunk's rows (one thread's) add up to, while it runs: the compensated sums, and for
/// rows in the lanes of across groups, lane l's losses in a compensated sum of its own (TwoSum,
/// a vector of lanes at a time), folded into the others at the end.
struct chunk_sums {
  static constexpr int max_lanes = 16;
  exact_sum ce, z;
  alignas(64) double lane_ce[max_lanes] = {};
  alignas(64) double lane_ce_comp[max_lanes] = {};
  alignas(64) double lane_z[max_lanes] = {};
  alignas(64) double lane_z_comp[max_lanes] = {};
  ce_totals folded() const noexcept {
    ce_totals r{ce, z};
    for (int l = 0; l < max_lanes; ++l) {
      r.ce.add(lane_ce[l]);
      if (std::isfinite(lane_ce[l])) r.ce.add(lane_ce_comp[l]);
      r.z.add(lane_z[l]);
      if (std::isfinite(lane_z[l])) r.z.add(lane_z_comp[l]);
    }
    return r;
  }
};

/// The totals of each chunk of rows (per thread), merged in chunk order. A cache line each:
/// neighbours on one line would make two threads slower than one. Storage only: a chunk's
/// totals are written when it ends (chunk_op), so a call on few threads touches few lines.
class chunk_totals {
 public:
  int chunks = 1;
  void set(int c, const ce_totals& t) noexcept { new (raw_[c]) ce_totals(t); }
  /// Every chunk in [0, chunks) has been set.
  ce_totals merged() const noexcept {
    ce_totals all = at(0);
    for (int c = 1; c < chunks; ++c) {
      all.ce.add(at(c).ce.value());
      all.z.add(at(c).z.value());
    }
    return all;
  }

 private:
  static constexpr std::size_t line = 64;
  static_assert(sizeof(ce_totals) <= line, "smax: ce_totals is larger than a cache line");
  const ce_totals& at(int c) const noexcept {
    return *std::launder(reinterpret_cast<const ce_totals*>(raw_[c]));
  }
  alignas(line) unsigned char raw_[max_threads][line];
};

/// One chunk's kernel body with its running sums, on the stack of the thread that runs it
/// (make_op builds it there); its totals go to `out` when it is destroyed, after its last row.
/// Not copyable: there is exactly one per chunk.
template <class Body>
struct chunk_op {
  Body body;
  chunk_totals* out;
  int chunk;
  mutable chunk_sums sums{};
  chunk_op(Body b, chunk_totals* o, int c) noexcept : body(b), out(o), chunk(c) {}
  chunk_op(const chunk_op&) = delete;
  chunk_op& operator=(const chunk_op&) = delete;
  ~chunk_op() { out->set(chunk, sums.folded()); }
  template <class... A>
  void operator()(const A&... a) const {
    body(sums, a...);
  }
};

/// Adds a group's row losses to the totals: a row's own to the compensated sums, an across
/// group's lane by lane to its per-lane compensated sums (they join the others at the end).
template <class G, class T>
void record_loss(const G& g, const typename G::state& ce, const typename G::state& zl,
                 const per_dist<T>& losses, chunk_sums& tot) {
  if constexpr (G::lane_totals) {
    static_assert(lanes<typename G::state> <= chunk_sums::max_lanes, "smax: too many lanes");
    g.add_lanes(tot.lane_ce, tot.lane_ce_comp, ce);
    g.add_lanes(tot.lane_z, tot.lane_z_comp, zl);
  } else if (g.records()) {  // a split distribution is recorded by one thread
    tot.ce.add(static_cast<double>(ce));
    tot.z.add(static_cast<double>(zl));
  }
  if (losses.p != nullptr) g.store_out(losses, ce + zl);
}

/// What one pass over a distribution's logits leaves for its loss and gradient (one value per
/// lane in across groups). The statistics of the shards of one vocabulary merge (merge_stats)
/// into those of the whole: that is vocabulary-parallel cross-entropy.
template <class S>
struct ce_stats {
  S max;            // max of the (capped) logits
  S sum_other;      // Σ exp(x_c − shift) over the classes other than the label
  S smooth;         // Σ w_c (x_c − shift), only with label smoothing (else 0)
  S weight_sum;     // Σ w_c over these classes
  S target;         // the (capped) logit of the label when it is among these classes, else 0
  S target_weight;  // w_y when the label is among these classes, else 0
};
inline constexpr int ce_stats_width = 6;

/// Associative (up to rounding), commutative (bit for bit) merge of the statistics of two
/// disjoint sets of classes, one row (scalar S).
template <class S>
ce_stats<S> merge_stats(const ce_stats<S>& a, const ce_stats<S>& b) noexcept {
  static_assert(std::is_floating_point<S>::value, "smax: merge_stats merges one row");
  // An all-reduce may combine in any order and must give every rank the same statistics. The
  // compiler may contract a·f + b·g into fma(a, f, b·g), which is not symmetric: so the
  // operands go in one order, by their bits, whichever side they come from.
  if (std::memcmp(&a, &b, sizeof a) > 0) return merge_stats(b, a);
  ce_stats<S> r;
  r.max = max(a.max, b.max);
  // NaN must survive the max: a NaN in either operand makes the merged sums NaN anyway.
  const S shift = row_shift(r.max), sa = row_shift(a.max), sb = row_shift(b.max);
  // The factors from each side's own max: a side with no finite logit (an empty or fully masked
  // shard: max −inf, shifted by 0) gets exp(−inf) = 0, not exp(0 − max), which overflows when
  // the row's max is far below 0 (and 0 · inf = NaN).
  r.sum_other = a.sum_other * exp_nonpos(a.max - shift) + b.sum_other * exp_nonpos(b.max - shift);
  r.smooth = (a.smooth + a.weight_sum * (sa - shift)) + (b.smooth + b.weight_sum * (sb - shift));
  r.weight_sum = a.weight_sum + b.weight_sum;
  r.target = a.target + b.target;
  r.target_weight = a.target_weight + b.target_weight;
  return r;
}

/// Where pass 2 keeps an exp for pass 3: an array (the gradient, or a stack buffer), or
/// kept_exps, which may keep only some.
template <class IO, class U, class W>
SMAX_ALWAYS_INLINE void keep_exp(const IO& io, const strided<U>& a, const W& e) noexcept {
  io.store(a, e);
}
template <class IO, class T, class W>
SMAX_ALWAYS_INLINE void keep_exp(const IO& io, const kept_exps<T>& a, const W& e) noexcept {
  a.keep(io, e);
}
template <class IO, class U>
SMAX_ALWAYS_INLINE bool has_exp(const IO&, const strided<U>&) noexcept {
  return true;
}
template <class IO, class T>
SMAX_ALWAYS_INLINE bool has_exp(const IO& io, const kept_exps<T>& a) noexcept {
  return a.has(io);
}
template <class IO, class U>
SMAX_ALWAYS_INLINE auto load_exp(const IO& io, const strided<U>& a) noexcept {
  return io.load(a);
}
template <class IO, class T>
SMAX_ALWAYS_INLINE auto load_exp(const IO& io, const kept_exps<T>& a) noexcept {
  return a.load(io);
}

/// The statistics pass: pass 1 (max) and pass 2 (exp, the sum without the label's class, the
/// smoothing sum). With Store, the gradient buffer keeps exp(x − shift) for the finish (or, when
/// capped, the capped logits); `src` is set to where the (capped) logits can be read again. gr
/// may instead be the float exps of a 16-bit gradient (kept_exps), never with a cap.
template <bool Store, bool General, class G, class X, class T, class Lab, class Sink>
ce_stats<typename G::state> ce_label_stats(const G& g, const strided<const X>& x, const Lab& lab,
                                           const Sink& gr, const ce_params<T>& prm,
                                           strided<const X>& src) {
  constexpr bool in_grad = std::is_same<Sink, strided<X>>::value;
  using S = typename G::state;
  const T zero(0), one(1);
  const bool capped = General && prm.cap > 0;
  [[maybe_unused]] const bool smooth = General && prm.smoothing > 0;
  const bool weighted = General && prm.weights != nullptr;
  const T cap_c = prm.cap, inv_cap = capped ? one / prm.cap : zero;
  const auto cap = [=](const auto& v) {
    using W = std::decay_t<decltype(v)>;
    return W(cap_c) * detail::tanh(v * W(inv_cap));
  };
  // Pass 1: the max. Stored capped logits let tanh run once per element.
  const S m = g.reduce_max([=](const auto& io) {
    auto v = io.load(x);
    if constexpr (General) {
      if (capped) {
        v = cap(v);
        if constexpr (Store && in_grad) io.store(gr, v);
      }
    }
    return v;
  });
  if constexpr (in_grad) {
    src = capped && Store ? strided<const X>{gr.p, gr.ds, gr.cs} : x;
  } else {
    src = x;
  }
  const strided<const X> in = src;
  const bool recap = capped && !Store;
  const S shift = row_shift(m);
  ce_stats<S> st;
  st.max = m;
  st.target = g.gather(in, lab);  // read before pass 2 overwrites it when grad is the logits
  if (recap) st.target = cap(st.target);
  st.weight_sum = S(prm.weight_sum);
  st.target_weight = weighted ? g.gather(per_class<T>{prm.weights}, lab) : g.label_here(lab);
  // Pass 2: exp once per element (stored for pass 3); the label's class stays out of the sum.
  const T* w = prm.weights;
  const auto sum2 = g.reduce_sum([=](const auto& io) {
    auto v = io.load(in);
    if constexpr (General) {
      if (recap) v = cap(v);
    }
    using W = std::decay_t<decltype(v)>;
    const W d = v - io.splat(shift);
    const W e = exp_nonpos(d);
    if constexpr (Store) {
      if (!capped) keep_exp(io, gr, e);
    }
    const W other = select(io.is_class(lab), W(zero), e);
    if constexpr (General) {
      const W wd = weighted ? io.load(per_class<T>{w}) * d : d;
      return sums<W, 2>{{other, smooth ? wd : W(zero)}};
    } else {
      return other;
    }
  });
  if constexpr (General) {
    st.sum_other = sum2[0];
    st.smooth = sum2[1];
  } else {
    st.sum_other = sum2;
    st.smooth = S(zero);
  }
  return st;
}

/// The finish: the loss from the statistics and, with HasGrad, pass 3 (the gradient). Stored:
/// the gradient buffer holds exp(x − shift) from the statistics pass; otherwise exp is
/// recomputed from `src` (capped logits, or logits to cap when Recap). `exps`: where the exps are
/// instead (a stack buffer, or kept_exps for a 16-bit gradient).
template <bool HasGrad, bool General, class G, class X, class T, class Lab, class Sink = strided<X>>
void ce_label_finish(const G& g, const ce_stats<typename G::state>& st, const Lab& lab,
                     const strided<const X>& src, bool stored, bool recap, const strided<X>& gr,
                     const per_dist<const T>& up, const per_dist<T>& losses,
                     const ce_params<T>& prm, chunk_sums& tot, const Sink* exps = nullptr) {
  using S = typename G::state;
  const T zero(0), one(1);
  const bool capped = General && prm.cap > 0;
  const bool smooth = General && prm.smoothing > 0;
  const bool weighted = General && prm.weights != nullptr;
  const T eps = prm.smoothing, eps_k = eps / static_cast<T>(prm.k_total);
  const S shift = row_shift(st.max);
  const S dy = st.target - shift;
  const S e_y = exp_nonpos(dy);
  const S s = st.sum_other + e_y;
  const S log_s = row_log_sum(s);
  const S w_y = st.target_weight;
  // −log p_y = log(s) − dy rounds s = e_y + Σ_{c≠y} first, which leaves a confident prediction's
  // small loss only a few digits (none below eps); log1p(Σ_{c≠y} / e_y) keeps them all. Labels
  // far below the max (e_y tiny or 0, masked) keep the first form: their loss is large.
  const S nll = select(e_y > S(std::numeric_limits<T>::min() * T(0x1p100)),
                       detail::log1p(st.sum_other / e_y), log_s - dy);
  S ce = S(one - eps) * w_y * nll;
  // Here and below, a multiply and an add are one explicit fma, or none: were the compiler to
  // fuse them on its own, two inlined copies of this code (a stack tile's, a row's in place) could
  // fuse differently and round differently.
  if (smooth) ce = detail::fma(S(eps_k), detail::fma(st.weight_sum, log_s, -st.smooth), ce);
  const S lse = shift + log_s;  // 0 for a fully masked row, whose loss is already +inf
  // The upstream gradient is read before the loss is stored: losses may be dloss itself.
  const S u = HasGrad && up.p != nullptr ? g.load_out(up) : S(one);
  record_loss(g, keep_valid(lab, ce), keep_valid(lab, S(prm.z) * lse * lse), losses, tot);

  if constexpr (HasGrad) {
    const S r_ce = S(prm.grad_ce) * u;
    const S zterm = S(T(2) * prm.z) * S(prm.grad_z) * u * lse;
    const S inv = row_reciprocal(s);
    const S coef =
        detail::fma(r_ce, detail::fma(S(one - eps), w_y, S(eps_k) * st.weight_sum), zterm);
    const S b = r_ce * S(eps_k);
    const T cap_c = prm.cap, inv_cap = capped ? one / prm.cap : zero;
    const T* w = prm.weights;
    // Where pass 2 stored the exps: the gradient buffer, or a stack buffer when the gradient
    // streams (then written once, here), or kept_exps.
    const Sink ex = [&] {
      if constexpr (std::is_same<Sink, strided<X>>::value) {
        return exps != nullptr ? *exps : gr;
      } else {
        return *exps;
      }
    }();
    // The label's entry: p_y − 1 = −Σ_{c≠y} p_c, so a confident prediction keeps its gradient.
    // Written over pass 3's value for that class: in pass 3 itself in across groups, and in
    // contiguous rows whose gradient pass 3 writes once (exps elsewhere): a store after it into
    // a line just streamed to memory fetches the line back, a memory round trip per row (about
    // 0.45 us on Zen 4, as long as a row of 1000 classes takes).
    const bool in_pass = G::label_in_pass || (G::rows_contiguous && exps != nullptr);
    S gy = detail::fma(r_ce * S(eps_k), st.weight_sum - w_y,
                       detail::fma(-coef, st.sum_other * inv, zterm));
    if (capped) {
      const S t = st.target * S(inv_cap);
      gy = gy * detail::fma(-t, t, S(one));
    }
    // Pass 3: the gradient, from the stored exps or from the logits again.
    const auto pass3 = [=](const auto& io) {
      using W = decltype(io.splat(coef));
      W p;
      if (stored && has_exp(io, ex)) {
        p = load_exp(io, ex);
      } else {
        W v = io.load(src);
        if constexpr (General) {
          if (recap) v = W(cap_c) * detail::tanh(v * W(inv_cap));
        }
        p = exp_nonpos(v - io.splat(shift));
      }
      W gv = io.splat(coef) * (p * io.splat(inv));
      if constexpr (General) {
        if (smooth) {
          gv =
              weighted ? detail::fma(-io.splat(b), io.load(per_class<T>{w}), gv) : gv - io.splat(b);
        }
        if (capped) {
          W c = io.load(src);
          if (recap) c = W(cap_c) * detail::tanh(c * W(inv_cap));
          const W t = c * W(inv_cap);
          gv = gv * detail::fma(-t, t, W(one));
        }
      }
      if constexpr (G::label_in_pass || G::rows_contiguous) {
        if (in_pass) gv = select(io.is_class(lab), io.splat(gy), gv);
      }
      io.store(gr, keep_valid_at(io, lab, gv));
    };
    if (exps != nullptr) {
      g.for_each_stream(gr, pass3);
    } else {
      g.for_each(pass3);
    }
    if constexpr (!G::label_in_pass) {
      if (!in_pass) g.scatter(gr, lab, gy);
    }
  }
}

/// One group of distributions with class-index labels, fused: statistics, loss, gradient.
/// General is false when there is no soft-cap, smoothing or weights: the passes then carry
/// nothing but exp and its sum.
template <bool HasGrad, bool General, class G, class X, class T, class Lbl>
void ce_label_group(const G& g, const strided<const X>& x, const per_dist<const Lbl>& y,
                    const strided<X>& gr, const per_dist<const T>& up, const per_dist<T>& losses,
                    const ce_params<T>& prm, chunk_sums& tot) {
  using S = typename G::state;
  const auto lab = g.load_labels(y, prm.labels);
  if (!any_valid(lab)) {
    if constexpr (HasGrad) g.for_each([=](const auto& io) { io.store(gr, io.splat(S(0))); });
    record_loss(g, S(0), S(0), losses, tot);
    return;
  }
  strided<const X> src = x;
  const bool capped = General && prm.cap > 0;
  if constexpr (HasGrad && G::rows_contiguous) {
    // Pass 2's exps wait for pass 3, which writes the gradient once: in a stack buffer where it
    // streams (rows up to the buffer), and in float where it is 16-bit (kept_exps).
    alignas(64) T scratch[is_narrow_v<X> ? kept_elems<T> : scratch_elems<T>];
    const auto fused = [&](const auto& ex) {
      const auto st = ce_label_stats<true, General>(g, x, lab, ex, prm, src);
      ce_label_finish<true, General>(g, st, lab, src, true, false, gr, up, losses, prm, tot, &ex);
    };
    if constexpr (is_narrow_v<X>) {
      if (capped) {
      } else if (g.begin == 0 && g.k <= kept_elems<T>) {
        return fused(strided<T>{scratch, 0, 1});  // the whole row's exps, in float
      } else {
        return fused(kept_exps<T>(gr.p, x.p, g.begin, g.k, G::L, scratch));
      }
    } else {
      if (prm.stream && !capped && g.begin == 0 && g.k <= scratch_elems<T>)
        return fused(strided<X>{scratch, 0, 1});
    }
  }
  // Otherwise (capped, or rows in lanes) a 16-bit gradient keeps no intermediate in its own
  // precision: pass 3 computes them again from the logits.
  constexpr bool keep = HasGrad && !is_narrow_v<X>;
  const auto st = ce_label_stats<keep, General>(g, x, lab, gr, prm, src);
  ce_label_finish<HasGrad, General>(g, st, lab, src, keep && !capped, capped && !keep, gr, up,
                                    losses, prm, tot);
}

/// One group of distributions with probability targets of the logits' shape.
template <bool HasGrad, bool General, class G, class X, class T>
void ce_prob_group(const G& g, const strided<const X>& x, const strided<const X>& t,
                   const strided<X>& gr, const per_dist<const T>& up, const per_dist<T>& losses,
                   const ce_params<T>& prm, chunk_sums& tot) {
  using S = typename G::state;
  const T zero(0), one(1);
  const bool capped = General && prm.cap > 0;
  const bool weighted = General && prm.weights != nullptr;
  const T eps = General ? prm.smoothing : zero, eps_k = eps / static_cast<T>(prm.k_total);
  const T inv_cap = capped ? one / prm.cap : zero;
  const auto cap = [=](const auto& v) {
    using W = std::decay_t<decltype(v)>;
    return W(prm.cap) * detail::tanh(v * W(inv_cap));
  };
  // w_c t'_c, the weight of class c in the loss.
  const auto target = [=](const auto& io) {
    auto tv = io.load(t);
    using W = std::decay_t<decltype(tv)>;
    if constexpr (General) {
      if (eps > zero) tv = detail::fma(tv, W(one - eps), W(eps_k));
      if (weighted) tv = tv * io.load(per_class<T>{prm.weights});
    }
    return tv;
  };

  // The gradient buffer keeps the capped logits or the exps between passes, except a 16-bit one
  // (rounded once, at the end: pass 3 computes them again).
  constexpr bool keep = HasGrad && !is_narrow_v<X>;
  const S m = g.reduce_max([=](const auto& io) {
    auto v = io.load(x);
    if constexpr (General) {
      if (capped) {
        v = cap(v);
        if constexpr (keep) io.store(gr, v);
      }
    }
    return v;
  });
  const strided<const X> src = capped && keep ? strided<const X>{gr.p, gr.ds, gr.cs} : x;
  const bool recap = capped && !keep;
  const S shift = row_shift(m);

  const auto sum3 = g.reduce_sum([=](const auto& io) {
    auto v = io.load(src);
    if constexpr (General) {
      if (recap) v = cap(v);
    }
    using W = std::decay_t<decltype(v)>;
    const W d = v - io.splat(shift);
    const W e = exp_nonpos(d);
    if constexpr (keep) {
      if (!capped) io.store(gr, e);
    }
    const W wt = target(io);
    return sums<W, 3>{{e, wt, select(wt == W(zero), W(zero), wt * d)}};
  });
  const S s = sum3[0], tw = sum3[1];
  const S log_s = row_log_sum(s);
  const S lse = shift + log_s;
  const S u = HasGrad && up.p != nullptr ? g.load_out(up) : S(one);  // before losses (may alias)
  record_loss(g, tw * log_s - sum3[2], S(prm.z) * lse * lse, losses, tot);

  if constexpr (HasGrad) {
    const S r_ce = S(prm.grad_ce) * u;
    const S coef = r_ce * tw + S(T(2) * prm.z) * S(prm.grad_z) * u * lse;
    const S inv = row_reciprocal(s);
    g.for_each([=](const auto& io) {
      using W = decltype(io.splat(coef));
      const auto logit = [&] {  // the capped logit when capped
        W v = io.load(src);
        if constexpr (General) {
          if (recap) v = cap(v);
        }
        return v;
      };
      const W p = (keep && !capped ? io.load(gr) : exp_nonpos(logit() - io.splat(shift))) *
                  io.splat(inv);
      W gv = io.splat(coef) * p - io.splat(r_ce) * target(io);
      if constexpr (General) {
        if (capped) {
          const W c = logit() * W(inv_cap);
          gv = gv * detail::fma(-c, c, W(one));
        }
      }
      io.store(gr, gv);
    });
  }
}

/// f(has_grad, general) as std::bool_constant: the kernel body for this call. HasGrad comes from
/// the caller's types, so that each call instantiates only the bodies it can run.
template <bool HasGrad, class F>
void with_modes(bool general, F&& f) {
  if (general) {
    f(std::bool_constant<HasGrad>{}, std::true_type{});
  } else {
    f(std::bool_constant<HasGrad>{}, std::false_type{});
  }
}

/// The check of n labels y: counts those that are not `ignore` into `valid`
/// and returns whether any of them lies outside [0, k). 32- and 64-bit integer labels are
/// compared a vector at a time; other types one at a time.
template <class Arch = best_arch, class Lbl>
bool scan_labels(per_dist<const Lbl> y, index_t n, index_t k, std::int64_t ignore,
                 index_t& valid) noexcept {
  std::uint64_t count = 0;
  bool bad = false;
  const auto uk = static_cast<std::uint64_t>(k);
  index_t i = 0;
  if constexpr (!std::is_same<Arch, scalar_arch>::value && std::is_integral<Lbl>::value &&
                std::is_signed<Lbl>::value && (sizeof(Lbl) == 4 || sizeof(Lbl) == 8)) {
    const Lbl* p = y.p;
    using B = xsimd::batch<Lbl, Arch>;
    constexpr index_t L = static_cast<index_t>(B::size);
    constexpr auto top = std::numeric_limits<Lbl>::max();
    constexpr auto bottom = std::numeric_limits<Lbl>::min();
    // An ignore_index no label can equal ignores nothing; a k above every label bounds nothing.
    const bool ignores = ignore >= bottom && ignore <= top;
    const B ig(static_cast<Lbl>(ignores ? ignore : 0)), kk(static_cast<Lbl>(k <= top ? k : top));
    const B zero(Lbl(0)), one(Lbl(1));
    constexpr index_t block = index_t{1} << 20;  // lane counts stay far below 2^31
    while (y.stride == 1 && i + L <= n) {
      B cnt = zero;
      auto off = zero != zero;
      const index_t end = std::min(n - (n - i) % L, i + block * L);
      for (; i < end; i += L) {
        const B v = B::load_unaligned(p + i);
        const auto counts = ignores ? v != ig : zero == zero;
        cnt = cnt + select(counts, one, zero);
        off = off | (counts & ((v < zero) | (k <= top ? v >= kk : zero != zero)));
      }
      count += static_cast<std::uint64_t>(xsimd::hadd(cnt));
      bad = bad || xsimd::any(off);
    }
  }
  for (; i < n; ++i) {
    const auto v = static_cast<std::int64_t>(y.p[i * y.stride]);
    const bool counts = v != ignore;
    count += counts;
    bad |= counts & (static_cast<std::uint64_t>(v) >= uk);  // v < 0 wraps above k
  }
  valid = static_cast<index_t>(count);
  return bad;
}

/// Fused cross-entropy with class-index labels over n distributions of k classes.
/// grad.p == nullptr: loss only (grad must then carry x's strides); upstream.p == nullptr: a
/// per-row upstream gradient of 1; losses.p == nullptr: no per-row losses. Labels are assumed
/// validated (in [0, k) or equal to prm.ignore). grad may be x itself (in place).
/// HasGrad == (grad.p != nullptr).
template <bool HasGrad, class Arch = best_arch, class X, class Lbl, class T>
ce_totals cross_entropy_labels(index_t n, index_t k, strided<const X> x, per_dist<const Lbl> y,
                               strided<X> grad, per_dist<const T> upstream, per_dist<T> losses,
                               const ce_params<T>& prm_in, int threads = 1) noexcept {
  chunk_totals tots;
  ce_params<T> p = prm_in;
  p.stream = grad.p != nullptr && streams<vec_t<T, Arch>>(n, k, grad);
  const ce_params<T>& prm = p;
  with_modes<HasGrad>(prm.general(), [&](auto has_grad, auto gen) {
    tots.chunks = run_threads<Arch, T, tile_kind::fused>(
        n, k, threads,
        [&](int chunk) {
          const auto body = [&prm](chunk_sums& tot, const auto& g, const auto& xi,
                                   const per_dist<const Lbl>& yi, const auto& gi, const auto& ui,
                                   const auto& li) {
            ce_label_group<decltype(has_grad)::value, decltype(gen)::value>(g, xi, yi, gi, ui, li,
                                                                            prm, tot);
          };
          return chunk_op<decltype(body)>(body, &tots, chunk);
        },
        x, y, grad, upstream, losses);
  });
  return tots.merged();
}

/// Fused cross-entropy with probability targets t of x's shape; arguments as above.
template <bool HasGrad, class Arch = best_arch, class X, class T>
ce_totals cross_entropy_probs(index_t n, index_t k, strided<const X> x, strided<const X> t,
                              strided<X> grad, per_dist<const T> upstream, per_dist<T> losses,
                              const ce_params<T>& prm, int threads = 1) noexcept {
  chunk_totals tots;
  with_modes<HasGrad>(prm.general(), [&](auto has_grad, auto gen) {
    tots.chunks = run_threads<Arch, T, tile_kind::fused>(
        n, k, threads,
        [&](int chunk) {
          const auto body = [&prm](chunk_sums& tot, const auto& g, const auto& xi, const auto& ti,
                                   const auto& gi, const auto& ui, const auto& li) {
            ce_prob_group<decltype(has_grad)::value, decltype(gen)::value>(g, xi, ti, gi, ui, li,
                                                                           prm, tot);
          };
          return chunk_op<decltype(body)>(body, &tots, chunk);
        },
        x, t, grad, upstream, losses);
  });
  return tots.merged();
}

/// Vocabulary-parallel, step 1: the statistics of n distributions over this shard's k classes,
/// into stats (n rows of ce_stats_width values: max, sum_other, smooth, weight_sum, target,
/// target_weight). prm.labels.offset/k place the shard in the vocabulary.
template <class Arch = best_arch, class X, class Lbl, class T>
void cross_entropy_shard_stats(index_t n, index_t k, strided<const X> x, per_dist<const Lbl> y,
                               T* stats, const ce_params<T>& prm, int threads = 1) noexcept {
  if (n == 0) return;  // no statistics (stats may be null: no arithmetic on it)
  const strided<X> none{nullptr, x.ds, x.cs};
  with_modes<false>(prm.general(), [&](auto, auto gen) {
    run_threads<Arch, T, tile_kind::fused>(
        n, k, threads,
        every_chunk([&prm, none](const auto& g, const auto& xi, const per_dist<const Lbl>& yi,
                                 const per_dist<T>& s0, const per_dist<T>& s1,
                                 const per_dist<T>& s2, const per_dist<T>& s3,
                                 const per_dist<T>& s4, const per_dist<T>& s5) {
          strided<const T> src = xi;
          const auto lab = g.load_labels(yi, prm.labels);
          const auto st = ce_label_stats<false, decltype(gen)::value>(g, xi, lab, none, prm, src);
          g.store_out(s0, st.max);
          g.store_out(s1, st.sum_other);
          g.store_out(s2, st.smooth);
          g.store_out(s3, st.weight_sum);
          g.store_out(s4, st.target);
          g.store_out(s5, st.target_weight);
        }),
        x, y, per_dist<T>{stats, ce_stats_width}, per_dist<T>{stats + 1, ce_stats_width},
        per_dist<T>{stats + 2, ce_stats_width}, per_dist<T>{stats + 3, ce_stats_width},
        per_dist<T>{stats + 4, ce_stats_width}, per_dist<T>{stats + 5, ce_stats_width});
  });
}

/// Vocabulary-parallel, step 3: given the statistics merged over every shard, this shard's
/// gradient (HasGrad false: grad.p is null, the loss only, and then k may be 0) and the loss
/// totals.
template <bool HasGrad, class Arch = best_arch, class X, class Lbl, class T>
ce_totals cross_entropy_shard_finish(index_t n, index_t k, strided<const X> x,
                                     per_dist<const Lbl> y, const T* stats, strided<X> grad,
                                     per_dist<const T> upstream, per_dist<T> losses,
                                     const ce_params<T>& prm, int threads = 1) noexcept {
  chunk_totals tots;
  if (n == 0) {  // stats may be null: no arithmetic on it
    tots.set(0, ce_totals{});
    return tots.merged();
  }
  with_modes<HasGrad>(prm.general(), [&](auto has_grad, auto gen) {
    tots.chunks = run_threads<Arch, T, tile_kind::fused>(
        n, k, threads,
        [&](int chunk) {
          const auto body = [&prm](chunk_sums& tot, const auto& g, const auto& xi,
                                   const per_dist<const Lbl>& yi, const auto& gi, const auto& ui,
                                   const auto& li, const per_dist<const T>& s0,
                                   const per_dist<const T>& s1, const per_dist<const T>& s2,
                                   const per_dist<const T>& s3, const per_dist<const T>& s4,
                                   const per_dist<const T>& s5) {
            using S = typename std::decay_t<decltype(g)>::state;
            const auto lab = g.load_labels(yi, prm.labels);
            if (!any_valid(lab)) {
              if constexpr (decltype(has_grad)::value)
                g.for_each([=](const auto& io) { io.store(gi, io.splat(S(0))); });
              record_loss(g, S(0), S(0), li, tot);
              return;
            }
            const ce_stats<S> st{g.load_out(s0), g.load_out(s1), g.load_out(s2),
                                 g.load_out(s3), g.load_out(s4), g.load_out(s5)};
            const bool capped = decltype(gen)::value && prm.cap > 0;
            ce_label_finish<decltype(has_grad)::value, decltype(gen)::value>(
                g, st, lab, xi, false, capped, gi, ui, li, prm, tot);
          };
          return chunk_op<decltype(body)>(body, &tots, chunk);
        },
        x, y, grad, upstream, losses, per_dist<const T>{stats, ce_stats_width},
        per_dist<const T>{stats + 1, ce_stats_width}, per_dist<const T>{stats + 2, ce_stats_width},
        per_dist<const T>{stats + 3, ce_stats_width}, per_dist<const T>{stats + 4, ce_stats_width},
        per_dist<const T>{stats + 5, ce_stats_width});
  });
  return tots.merged();
}

}  // namespace smax::detail
