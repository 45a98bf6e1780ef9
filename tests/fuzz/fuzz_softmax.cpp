// Differential fuzz target: smax::softmax, log_softmax, logsumexp, softmax_backward and
// log_softmax_backward against the long double reference (fuzz_reference.hpp), on every layout
// the bytes describe: float or double, row- or column-major, rowwise or colwise or a compile-time
// vector, unaligned and strided Maps (inputs may even alias themselves through zero strides), and
// outputs that are separate, the input itself (y = softmax(y)), or another view of the input's
// buffer.
//
// Input format (every byte string is valid; see fuzz_common.hpp for the stream past the end):
//   0      flags: bit 0 double, bit 1 row-major, bit 2 colwise, bit 3 compile-time vector
//   1..3   N = b1 & 63, K = b2 | (b3 & 15) << 8; N shrinks so that N*K <= 4096; vector: N = 1
//   4..7   seed of the stream past the end
//   8..11  value specs of x and of the upstream gradient (encoding, offset, scale, special rate)
//   12     sources of the backward inputs: bits 0-1 y, bits 2-3 logp (smax's own forward output,
//          the rounded reference, the raw values, the raw values folded into the domain)
//   13     output placement: bits 0-1 (separate, in place, a view of input 0's buffer,
//          separate); bit 2 in place into dy; bits 3-4 == 3 a destination of the wrong shape (bit
//          5: one row more, else one column more); bits 6-7 == 3 dy of the wrong shape
//   14..19 layouts of x (and y, logp), of dy, and of the output (offset, inner stride, padding)
//   then   N*K values of x in logical order (distribution i, class j), then N*K values of dy
//
// What is checked (budgets of tests/reference.hpp, special values of CONTRACT.md):
//   * every element against the reference within its budget, special values exactly;
//   * the backward passes only inside their domain: y in [0, 1] (or NaN) for softmax_backward,
//     logp <= 0 (or NaN) for log_softmax_backward, i.e. what the forward passes return, and only
//     where no T computation of the formula can overflow (IEEE overflow depends on the order of
//     the sums); outside, the call must still not crash, throw or write out of place;
//   * std::invalid_argument exactly when a shape is wrong, and then every buffer untouched;
//   * no byte of any buffer changes except the output's elements.
#include <Eigen/Core>
#include <smax/smax.hpp>

#include "fuzz_common.hpp"
#include "fuzz_reference.hpp"

#include <cstdint>
#include <exception>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

namespace {

using namespace smax_fuzz;
using Eigen::Dynamic;

/// Where the inputs of a backward pass come from.
enum class source { forward, reference, raw, folded };

struct fuzz_case {
  bool is_double = false, row_major = true, colwise = false, vector = false;
  Index n = 0, k = 0;  // n distributions of k classes
  value_spec xs, dys;
  source y_src = source::forward, logp_src = source::forward;
  int placement = 0;  // 0 separate, 1 in place, 2 a view of input 0's buffer
  bool into_dy = false, bad_out = false, bad_out_rows = false, bad_dy = false;
  std::uint8_t in_layout[2] = {0, 0}, dy_layout[2] = {0, 0}, out_layout[2] = {0, 0};

