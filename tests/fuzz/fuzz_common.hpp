// The shared machinery of smax's differential fuzz targets: turning the fuzzer's bytes into
// shapes, layouts and values, buffers guarded by sentinels, and reporting a finding.
//
// Every byte string is a valid input: the reader returns bytes while it has them and then
// continues with a deterministic pseudo-random stream seeded by the input itself, so a short
// input still describes a full-size case and the fuzzer's mutations of the first bytes (the
// header) move the case around the interesting regions.
//
// A finding prints "SMAX-FUZZ FINDING" and a description to stderr and calls __builtin_trap(),
// so libFuzzer saves the input and the replay driver (and CTest) fail on it.
//
// Known findings (library bugs that were recorded and are being fixed) would otherwise stop every
// fuzzing run at the first input that hits them; a target may skip such an exact pattern through
// known_skip(), which counts the skips and honours SMAX_FUZZ_STRICT=1 (no skipping) so that the
// reproducers in the corpus keep failing on demand.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

namespace smax_fuzz {

using ld = long double;
using Index = std::ptrdiff_t;

/// The largest number of elements of one logical matrix: keeps each execution in the
/// sub-millisecond range (the long double reference dominates).
inline constexpr Index max_elements = 4096;

// ---- findings -----------------------------------------------------------------------------------

/// The case being run, printed with every finding so that a crash log alone says what was called.
inline std::string& current_case() {
  static std::string s;
  return s;
}

/// With SMAX_FUZZ_DUMP=1, a finding also prints every input of the case (set by the target).
inline std::function<void()>& dump_inputs() {
  static std::function<void()> f;
  return f;
}

[[noreturn]] inline void finding(const std::string& what) {
  std::fprintf(stderr, "\nSMAX-FUZZ FINDING: %s\n  case: %s\n", what.c_str(),
               current_case().c_str());
  const char* dump = std::getenv("SMAX_FUZZ_DUMP");
  if (dump != nullptr && std::strcmp(dump, "0") != 0 && dump_inputs()) dump_inputs()();
  std::fflush(stderr);
  __builtin_trap();
}

/// Whether a known finding may be skipped (SMAX_FUZZ_STRICT unset or 0); counts the skips per
/// pattern, which the replay driver prints.
inline bool strict() {
  static const bool s = [] {
    const char* e = std::getenv("SMAX_FUZZ_STRICT");
    return e != nullptr && std::strcmp(e, "0") != 0;
  }();
  return s;
}
struct skip_counter {
  const char* name;
  long long count = 0;
};
inline std::vector<skip_counter>& skip_counters() {
  static std::vector<skip_counter> v;
  return v;
}
inline bool known_skip(const char* pattern) {
  if (strict()) return false;
  for (auto& c : skip_counters())
    if (std::strcmp(c.name, pattern) == 0) {
      ++c.count;
      return true;
    }
  skip_counters().push_back({pattern, 1});
  return true;
}

/// What the executions did, for the replay driver's summary: calls whose results were compared
/// with the reference, calls that threw as they had to, and calls outside the checked domain.
struct outcome_counts {
  long long checked = 0, threw = 0, unchecked = 0;
};
inline outcome_counts& outcomes() {
  static outcome_counts c;
  return c;
}

template <class T>
std::string show(T v) {
  std::ostringstream s;
  s.precision(std::is_same<T, float>::value ? 9 : 21);
  s << v;
  return s.str();
}

// ---- bytes --------------------------------------------------------------------------------------

/// Reads the fuzzer's bytes front to back; past the end, a splitmix64 stream seeded by seed().
class reader {
 public:
  reader(const std::uint8_t* data, std::size_t size) : p_(data), end_(data + size) {}

  std::uint8_t u8() {
    if (p_ < end_) return *p_++;
    return static_cast<std::uint8_t>(next() >> 56);
  }
  std::uint16_t u16() { return static_cast<std::uint16_t>(u8() | (u8() << 8)); }
  std::uint32_t u32() { return static_cast<std::uint32_t>(u16()) | (std::uint32_t{u16()} << 16); }
  std::uint64_t u64() { return std::uint64_t{u32()} | (std::uint64_t{u32()} << 32); }
  bool exhausted() const { return p_ >= end_; }
  /// Seeds the stream used past the end (the header's seed bytes), so that the same input always
  /// describes the same case.
  void seed(std::uint64_t s) { state_ = s ^ 0x5eed5eed5eed5eedULL; }

 private:
  std::uint64_t next() {
    std::uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  const std::uint8_t* p_;
  const std::uint8_t* end_;
  std::uint64_t state_ = 0;
};

// ---- values -------------------------------------------------------------------------------------

/// How a stream of values is encoded in the bytes.
enum class encoding : std::uint8_t {
  palette,  // one byte per value: a special value or a small ordinary one (plus the offset)
  fine,     // two bytes: the palette byte and a fraction that spreads the ordinary values
  raw,      // sizeof(T) bytes of the value's bits: every float/double, NaN payloads included
};

/// The parameters of a stream of values: the encoding, an offset added to every ordinary value
/// (large offsets: cancellation and rounding of x - max), a scale, and how often the part past the
/// end of the input draws a special value.
struct value_spec {
  encoding enc = encoding::palette;
  ld offset = 0;
  ld scale = 1;
  std::uint8_t special_rate = 0;  // out of 256, for values drawn past the end of the input
};

/// Offsets for ordinary values: 0, the usual ones, those where float's ulp reaches the values'
/// spread, and near exp's overflow/underflow thresholds.
inline ld offset_of(std::uint8_t b) {
  static const ld table[16] = {0,    0,     0,   1e4L, -1e4L, 1e30L, -1e30L, 88,
                               -100, 709.5, 1e7, 3e38, -3e38, 1e-3L, 1e300L, 16777216};
  return table[b & 15];
}
inline ld scale_of(std::uint8_t b) {
  static const ld table[8] = {1, 1, 0.125L, 8, 64, 1e-20L, 1e20L, 1024};
  return table[b & 7];
}

/// The special values a palette byte < 24 selects: every kind of IEEE value smax must handle.
template <class T>
T special_value(std::uint8_t c) {
  using L = std::numeric_limits<T>;
  T nan_payload;  // a quiet NaN with a payload and the sign set
  if constexpr (sizeof(T) == 4) {
    const std::uint32_t b = 0xffc12345u;
    std::memcpy(&nan_payload, &b, sizeof b);
  } else {
    const std::uint64_t b = 0xfff8123456789abcULL;
    std::memcpy(&nan_payload, &b, sizeof b);
  }
  switch (c) {
    case 0:
      return T(0);
    case 1:
      return -T(0);
    case 2:
      return L::infinity();
    case 3:
      return -L::infinity();
    case 4:
      return L::quiet_NaN();
    case 5:
      return nan_payload;
    case 6:
      return L::max();
    case 7:
      return -L::max();
    case 8:
      return L::denorm_min();
    case 9:
      return -L::denorm_min();
    case 10:
      return L::min();
    case 11:
      return L::min() - L::denorm_min();  // the largest subnormal
    case 12:
      return L::max() / 2;
    case 13:
      return -L::max() * T(0.75);
    case 14:
      return T(1e30);
    case 15:
      return T(-1e30);
    case 16:
      return T(1);
    case 17:
      return T(-1);
    case 18:
      return L::lowest() / 3;
    case 19:
      return T(88.5);  // just past where float's exp would overflow
    case 20:
      return T(-104);  // float's exp underflow threshold
    case 21:
      return T(-746);  // double's
    case 22:
      return L::epsilon();
    default:
      return -L::infinity();  // masking is common: a second code for -inf
  }
}

/// One value of a stream. Palette codes >= 24 are ordinary: (code - 140) / 8 · scale + offset.
template <class T>
T next_value(reader& r, const value_spec& s) {
  const bool past_end = r.exhausted();
  if (s.enc == encoding::raw) {
    T v;
    if constexpr (sizeof(T) == 4) {
      const std::uint32_t b = r.u32();
      std::memcpy(&v, &b, sizeof b);
    } else {
      const std::uint64_t b = r.u64();
      std::memcpy(&v, &b, sizeof b);
    }
    return v;
  }
  std::uint8_t c = r.u8();
  if (past_end) {
    // Past the end: mostly ordinary values, specials at the requested rate.
    const std::uint8_t roll = r.u8();
    if (roll >= s.special_rate) c = static_cast<std::uint8_t>(24 + c % 232);
  }
  if (c < 24) return special_value<T>(c);
  ld v = (static_cast<ld>(c) - 140) / 8;
  if (s.enc == encoding::fine) v += static_cast<ld>(r.u8()) / 2048;
  return static_cast<T>(v * s.scale + s.offset);
}

inline value_spec read_value_spec(reader& r) {
  value_spec s;
  const std::uint8_t a = r.u8(), b = r.u8();
  s.enc = (a & 3) == 2 ? encoding::raw : (a & 3) == 1 ? encoding::fine : encoding::palette;
  s.offset = (a & 0x80) ? offset_of(static_cast<std::uint8_t>(a >> 2)) : 0;
  s.scale = scale_of(b);
  s.special_rate = static_cast<std::uint8_t>((b >> 3) * 8);
  return s;
}

inline const char* name(encoding e) {
  return e == encoding::raw ? "raw" : e == encoding::fine ? "fine" : "palette";
}

// ---- memory layouts -----------------------------------------------------------------------------

/// Where the elements of a rows x cols matrix live in a buffer: element (r, c) at
/// offset + r * rs + c * cs (rs, cs >= 0). Eigen's Map<..., Stride<outer, inner>> of a row-major
/// matrix has rs = outer, cs = inner; of a column-major one rs = inner, cs = outer.
struct layout {
  Index rows = 0, cols = 0;
  bool row_major = true;
  Index offset = 0, inner = 1, outer = 0;
  Index rs() const { return row_major ? outer : inner; }
  Index cs() const { return row_major ? inner : outer; }
  Index at(Index r, Index c) const { return offset + r * rs() + c * cs(); }
  /// One past the last element touched (offset when empty).
  Index end() const {
    if (rows == 0 || cols == 0) return offset;
    return at(rows - 1, cols - 1) + 1;
  }
  Index inner_size() const { return row_major ? cols : rows; }
  /// Whether distinct elements have distinct addresses (required of anything written).
  bool injective() const {
    if (rows <= 1 && cols <= 1) return true;
    if (rows <= 1) return cs() >= 1;
    if (cols <= 1) return rs() >= 1;
    const Index n_in = inner_size(), n_out = row_major ? rows : cols;
    return (inner >= 1 && outer >= inner * n_in) || (outer >= 1 && inner >= outer * n_out);
  }
  std::string describe() const {
    std::ostringstream s;
    s << rows << "x" << cols << (row_major ? " row-major" : " col-major") << " @" << offset
      << " inner " << inner << " outer " << outer;
    return s.str();
  }
};

/// A layout from two bytes: a start offset (unaligned), the inner stride and the padding of the
/// outer stride; `reads_only` allows strides that make elements share memory (0 strides), which
/// only an input may have.
inline layout read_layout(reader& r, Index rows, Index cols, bool row_major, bool reads_only) {
  layout l;
  l.rows = rows;
  l.cols = cols;
  l.row_major = row_major;
  const std::uint8_t a = r.u8(), b = r.u8();
  l.offset = a & 15;
  l.inner = 1 + ((a >> 4) & 3) * ((a >> 6) & 1);  // mostly 1; 2..4 when bit 6 is set
  const Index pad = (b & 7) == 7 ? 13 : (b & 7);
  l.outer = l.inner * l.inner_size() + pad;
  if (reads_only && (b & 0xc0) == 0xc0) {
    // Aliased input rows or classes: strides of 0 or a short outer stride.
    const int how = (b >> 3) & 3;
    if (how == 0) l.outer = 0;
    if (how == 1) l.inner = 0;
    if (how == 2) l.outer = 1;
    if (how == 3) l.inner = 0, l.outer = 0;
  }
  return l;
}

/// A heap buffer of exactly the size needed (so AddressSanitizer sees any access past it), filled
/// with a sentinel NaN everywhere the matrix does not put a value.
template <class T>
class buffer {
 public:
  explicit buffer(Index size) : n_(size), p_(new T[static_cast<std::size_t>(size > 0 ? size : 1)]) {
    for (Index i = 0; i < n_; ++i) p_[i] = sentinel();
  }
  T* data() { return p_.get(); }
  const T* data() const { return p_.get(); }
  Index size() const { return n_; }
  T& operator[](Index i) { return p_[i]; }
  const T& operator[](Index i) const { return p_[i]; }