  std::string describe() const {
    std::ostringstream s;
    s << (is_double ? "double" : "float") << (vector ? " vector" : row_major ? " row-major" : " col-major")
      << (vector ? "" : colwise ? " colwise" : " rowwise") << " N=" << n << " K=" << k
      << " x:" << name(xs.enc) << " offset " << static_cast<double>(xs.offset) << " scale "
      << static_cast<double>(xs.scale) << " placement " << placement << (into_dy ? " into dy" : "")
      << (bad_out ? " bad-out" : "") << (bad_dy ? " bad-dy" : "");
    return s.str();
  }
};

/// The stored shape of n distributions of k classes.
struct stored_shape {
  Index rows, cols;
};
stored_shape stored_of(const fuzz_case& c, Index n, Index k) {
  if (c.vector) return {k, 1};
  return c.colwise ? stored_shape{k, n} : stored_shape{n, k};
}

layout make_layout(const fuzz_case& c, const std::uint8_t (&bytes)[2], Index n, Index k,
                   bool reads_only) {
  const stored_shape s = stored_of(c, n, k);
  reader r(bytes, 2);
  return read_layout(r, s.rows, s.cols, c.vector ? false : c.row_major, reads_only);
}

/// Buffer index of logical element (i, j): distribution i, class j.
Index logical_at(const fuzz_case& c, const layout& l, Index i, Index j) {
  return (c.vector || c.colwise) ? l.at(j, i) : l.at(i, j);
}

template <class T>
void fill(const fuzz_case& c, buffer<T>& b, const layout& l, const std::vector<T>& v) {
  for (Index i = 0; i < c.n; ++i)
    for (Index j = 0; j < c.k; ++j) b[logical_at(c, l, i, j)] = v[static_cast<std::size_t>(i * c.k + j)];
}

/// The logical values a layout holds (after fill, with aliased strides, what the input really is).
template <class T>
std::vector<ld> read_back(const fuzz_case& c, const buffer<T>& b, const layout& l) {
  std::vector<ld> v(static_cast<std::size_t>(c.n * c.k));
  for (Index i = 0; i < c.n; ++i)
    for (Index j = 0; j < c.k; ++j) v[static_cast<std::size_t>(i * c.k + j)] = b[logical_at(c, l, i, j)];
  return v;
}

/// Whether a result is within its budget: special values exactly, others within `bound`.
template <class T>
bool within(ld got, ld exact, ld bound) {
  const ld err = abs_error<T>(got, exact);
  return err == 0 || err <= bound;
}

[[noreturn]] void report(const char* op, Index i, Index j, ld got, ld exact, ld err, ld unit,
                         ld bound, const char* unit_name, const std::string& inputs) {
  std::ostringstream s;
  s.precision(21);
  s << op << " element (distribution " << i << ", class " << j << "): got " << got << ", exact "
    << exact << ", error " << static_cast<double>(err / unit) << " " << unit_name << ", budget "
    << static_cast<double>(bound / unit) << "; " << inputs;
  finding(s.str());
}

std::string row_text(const std::vector<ld>& v, Index i, Index k) {
  std::ostringstream s;
  s.precision(10);
  for (Index j = 0; j < k && j < 24; ++j) s << (j ? ", " : "") << v[static_cast<std::size_t>(i * k + j)];
  if (k > 24) s << ", ...";
  return s.str();
}

// ---- the calls ----------------------------------------------------------------------------------

enum class op { softmax, log_softmax, logsumexp, softmax_backward, log_softmax_backward };
const char* name(op o) {
  switch (o) {
    case op::softmax:
      return "smax::softmax";
    case op::log_softmax:
      return "smax::log_softmax";
    case op::logsumexp:
      return "smax::logsumexp";
    case op::softmax_backward:
      return "smax::softmax_backward";
    default:
      return "smax::log_softmax_backward";
  }
}

/// The Eigen types of one case: the matrix (or vector) and its strided Map.
template <class T, int Storage, bool Vector>
struct types {
  using M = std::conditional_t<Vector, Eigen::Matrix<T, Dynamic, 1>,
                               Eigen::Matrix<T, Dynamic, Dynamic, Storage>>;
  using Map = Eigen::Map<M, Eigen::Unaligned, Eigen::Stride<Dynamic, Dynamic>>;
  static Map map(buffer<T>& b, const layout& l) {
    return Map(b.data() + l.offset, l.rows, l.cols, Eigen::Stride<Dynamic, Dynamic>(l.outer, l.inner));
  }
};

/// Runs one operation with fresh buffers and checks everything but the values, which it returns
/// (logical order) in `out` for the caller to check; false when the call threw as expected.
template <class T, int Storage, bool Vector, class Axis>
bool run_op(const fuzz_case& c, op o, const std::vector<T>& in0, const std::vector<T>& dy,
            std::vector<ld>& in0_eff, std::vector<ld>& dy_eff, std::vector<ld>& out) {
  using Ty = types<T, Storage, Vector>;
  const bool backward = o == op::softmax_backward || o == op::log_softmax_backward;
  const bool reduce = o == op::logsumexp;
  const Index n = c.n, k = c.k;

  layout li = make_layout(c, c.in_layout, n, k, true);
  layout ld_ = make_layout(c, c.dy_layout, c.bad_dy && backward ? n + 1 : n, k, true);
  if (Vector && c.bad_dy && backward) ld_ = make_layout(c, c.dy_layout, n, k + 1, true);

  // The output: its layout, and which buffer it lives in (0: its own, 1: input 0's, 2: dy's).
  int placement = c.placement;
  const bool in_place_dy = placement == 1 && backward && c.into_dy;
  if (placement == 1 && (reduce || !(in_place_dy ? ld_ : li).injective() ||
                         (in_place_dy && c.bad_dy)))
    placement = 2;  // nothing to be in place with, or an input that cannot be written
  if (Vector && reduce) placement = 0;  // the scalar result has no destination
  const bool bad_out = c.bad_out && placement != 1 && !(Vector && reduce);
  layout lo;
  if (placement == 1) {
    lo = in_place_dy ? ld_ : li;
  } else if (reduce) {
    // One value per distribution: a column vector (rowwise) or a row vector (colwise).
    const Index len = bad_out ? n + 1 : n;
    // The vector's elements at offset + i * inner: "row-major" for a row vector, else column.
    reader r(c.out_layout, 2);
    lo = read_layout(r, c.colwise ? 1 : len, c.colwise ? len : 1, c.colwise, false);
  } else {
    // (A vector's length is k: one more row would not change its shape.)
    const bool more_rows = c.bad_out_rows && !Vector;
    const Index on = bad_out && more_rows ? n + 1 : n, ok = bad_out && !more_rows ? k + 1 : k;
    lo = make_layout(c, c.out_layout, on, ok, false);
  }
  const int home = placement == 1 ? (in_place_dy ? 2 : 1) : placement == 2 ? 1 : 0;

  buffer<T> b_in(std::max(li.end(), home == 1 ? lo.end() : Index{0}));
  buffer<T> b_dy(backward ? std::max(ld_.end(), home == 2 ? lo.end() : Index{0}) : 0);
  buffer<T> b_out(home == 0 ? lo.end() : 0);
  fill(c, b_in, li, in0);
  // A dy of the wrong shape keeps its sentinels: the call must throw before reading it.
  const bool dy_fits = ld_.rows == li.rows && ld_.cols == li.cols;
  if (backward && dy_fits) fill(c, b_dy, ld_, dy);
  in0_eff = read_back(c, b_in, li);
  if (backward && dy_fits) dy_eff = read_back(c, b_dy, ld_);
  const auto s_in = b_in.snapshot(), s_dy = b_dy.snapshot(), s_out = b_out.snapshot();
  buffer<T>& b_home = home == 0 ? b_out : home == 1 ? b_in : b_dy;

  const bool shape_error = bad_out || (backward && !dy_fits);
  const Axis axis{};
  std::string thrown;
  T scalar = 0;
  try {
    auto x = Ty::map(b_in, li);
    auto d = Ty::map(b_dy, ld_);
    if (reduce) {
      if constexpr (Vector) {
        scalar = smax::logsumexp(x, axis);
      } else {
        using V = std::conditional_t<std::is_same<Axis, smax::colwise_t>::value,
                                     Eigen::Matrix<T, 1, Dynamic>, Eigen::Matrix<T, Dynamic, 1>>;
        Eigen::Map<V, Eigen::Unaligned, Eigen::InnerStride<Dynamic>> y(
            b_home.data() + lo.offset, lo.rows * lo.cols, Eigen::InnerStride<Dynamic>(lo.inner));
        y = smax::logsumexp(x, axis);
      }
    } else if (placement == 1) {
      auto& y = in_place_dy ? d : x;
      if (o == op::softmax) y = smax::softmax(x, axis);
      if (o == op::log_softmax) y = smax::log_softmax(x, axis);
      if (o == op::softmax_backward) y = smax::softmax_backward(x, d, axis);
      if (o == op::log_softmax_backward) y = smax::log_softmax_backward(x, d, axis);
    } else {
      auto y = Ty::map(b_home, lo);
      if (o == op::softmax) y = smax::softmax(x, axis);
      if (o == op::log_softmax) y = smax::log_softmax(x, axis);
      if (o == op::softmax_backward) y = smax::softmax_backward(x, d, axis);
      if (o == op::log_softmax_backward) y = smax::log_softmax_backward(x, d, axis);
    }
  } catch (const std::invalid_argument& e) {
    thrown = std::string("std::invalid_argument: ") + e.what();
    if (!shape_error) finding(std::string(name(o)) + " threw " + thrown + " on valid input");
  } catch (const std::exception& e) {
    finding(std::string(name(o)) + " threw an undocumented exception: " + e.what());
  } catch (...) {
    finding(std::string(name(o)) + " threw a non-std exception");
  }
  if (shape_error && thrown.empty())
    finding(std::string(name(o)) + " did not throw std::invalid_argument on mismatched shapes");
  if (!thrown.empty()) {
    // Nothing may be written before a throw.
    check_untouched(name(o), b_in, s_in, [](Index) { return false; });
    check_untouched(name(o), b_dy, s_dy, [](Index) { return false; });
    check_untouched(name(o), b_out, s_out, [](Index) { return false; });
    ++outcomes().threw;
    return false;
  }
  // Nothing but the output's elements may change.
  const std::vector<bool> written = mask_of(lo, b_home.size());
  const auto allowed = [&](const buffer<T>& b) {
    return [&, same = &b == &b_home](Index i) { return same && (Vector && reduce ? false : written[i]); };
  };
  check_untouched(name(o), b_in, s_in, allowed(b_in));
  check_untouched(name(o), b_dy, s_dy, allowed(b_dy));
  check_untouched(name(o), b_out, s_out, allowed(b_out));
  ++outcomes().checked;

  if (reduce) {
    out.assign(static_cast<std::size_t>(n), 0);
    if constexpr (Vector) {
      out[0] = scalar;
    } else {
      for (Index i = 0; i < n; ++i) out[static_cast<std::size_t>(i)] = b_home[lo.offset + i * lo.inner];
    }
  } else {
    out = read_back(c, b_home, lo);
  }
  return true;
}

// ---- the checks ---------------------------------------------------------------------------------

template <class T>
void check_forward(const fuzz_case& c, op o, const std::vector<ld>& x, const std::vector<ld>& got) {
  const Index n = c.n, k = c.k;
  std::vector<ld> exact(static_cast<std::size_t>(k));
  const auto fail = [&](Index i, Index j, ld g, ld e, ld unit, ld bound) {
    report(name(o), i, j, g, e, abs_error<T>(g, e), unit, bound, "ulp",
           "x = [" + row_text(x, i, k) + "]");
  };
  for (Index i = 0; i < n; ++i) {
    const ld* xi = x.data() + i * k;
    if (o == op::logsumexp) {
      const ld e = ref::logsumexp(xi, k), g = got[static_cast<std::size_t>(i)];
      const ld unit = ref::ulp<T>(std::max<ld>(std::fabs(e), 1));
      if (!within<T>(g, e, ref::base_ulps<T> * unit)) fail(i, -1, g, e, unit, ref::base_ulps<T> * unit);
      continue;
    }
    const ref::row_info info = ref::inspect(xi, k);
    if (o == op::softmax) {
      ref::softmax(xi, k, exact.data());
    } else {
      ref::log_softmax(xi, k, exact.data());
    }
    for (Index j = 0; j < k; ++j) {
      const ld g = got[static_cast<std::size_t>(i * k + j)];
      ld unit, bound;
      if (o == op::softmax) {
        const ld d = info.poisoned() ? ref::nan : xi[j] - info.max;
        unit = ref::ulp<T>(exact[j]);
        bound = ref::softmax_budget_ulps<T>(k, d) * unit;
      } else {
        unit = ref::ulp<T>(std::max<ld>(std::fabs(exact[j]), 1));
        bound = ref::base_ulps<T> * unit;
      }
      if (!within<T>(g, exact[j], bound)) fail(i, j, g, exact[j], unit, bound);
    }
  }
}

/// The documented domain of a backward pass: what the forward pass returns.
bool in_domain(op o, ld v) {
  if (std::isnan(v)) return true;
  return o == op::softmax_backward ? (v >= 0 && v <= 1) : v <= 0;
}

template <class T>
void check_backward(const fuzz_case& c, op o, const std::vector<ld>& a, const std::vector<ld>& b,
                    const std::vector<ld>& got) {
  const Index n = c.n, k = c.k;
  for (Index i = 0; i < n; ++i) {
    const ld* ai = a.data() + i * k;
    const ld* bi = b.data() + i * k;
    bool domain = true;
    for (Index j = 0; j < k; ++j) domain = domain && in_domain(o, ai[j]);
    if (!domain) continue;
    const ref::backward_row r = o == op::softmax_backward ? ref::softmax_backward<T>(ai, bi, k)
                                                          : ref::log_softmax_backward<T>(ai, bi, k);
    if (r.may_overflow) continue;
    for (Index j = 0; j < k; ++j) {
      const ld unit = std::max(ref::eps<T> * r.mag[j], ref::denorm<T>);
      const ld g = got[static_cast<std::size_t>(i * k + j)], bound = ref::backward_bound<T>(r.mag[j]);
      if (within<T>(g, r.dx[j], bound)) continue;
      const bool sb = o == op::softmax_backward;
      report(name(o), i, j, g, r.dx[j], abs_error<T>(g, r.dx[j]), unit, bound, "eps*magnitude",
             std::string(sb ? "y" : "logp") + " = [" + row_text(a, i, k) + "], " +
                 (sb ? "dy" : "dlogp") + " = [" + row_text(b, i, k) + "]");
    }
  }
}

// ---- one case -----------------------------------------------------------------------------------

/// The inputs of a backward pass from a source: smax's own forward output (what a training loop
/// feeds), the reference rounded to T, the raw values, or the raw values folded into the domain.
template <class T, int Storage, bool Vector, class Axis>
std::vector<T> backward_input(const fuzz_case& c, op forward, source s, const std::vector<T>& x) {
  const Index n = c.n, k = c.k;
  std::vector<T> v(x.size());
  if (s == source::forward) {
    // Through a plain row-major matrix of distributions: the layout of the case is exercised by
    // the backward call itself.
    using R = Eigen::Matrix<T, Dynamic, Dynamic, Eigen::RowMajor>;
    const R xm = Eigen::Map<const R>(x.data(), n, k);
    R y(n, k);
    if (forward == op::softmax)
      y = smax::softmax(xm);
    else
      y = smax::log_softmax(xm);
    for (Index i = 0; i < n * k; ++i) v[static_cast<std::size_t>(i)] = y.data()[i];
  } else if (s == source::reference) {
    std::vector<ld> xl(x.begin(), x.end()), yl(x.size());
    for (Index i = 0; i < n; ++i) {
      const auto at = static_cast<std::size_t>(i * k);
      if (forward == op::softmax)
        ref::softmax(xl.data() + at, k, yl.data() + at);
      else
        ref::log_softmax(xl.data() + at, k, yl.data() + at);
    }
    for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<T>(yl[i]);
  } else {
    for (std::size_t i = 0; i < v.size(); ++i) {
      // Folded: probabilities |x| or 1/|x| in [0, 1]; log-probabilities -|x| <= 0. NaN stays.
      T t = x[i];
      if (s == source::folded && forward == op::softmax) {
        t = std::fabs(t);
        if (t > 1) t = T(1) / t;
      } else if (s == source::folded) {
        t = -std::fabs(t);
      }
      v[i] = t;
    }
  }
  return v;
}

template <class T, int Storage, bool Vector, class Axis>
void run_case(const fuzz_case& c, const std::vector<T>& x, const std::vector<T>& dy) {
  std::vector<ld> a, b, got;
  const std::string what = c.describe();
  for (op o : {op::softmax, op::log_softmax, op::logsumexp}) {
    current_case() = what + "; " + name(o);
    if (run_op<T, Storage, Vector, Axis>(c, o, x, dy, a, b, got)) check_forward<T>(c, o, a, got);
  }
  const std::vector<T> y = backward_input<T, Storage, Vector, Axis>(c, op::softmax, c.y_src, x);
  current_case() = what + "; " + name(op::softmax_backward);
  if (run_op<T, Storage, Vector, Axis>(c, op::softmax_backward, y, dy, a, b, got))
    check_backward<T>(c, op::softmax_backward, a, b, got);
  const std::vector<T> lp =
      backward_input<T, Storage, Vector, Axis>(c, op::log_softmax, c.logp_src, x);
  current_case() = what + "; " + name(op::log_softmax_backward);
  if (run_op<T, Storage, Vector, Axis>(c, op::log_softmax_backward, lp, dy, a, b, got))
    check_backward<T>(c, op::log_softmax_backward, a, b, got);
}

template <class T>
void run_typed(fuzz_case& c, reader& r) {
  std::vector<T> x(static_cast<std::size_t>(c.n * c.k)), dy(x.size());
  for (auto& v : x) v = next_value<T>(r, c.xs);
  for (auto& v : dy) v = next_value<T>(r, c.dys);
  if (c.vector) {
    run_case<T, Eigen::ColMajor, true, smax::rowwise_t>(c, x, dy);
  } else if (c.row_major) {
    if (c.colwise)
      run_case<T, Eigen::RowMajor, false, smax::colwise_t>(c, x, dy);
    else
      run_case<T, Eigen::RowMajor, false, smax::rowwise_t>(c, x, dy);
  } else {
    if (c.colwise)
      run_case<T, Eigen::ColMajor, false, smax::colwise_t>(c, x, dy);
    else
      run_case<T, Eigen::ColMajor, false, smax::rowwise_t>(c, x, dy);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  reader r(data, size);
  fuzz_case c;
  const std::uint8_t flags = r.u8();
  c.is_double = flags & 1;
  c.row_major = flags & 2;
  c.colwise = flags & 4;
  c.vector = flags & 8;
  const std::uint8_t b1 = r.u8(), b2 = r.u8(), b3 = r.u8();
  c.n = b1 & 63;
  c.k = b2 | ((b3 & 15) << 8);
  if (c.vector) c.n = 1;
  if (c.k > 0 && c.n * c.k > max_elements) c.n = max_elements / c.k;
  r.seed(r.u32());
  c.xs = read_value_spec(r);
  c.dys = read_value_spec(r);
  const std::uint8_t src = r.u8(), place = r.u8();
  c.y_src = static_cast<source>(src & 3);
  c.logp_src = static_cast<source>((src >> 2) & 3);
  c.placement = (place & 3) == 3 ? 0 : place & 3;
  c.into_dy = place & 4;
  c.bad_out = ((place >> 3) & 3) == 3;
  c.bad_out_rows = place & 32;
  c.bad_dy = (place >> 6) == 3;
  for (auto* l : {c.in_layout, c.dy_layout, c.out_layout}) {
    l[0] = r.u8();
    l[1] = r.u8();
  }
  current_case() = c.describe();
  if (c.is_double)
    run_typed<double>(c, r);
  else
    run_typed<float>(c, r);
  return 0;
}