  static T sentinel() {
    T v;
    if constexpr (std::is_same<T, float>::value) {
      const std::uint32_t b = 0x7fa5a5a5u;  // a quiet NaN with a recognisable payload
      std::memcpy(&v, &b, sizeof b);
    } else if constexpr (std::is_same<T, double>::value) {
      const std::uint64_t b = 0x7ffa5a5a5a5a5a5aULL;
      std::memcpy(&v, &b, sizeof b);
    } else {
      v = static_cast<T>(0x5a5a5a5a);  // labels
    }
    return v;
  }

  std::vector<unsigned char> snapshot() const {
    std::vector<unsigned char> s(static_cast<std::size_t>(n_) * sizeof(T));
    if (n_ > 0) std::memcpy(s.data(), p_.get(), s.size());
    return s;
  }

 private:
  Index n_;
  std::unique_ptr<T[]> p_;
};

/// Verifies that a buffer holds `before` except at the elements `written(i)` allows.
template <class T, class Written>
void check_untouched(const char* what, const buffer<T>& b, const std::vector<unsigned char>& before,
                     Written&& written) {
  for (Index i = 0; i < b.size(); ++i) {
    if (written(i)) continue;
    if (std::memcmp(before.data() + static_cast<std::size_t>(i) * sizeof(T), b.data() + i,
                    sizeof(T)) != 0)
      finding(std::string(what) + ": element " + std::to_string(i) +
              " of the buffer changed though nothing may write it (now " + show(b[i]) + ")");
  }
}

/// The set of buffer indices a layout covers, as a mask over a buffer of `size`.
inline std::vector<bool> mask_of(const layout& l, Index size) {
  std::vector<bool> m(static_cast<std::size_t>(size), false);
  for (Index r = 0; r < l.rows; ++r)
    for (Index c = 0; c < l.cols; ++c) m[static_cast<std::size_t>(l.at(r, c))] = true;
  return m;
}

/// The byte span [first, last] of a layout's elements as smax computes it for its aliasing checks:
/// from the first to the last element of the logical (row = distribution) view. Empty when the
/// matrix is.
struct span {
  Index first = -1, last = -1;
  bool empty() const { return first < 0; }
};
inline span span_of(const layout& l) {
  if (l.rows == 0 || l.cols == 0) return {};
  return {l.offset, l.at(l.rows - 1, l.cols - 1)};
}
inline bool overlap(span a, span b) {
  return !a.empty() && !b.empty() && a.first <= b.last && b.first <= a.last;
}

// ---- comparisons --------------------------------------------------------------------------------

/// |got - exact|, where NaN must match NaN, an infinity itself, and an exact value beyond T's
/// range the infinity it rounds to (tests/reference.hpp's abs_error); any other disagreement is
/// infinite.
template <class T>
ld abs_error(ld got, ld exact) {
  if (std::isnan(exact)) return std::isnan(got) ? 0 : std::numeric_limits<ld>::infinity();
  const T rounded = static_cast<T>(exact);
  if (std::isinf(rounded))
    return got == static_cast<ld>(rounded) ? 0 : std::numeric_limits<ld>::infinity();
  if (!std::isfinite(got)) return std::numeric_limits<ld>::infinity();
  return std::fabs(got - exact);
}

}  // namespace smax_fuzz
