// shim.cpp: the implementation of shim.h. Each entry point checks the
// calling thread, runs the MLX call inside try/catch and turns any exception
// into an error code plus a thread-local message.
#include "shim.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <stdexcept>
#include <string>
#include <vector>

#include <mlx/mlx.h>
#include <mlx/compile.h>

namespace mx = mlx::core;

// Implemented in Go (callback.go).
extern "C" int fgtGoCall(uintptr_t handle, fgt_array* inputs, int n, fgt_vec* outs);

namespace {

thread_local std::string t_error;
thread_local bool t_owner = false;
std::atomic<bool> g_claimed{false};

inline mx::array& A(fgt_array a) { return *reinterpret_cast<mx::array*>(a); }
inline fgt_array wrap(mx::array a) { return reinterpret_cast<fgt_array>(new mx::array(std::move(a))); }

int fail(const char* msg) {
  t_error = msg;
  return 1;
}

constexpr const char* kNotOwner =
    "mlx: called from an OS thread that does not own MLX; run MLX work inside mlx.Do";

#define GUARD(...)                                       \
  if (!t_owner) return fail(kNotOwner);                  \
  try {                                                  \
    __VA_ARGS__;                                         \
    return 0;                                            \
  } catch (const std::exception& e) {                    \
    return fail(e.what());                               \
  } catch (...) {                                        \
    return fail("mlx: unknown C++ exception");           \
  }

mx::Dtype to_dtype(int code) {
  switch (code) {
    case FGT_BOOL: return mx::bool_;
    case FGT_UINT8: return mx::uint8;
    case FGT_UINT16: return mx::uint16;
    case FGT_UINT32: return mx::uint32;
    case FGT_UINT64: return mx::uint64;
    case FGT_INT8: return mx::int8;
    case FGT_INT16: return mx::int16;
    case FGT_INT32: return mx::int32;
    case FGT_INT64: return mx::int64;
    case FGT_FLOAT16: return mx::float16;
    case FGT_BFLOAT16: return mx::bfloat16;
    case FGT_FLOAT32: return mx::float32;
    case FGT_FLOAT64: return mx::float64;
    case FGT_COMPLEX64: return mx::complex64;
  }
  throw std::invalid_argument("mlx: unknown dtype code " + std::to_string(code));
}

int from_dtype(mx::Dtype d) {
  switch (d.val()) {
    case mx::Dtype::Val::bool_: return FGT_BOOL;
    case mx::Dtype::Val::uint8: return FGT_UINT8;
    case mx::Dtype::Val::uint16: return FGT_UINT16;
    case mx::Dtype::Val::uint32: return FGT_UINT32;
    case mx::Dtype::Val::uint64: return FGT_UINT64;
    case mx::Dtype::Val::int8: return FGT_INT8;
    case mx::Dtype::Val::int16: return FGT_INT16;
    case mx::Dtype::Val::int32: return FGT_INT32;
    case mx::Dtype::Val::int64: return FGT_INT64;
    case mx::Dtype::Val::float16: return FGT_FLOAT16;
    case mx::Dtype::Val::bfloat16: return FGT_BFLOAT16;
    case mx::Dtype::Val::float32: return FGT_FLOAT32;
    case mx::Dtype::Val::float64: return FGT_FLOAT64;
    case mx::Dtype::Val::complex64: return FGT_COMPLEX64;
  }
  return -1;
}

mx::Shape to_shape(const int* s, int n) { return mx::Shape(s, s + n); }
std::vector<int> to_ints(const int* s, int n) { return std::vector<int>(s, s + n); }

std::vector<mx::array> to_vec(const fgt_array* as, int n) {
  std::vector<mx::array> v;
  v.reserve(n);
  for (int i = 0; i < n; i++) v.push_back(A(as[i]));
  return v;
}

fgt_vec from_vec(std::vector<mx::array> v) {
  fgt_vec out;
  out.n = static_cast<int>(v.size());
  out.data = static_cast<fgt_array*>(std::malloc(sizeof(fgt_array) * (v.empty() ? 1 : v.size())));
  for (size_t i = 0; i < v.size(); i++) out.data[i] = wrap(std::move(v[i]));
  return out;
}

std::optional<mx::array> opt(fgt_array a) {
  if (a == nullptr) return std::nullopt;
  return A(a);
}

// Calls the Go closure behind handle on inputs and returns its outputs. A Go
// error (or recovered panic) becomes a C++ exception so that MLX unwinds
// cleanly back to the shim entry point, which reports it.
std::vector<mx::array> call_go(uintptr_t handle, const std::vector<mx::array>& inputs) {
  std::vector<fgt_array> in(inputs.size());
  for (size_t i = 0; i < inputs.size(); i++) in[i] = wrap(inputs[i]);
  fgt_vec outs{nullptr, 0};
  int rc = fgtGoCall(handle, in.data(), static_cast<int>(in.size()), &outs);
  if (rc != 0) {
    std::string msg = t_error;
    throw std::runtime_error(msg.empty() ? "mlx: Go callback failed" : msg);
  }
  std::vector<mx::array> res;
  res.reserve(outs.n);
  for (int i = 0; i < outs.n; i++) res.push_back(A(outs.data[i]));
  fgt_vec_free(outs);
  return res;
}

char* blob(const std::vector<std::string>& items, size_t* len) {
  size_t n = 0;
  for (auto& s : items) n += s.size() + 1;
  char* b = static_cast<char*>(std::malloc(n == 0 ? 1 : n));
  size_t off = 0;
  for (auto& s : items) {
    std::memcpy(b + off, s.data(), s.size());
    off += s.size();
    b[off++] = '\0';
  }
  *len = n;
  return b;
}

std::vector<std::string> unblob(const char* b, size_t len) {
  std::vector<std::string> out;
  size_t start = 0;
  for (size_t i = 0; i < len; i++) {
    if (b[i] == '\0') {
      out.emplace_back(b + start, i - start);
      start = i + 1;
    }
  }
  return out;
}

// return_tensors hands a loaded name → array map back as arrays and their
// NUL-separated names, in the same order.
template <class Map>
void return_tensors(const Map& tensors, fgt_vec* arrays, char** names, size_t* names_len) {
  std::vector<std::string> ns;
  std::vector<mx::array> as;
  for (auto& [k, v] : tensors) {
    ns.push_back(k);
    as.push_back(v);
  }
  *arrays = from_vec(std::move(as));
  *names = blob(ns, names_len);
}

}  // namespace

struct fgt_vag_s {
  mx::ValueAndGradFn fn;
};
struct fgt_compiled_s {
  std::function<std::vector<mx::array>(const std::vector<mx::array>&)> fn;
};

extern "C" {

const char* fgt_last_error(void) { return t_error.c_str(); }

void fgt_set_error(const char* msg) { t_error = msg; }

int fgt_claim_thread(void) {
  if (t_owner) return 0;
  bool expected = false;
  if (!g_claimed.compare_exchange_strong(expected, true)) {
    return fail("mlx: another OS thread already owns MLX");
  }
  t_owner = true;
  return 0;
}

int fgt_is_owner(void) { return t_owner ? 1 : 0; }

void fgt_release_thread(void) {
  if (t_owner) {
    t_owner = false;
    g_claimed.store(false);
  }
}

int fgt_array_from_data(const void* data, const int* shape, int ndim, int dtype, fgt_array* out) {
  GUARD({
    auto dt = to_dtype(dtype);
    auto sh = to_shape(shape, ndim);
    // The array constructor copies the Go bytes: Go memory is not retained.
    switch (dtype) {
      case FGT_BOOL: *out = wrap(mx::array(static_cast<const bool*>(data), sh, dt)); break;
      case FGT_UINT8: *out = wrap(mx::array(static_cast<const uint8_t*>(data), sh, dt)); break;
      case FGT_UINT16: *out = wrap(mx::array(static_cast<const uint16_t*>(data), sh, dt)); break;
      case FGT_UINT32: *out = wrap(mx::array(static_cast<const uint32_t*>(data), sh, dt)); break;
      case FGT_UINT64: *out = wrap(mx::array(static_cast<const uint64_t*>(data), sh, dt)); break;
      case FGT_INT8: *out = wrap(mx::array(static_cast<const int8_t*>(data), sh, dt)); break;
      case FGT_INT16: *out = wrap(mx::array(static_cast<const int16_t*>(data), sh, dt)); break;
      case FGT_INT32: *out = wrap(mx::array(static_cast<const int32_t*>(data), sh, dt)); break;
      case FGT_INT64: *out = wrap(mx::array(static_cast<const int64_t*>(data), sh, dt)); break;
      case FGT_FLOAT16: *out = wrap(mx::array(static_cast<const mx::float16_t*>(data), sh, dt)); break;
      case FGT_BFLOAT16: *out = wrap(mx::array(static_cast<const mx::bfloat16_t*>(data), sh, dt)); break;
      case FGT_FLOAT32: *out = wrap(mx::array(static_cast<const float*>(data), sh, dt)); break;
      case FGT_FLOAT64: *out = wrap(mx::array(static_cast<const double*>(data), sh, dt)); break;
      default: throw std::invalid_argument("mlx: cannot build an array of dtype code " + std::to_string(dtype));
    }
  });
}

int fgt_array_scalar(double v, int dtype, fgt_array* out) {
  GUARD({
    // Integers go through int64 and float64 stays double, so that values
    // beyond float32's 24-bit mantissa (token ids, counts) stay exact.
    auto dt = to_dtype(dtype);
    if (mx::issubdtype(dt, mx::integer)) {
      *out = wrap(mx::astype(mx::array(static_cast<int64_t>(v)), dt));
    } else if (dt == mx::float64) {
      *out = wrap(mx::array(v));
    } else {
      *out = wrap(mx::astype(mx::array(static_cast<float>(v)), dt));
    }
  });
}

void fgt_array_free(fgt_array a) { delete reinterpret_cast<mx::array*>(a); }

int fgt_array_copy(fgt_array a, fgt_array* out) {
  *out = wrap(A(a));
  return 0;
}

int fgt_array_ndim(fgt_array a) { return static_cast<int>(A(a).ndim()); }

void fgt_array_shape(fgt_array a, int* shape) {
  auto& s = A(a).shape();
  for (size_t i = 0; i < s.size(); i++) shape[i] = s[i];
}

int fgt_array_shape_n(fgt_array a, int* shape, int cap) {
  auto& s = A(a).shape();
  for (size_t i = 0; i < s.size() && static_cast<int>(i) < cap; i++) shape[i] = s[i];
  return static_cast<int>(s.size());
}

int fgt_array_dtype(fgt_array a) { return from_dtype(A(a).dtype()); }
size_t fgt_array_size(fgt_array a) { return A(a).size(); }
size_t fgt_array_nbytes(fgt_array a) { return A(a).nbytes(); }

int fgt_array_read(fgt_array a, void* dst, size_t nbytes) {
  GUARD({
    // Wait for this array alone. Building a new op on it (a copy or a
    // cast) would queue behind everything already submitted to the stream,
    // e.g. the next decode step, and serialise the pipeline.
    mx::array c = A(a);
    c.eval();
    if (!c.flags().row_contiguous) {
      c = mx::contiguous(c);
      c.eval();
    }
    if (c.nbytes() != nbytes) throw std::invalid_argument("mlx: read buffer size mismatch");
    if (nbytes > 0) std::memcpy(dst, c.data<void>(), nbytes);
  });
}

void fgt_vec_free(fgt_vec v) {
  for (int i = 0; i < v.n; i++) fgt_array_free(v.data[i]);
  std::free(v.data);
}

void fgt_vec_release(fgt_vec v) { std::free(v.data); }

int fgt_unary(int op, fgt_array a, fgt_array* out) {
  GUARD({
    auto& x = A(a);
    switch (static_cast<fgt_unary_opcode>(op)) {
      case FGT_OP_SQRT: *out = wrap(mx::sqrt(x)); break;
      case FGT_OP_RSQRT: *out = wrap(mx::rsqrt(x)); break;
      case FGT_OP_EXP: *out = wrap(mx::exp(x)); break;
      case FGT_OP_LOG: *out = wrap(mx::log(x)); break;
      case FGT_OP_NEGATIVE: *out = wrap(mx::negative(x)); break;
      case FGT_OP_ABS: *out = wrap(mx::abs(x)); break;
      case FGT_OP_SIGMOID: *out = wrap(mx::sigmoid(x)); break;
      case FGT_OP_STOP_GRADIENT: *out = wrap(mx::stop_gradient(x)); break;
      case FGT_OP_SQUARE: *out = wrap(mx::square(x)); break;
      case FGT_OP_SIN: *out = wrap(mx::sin(x)); break;
      case FGT_OP_COS: *out = wrap(mx::cos(x)); break;
      case FGT_OP_TANH: *out = wrap(mx::tanh(x)); break;
      case FGT_OP_FLOOR: *out = wrap(mx::floor(x)); break;
      case FGT_OP_LOGICAL_NOT: *out = wrap(mx::logical_not(x)); break;
      case FGT_OP_ERF: *out = wrap(mx::erf(x)); break;
      case FGT_OP_SILU: *out = wrap(mx::multiply(x, mx::sigmoid(x))); break;
      case FGT_OP_LOG1P: *out = wrap(mx::log1p(x)); break;
      case FGT_OP_ISNAN: *out = wrap(mx::isnan(x)); break;
      case FGT_OP_ISINF: *out = wrap(mx::isinf(x)); break;
      case FGT_OP_CONTIGUOUS: *out = wrap(mx::contiguous(x)); break;
      default: throw std::invalid_argument("mlx: unknown unary op " + std::to_string(op));
    }
  });
}

int fgt_binary(int op, fgt_array a, fgt_array b, fgt_array* out) {
  GUARD({
    auto& x = A(a);
    auto& y = A(b);
    switch (static_cast<fgt_binary_opcode>(op)) {
      case FGT_OP_ADD: *out = wrap(mx::add(x, y)); break;
      case FGT_OP_SUBTRACT: *out = wrap(mx::subtract(x, y)); break;
      case FGT_OP_MULTIPLY: *out = wrap(mx::multiply(x, y)); break;
      case FGT_OP_DIVIDE: *out = wrap(mx::divide(x, y)); break;
      case FGT_OP_POWER: *out = wrap(mx::power(x, y)); break;
      case FGT_OP_MAXIMUM: *out = wrap(mx::maximum(x, y)); break;
      case FGT_OP_MINIMUM: *out = wrap(mx::minimum(x, y)); break;
      case FGT_OP_MATMUL: *out = wrap(mx::matmul(x, y)); break;
      case FGT_OP_EQUAL: *out = wrap(mx::equal(x, y)); break;
      case FGT_OP_NOT_EQUAL: *out = wrap(mx::not_equal(x, y)); break;
      case FGT_OP_LESS: *out = wrap(mx::less(x, y)); break;
      case FGT_OP_LESS_EQUAL: *out = wrap(mx::less_equal(x, y)); break;
      case FGT_OP_GREATER: *out = wrap(mx::greater(x, y)); break;
      case FGT_OP_GREATER_EQUAL: *out = wrap(mx::greater_equal(x, y)); break;
      case FGT_OP_LOGICAL_AND: *out = wrap(mx::logical_and(x, y)); break;
      case FGT_OP_LOGICAL_OR: *out = wrap(mx::logical_or(x, y)); break;
      case FGT_OP_FLOOR_DIVIDE: *out = wrap(mx::floor_divide(x, y)); break;
      case FGT_OP_REMAINDER: *out = wrap(mx::remainder(x, y)); break;
      default: throw std::invalid_argument("mlx: unknown binary op " + std::to_string(op));
    }
  });
}

int fgt_reduce(int op, fgt_array a, const int* axes, int naxes, int all, int keepdims, fgt_array* out) {
  GUARD({
    auto& x = A(a);
    std::vector<int> ax = to_ints(axes, naxes);
    bool kd = keepdims != 0;
    if (all) {
      ax.resize(x.ndim());
      for (size_t i = 0; i < x.ndim(); i++) ax[i] = static_cast<int>(i);
    }
    switch (static_cast<fgt_reduce_opcode>(op)) {
      case FGT_OP_SUM: *out = wrap(mx::sum(x, ax, kd)); break;
      case FGT_OP_MEAN: *out = wrap(mx::mean(x, ax, kd)); break;
      case FGT_OP_MAX: *out = wrap(mx::max(x, ax, kd)); break;
      case FGT_OP_MIN: *out = wrap(mx::min(x, ax, kd)); break;
      case FGT_OP_LOGSUMEXP: *out = wrap(mx::logsumexp(x, ax, kd)); break;
      case FGT_OP_ARGMAX:
        if (all) *out = wrap(mx::argmax(x, kd));
        else if (ax.size() == 1) *out = wrap(mx::argmax(x, ax[0], kd));
        else throw std::invalid_argument("[argmax] takes one axis or all axes");
        break;
      case FGT_OP_ARGMIN:
        if (all) *out = wrap(mx::argmin(x, kd));
        else if (ax.size() == 1) *out = wrap(mx::argmin(x, ax[0], kd));
        else throw std::invalid_argument("[argmin] takes one axis or all axes");
        break;
      case FGT_OP_PROD: *out = wrap(mx::prod(x, ax, kd)); break;
      case FGT_OP_ALL: *out = wrap(mx::all(x, ax, kd)); break;
      case FGT_OP_ANY: *out = wrap(mx::any(x, ax, kd)); break;
      default: throw std::invalid_argument("mlx: unknown reduce op " + std::to_string(op));
    }
  });
}

int fgt_axis_op(int op, fgt_array a, int axis, fgt_array* out) {
  GUARD({
    auto& x = A(a);
    switch (static_cast<fgt_axis_opcode>(op)) {
      case FGT_OP_SORT: *out = wrap(mx::sort(x, axis)); break;
      case FGT_OP_ARGSORT: *out = wrap(mx::argsort(x, axis)); break;
      case FGT_OP_LOG_SOFTMAX: *out = wrap(mx::subtract(x, mx::logsumexp(x, std::vector<int>{axis}, true))); break;
      default: throw std::invalid_argument("mlx: unknown axis op " + std::to_string(op));
    }
  });
}

int fgt_where(fgt_array c, fgt_array a, fgt_array b, fgt_array* out) {
  GUARD({ *out = wrap(mx::where(A(c), A(a), A(b))); });
}

int fgt_clip(fgt_array a, fgt_array lo, fgt_array hi, fgt_array* out) {
  GUARD({ *out = wrap(mx::clip(A(a), opt(lo), opt(hi))); });
}

int fgt_softmax(fgt_array a, const int* axes, int naxes, int precise, fgt_array* out) {
  GUARD({ *out = wrap(mx::softmax(A(a), to_ints(axes, naxes), precise != 0)); });
}

int fgt_linear(fgt_array x, fgt_array w, fgt_array bias, fgt_array* out) {
  GUARD({
    auto y = mx::matmul(A(x), mx::transpose(A(w)));
    if (bias != nullptr) y = mx::add(y, A(bias));
    *out = wrap(std::move(y));
  });
}

int fgt_addmm(fgt_array c, fgt_array a, fgt_array b, float alpha, float beta, fgt_array* out) {
  GUARD({ *out = wrap(mx::addmm(A(c), A(a), A(b), alpha, beta)); });
}

int fgt_astype(fgt_array a, int dtype, fgt_array* out) {
  GUARD({ *out = wrap(mx::astype(A(a), to_dtype(dtype))); });
}

int fgt_reshape(fgt_array a, const int* shape, int ndim, fgt_array* out) {
  GUARD({ *out = wrap(mx::reshape(A(a), to_shape(shape, ndim))); });
}

int fgt_transpose(fgt_array a, const int* perm, int nperm, fgt_array* out) {
  GUARD({
    if (nperm == 0) *out = wrap(mx::transpose(A(a)));
    else *out = wrap(mx::transpose(A(a), to_ints(perm, nperm)));
  });
}

int fgt_swapaxes(fgt_array a, int ax1, int ax2, fgt_array* out) {
  GUARD({ *out = wrap(mx::swapaxes(A(a), ax1, ax2)); });
}

int fgt_expand_dims(fgt_array a, const int* axes, int naxes, fgt_array* out) {
  GUARD({ *out = wrap(mx::expand_dims(A(a), to_ints(axes, naxes))); });
}

int fgt_squeeze(fgt_array a, const int* axes, int naxes, fgt_array* out) {
  GUARD({
    if (naxes == 0) *out = wrap(mx::squeeze(A(a)));
    else *out = wrap(mx::squeeze(A(a), to_ints(axes, naxes)));
  });
}

int fgt_broadcast_to(fgt_array a, const int* shape, int ndim, fgt_array* out) {
  GUARD({ *out = wrap(mx::broadcast_to(A(a), to_shape(shape, ndim))); });
}

int fgt_concatenate(const fgt_array* as, int n, int axis, fgt_array* out) {
  GUARD({ *out = wrap(mx::concatenate(to_vec(as, n), axis)); });
}

int fgt_stack(const fgt_array* as, int n, int axis, fgt_array* out) {
  GUARD({ *out = wrap(mx::stack(to_vec(as, n), axis)); });
}

int fgt_split_sections(fgt_array a, int nsections, int axis, fgt_vec* out) {
  GUARD({ *out = from_vec(mx::split(A(a), nsections, axis)); });
}

int fgt_split_indices(fgt_array a, const int* indices, int nidx, int axis, fgt_vec* out) {
  GUARD({ *out = from_vec(mx::split(A(a), to_shape(indices, nidx), axis)); });
}

int fgt_slice(fgt_array a, const int* start, const int* stop, const int* strides, int n, fgt_array* out) {
  GUARD({ *out = wrap(mx::slice(A(a), to_shape(start, n), to_shape(stop, n), to_shape(strides, n))); });
}

int fgt_slice_update(fgt_array src, fgt_array upd, const int* start, const int* stop, const int* strides, int n, fgt_array* out) {
  GUARD({
    *out = wrap(mx::slice_update(A(src), A(upd), to_shape(start, n), to_shape(stop, n), to_shape(strides, n)));
  });
}

int fgt_take(fgt_array a, fgt_array idx, int axis, int has_axis, fgt_array* out) {
  GUARD({
    if (has_axis) *out = wrap(mx::take(A(a), A(idx), axis));
    else *out = wrap(mx::take(A(a), A(idx)));
  });
}

int fgt_take_along_axis(fgt_array a, fgt_array idx, int axis, fgt_array* out) {
  GUARD({ *out = wrap(mx::take_along_axis(A(a), A(idx), axis)); });
}

int fgt_put_along_axis(fgt_array a, fgt_array idx, fgt_array vals, int axis, fgt_array* out) {
  GUARD({ *out = wrap(mx::put_along_axis(A(a), A(idx), A(vals), axis)); });
}

int fgt_argpartition(fgt_array a, int kth, int axis, fgt_array* out) {
  GUARD({ *out = wrap(mx::argpartition(A(a), kth, axis)); });
}

int fgt_cumsum(fgt_array a, int axis, int reverse, int inclusive, fgt_array* out) {
  GUARD({ *out = wrap(mx::cumsum(A(a), axis, reverse != 0, inclusive != 0)); });
}

int fgt_arange(double start, double stop, double step, int dtype, fgt_array* out) {
  GUARD({ *out = wrap(mx::arange(start, stop, step, to_dtype(dtype))); });
}

int fgt_full(const int* shape, int ndim, fgt_array val, int dtype, fgt_array* out) {
  GUARD({ *out = wrap(mx::full(to_shape(shape, ndim), A(val), to_dtype(dtype))); });
}

int fgt_tri(fgt_array a, int k, int upper, fgt_array* out) {
  GUARD({
    if (upper) *out = wrap(mx::triu(A(a), k));
    else *out = wrap(mx::tril(A(a), k));
  });
}

int fgt_rms_norm(fgt_array x, fgt_array w, float eps, fgt_array* out) {
  GUARD({ *out = wrap(mx::fast::rms_norm(A(x), opt(w), eps)); });
}

int fgt_rope(fgt_array x, int dims, int traditional, float base, int has_base, float scale, int offset, fgt_array offset_arr, fgt_array freqs, fgt_array* out) {
  GUARD({
    std::optional<float> b = has_base ? std::make_optional(base) : std::nullopt;
    if (offset_arr != nullptr) {
      *out = wrap(mx::fast::rope(A(x), dims, traditional != 0, b, scale, A(offset_arr), opt(freqs)));
    } else {
      *out = wrap(mx::fast::rope(A(x), dims, traditional != 0, b, scale, offset, opt(freqs)));
    }
  });
}

int fgt_sdpa(fgt_array q, fgt_array k, fgt_array v, float scale, const char* mask_mode, fgt_array mask, fgt_array* out) {
  GUARD({
    *out = wrap(mx::fast::scaled_dot_product_attention(A(q), A(k), A(v), scale, std::string(mask_mode), opt(mask)));
  });
}

int fgt_cross_entropy(fgt_array logits, fgt_array targets, fgt_array* out) {
  GUARD({ *out = wrap(mx::fast::cross_entropy(A(logits), A(targets))); });
}

int fgt_quantize(fgt_array w, int group_size, int bits, fgt_vec* out) {
  GUARD({ *out = from_vec(mx::quantize(A(w), group_size, bits)); });
}

int fgt_dequantize(fgt_array w, fgt_array scales, fgt_array biases, int group_size, int bits, fgt_array* out) {
  GUARD({ *out = wrap(mx::dequantize(A(w), A(scales), opt(biases), group_size, bits)); });
}

int fgt_quantized_matmul(fgt_array x, fgt_array w, fgt_array scales, fgt_array biases, int transpose, int group_size, int bits, fgt_array* out) {
  GUARD({
    *out = wrap(mx::quantized_matmul(A(x), A(w), A(scales), opt(biases), transpose != 0, group_size, bits));
  });
}

int fgt_random_key(uint64_t seed, fgt_array* out) { GUARD({ *out = wrap(mx::random::key(seed)); }); }

int fgt_random_seed(uint64_t seed) { GUARD({ mx::random::seed(seed); }); }

int fgt_random_split(fgt_array key, int num, fgt_array* out) {
  GUARD({ *out = wrap(mx::random::split(A(key), num)); });
}

int fgt_random_uniform(fgt_array lo, fgt_array hi, const int* shape, int ndim, int dtype, fgt_array key, fgt_array* out) {
  GUARD({ *out = wrap(mx::random::uniform(A(lo), A(hi), to_shape(shape, ndim), to_dtype(dtype), opt(key))); });
}

int fgt_random_normal(const int* shape, int ndim, int dtype, float loc, float scale, fgt_array key, fgt_array* out) {
  GUARD({ *out = wrap(mx::random::normal(to_shape(shape, ndim), to_dtype(dtype), loc, scale, opt(key))); });
}

int fgt_random_bernoulli(fgt_array p, const int* shape, int ndim, fgt_array key, fgt_array* out) {
  GUARD({ *out = wrap(mx::random::bernoulli(A(p), to_shape(shape, ndim), opt(key))); });
}

int fgt_random_categorical(fgt_array logits, int axis, fgt_array key, fgt_array* out) {
  GUARD({ *out = wrap(mx::random::categorical(A(logits), axis, opt(key))); });
}

int fgt_eval(const fgt_array* as, int n) { GUARD({ mx::eval(to_vec(as, n)); }); }

int fgt_async_eval(const fgt_array* as, int n) { GUARD({ mx::async_eval(to_vec(as, n)); }); }

int fgt_vag_new(uintptr_t handle, const int* argnums, int nargnums, fgt_vag* out) {
  GUARD({
    auto fn = [handle](const std::vector<mx::array>& in) { return call_go(handle, in); };
    *out = new fgt_vag_s{mx::value_and_grad(fn, to_ints(argnums, nargnums))};
  });
}

void fgt_vag_free(fgt_vag f) { delete f; }

int fgt_vag_call(fgt_vag f, const fgt_array* inputs, int n, fgt_vec* values, fgt_vec* grads) {
  GUARD({
    auto [vals, gs] = f->fn(to_vec(inputs, n));
    *values = from_vec(std::move(vals));
    *grads = from_vec(std::move(gs));
  });
}

int fgt_vjp(uintptr_t handle, const fgt_array* primals, int np, const fgt_array* cotangents, int nc, fgt_vec* outs, fgt_vec* vjps) {
  GUARD({
    auto fn = [handle](const std::vector<mx::array>& in) { return call_go(handle, in); };
    auto [o, v] = mx::vjp(fn, to_vec(primals, np), to_vec(cotangents, nc));
    *outs = from_vec(std::move(o));
    *vjps = from_vec(std::move(v));
  });
}

int fgt_compile_new(uintptr_t handle, int shapeless, fgt_compiled* out) {
  GUARD({
    auto fn = [handle](const std::vector<mx::array>& in) { return call_go(handle, in); };
    *out = new fgt_compiled_s{mx::compile(fn, shapeless != 0)};
  });
}

void fgt_compiled_free(fgt_compiled f) { delete f; }

int fgt_compiled_call(fgt_compiled f, const fgt_array* inputs, int n, fgt_vec* outs) {
  GUARD({ *outs = from_vec(f->fn(to_vec(inputs, n))); });
}

// Gradient checkpointing: the function's intermediates are not kept for the
// backward pass; its vjp recomputes the forward instead.
int fgt_checkpoint_call(uintptr_t handle, const fgt_array* inputs, int n, fgt_vec* outs) {
  GUARD({
    auto fn = [handle](const std::vector<mx::array>& in) { return call_go(handle, in); };
    auto ckpt = mx::custom_vjp(
        fn, [fn](const std::vector<mx::array>& primals, const std::vector<mx::array>& cotangents,
                 const std::vector<mx::array>&) {
          auto [o, v] = mx::vjp(fn, primals, cotangents);
          return v;
        });
    *outs = from_vec(ckpt(to_vec(inputs, n)));
  });
}

// A function with its own vjp: fwd computes the outputs; vjp receives
// primals, cotangents and outputs, concatenated, and returns one cotangent
// per primal.
int fgt_custom_vjp_call(uintptr_t fwd, uintptr_t vjp, const fgt_array* inputs, int n, fgt_vec* outs) {
  GUARD({
    auto fn = [fwd](const std::vector<mx::array>& in) { return call_go(fwd, in); };
    auto custom = mx::custom_vjp(
        fn, [vjp](const std::vector<mx::array>& primals, const std::vector<mx::array>& cotangents,
                  const std::vector<mx::array>& outputs) {
          std::vector<mx::array> all(primals);
          all.insert(all.end(), cotangents.begin(), cotangents.end());
          all.insert(all.end(), outputs.begin(), outputs.end());
          auto res = call_go(vjp, all);
          if (res.size() != primals.size()) {
            throw std::runtime_error("custom vjp returned " + std::to_string(res.size()) + " cotangents for " +
                                     std::to_string(primals.size()) + " primals");
          }
          return res;
        });
    *outs = from_vec(custom(to_vec(inputs, n)));
  });
}

int fgt_load_safetensors(const char* path, fgt_vec* arrays, char** names, size_t* names_len, char** meta, size_t* meta_len) {
  GUARD({
    auto [tensors, md] = mx::load_safetensors(std::string(path));
    return_tensors(tensors, arrays, names, names_len);
    std::vector<std::string> kv;
    for (auto& [k, v] : md) {
      kv.push_back(k);
      kv.push_back(v);
    }
    *meta = blob(kv, meta_len);
  });
}

int fgt_save_safetensors(const char* path, const fgt_array* as, const char* names, int n, const char* meta, size_t meta_len) {
  GUARD({
    size_t nlen = 0;
    {
      int seen = 0;
      while (seen < n) {
        if (names[nlen] == '\0') seen++;
        nlen++;
      }
    }
    auto ns = unblob(names, nlen);
    std::unordered_map<std::string, mx::array> m;
    for (int i = 0; i < n; i++) m.insert({ns[i], A(as[i])});
    auto kv = unblob(meta, meta_len);
    std::unordered_map<std::string, std::string> md;
    for (size_t i = 0; i + 1 < kv.size(); i += 2) md[kv[i]] = kv[i + 1];
    mx::save_safetensors(std::string(path), m, md);
  });
}

int fgt_load_gguf(const char* path, fgt_vec* arrays, char** names, size_t* names_len, char** meta, size_t* meta_len, fgt_vec* meta_arrays, char** meta_array_names, size_t* meta_array_names_len) {
  GUARD({
    auto [tensors, md] = mx::load_gguf(std::string(path));
    return_tensors(tensors, arrays, names, names_len);
    // String metadata as key, value pairs; string lists joined by '\n' are
    // not representable without loss, so they are returned with a "\x01"
    // separator between items.
    std::vector<std::string> kv;
    std::vector<std::string> ans;
    std::vector<mx::array> aas;
    for (auto& [k, v] : md) {
      if (auto s = std::get_if<std::string>(&v)) {
        kv.push_back(k);
        kv.push_back(*s);
      } else if (auto l = std::get_if<std::vector<std::string>>(&v)) {
        std::string joined;
        for (size_t i = 0; i < l->size(); i++) {
          if (i) joined.push_back('\x01');
          joined += (*l)[i];
        }
        kv.push_back(k);
        kv.push_back(joined);
      } else if (auto a = std::get_if<mx::array>(&v)) {
        ans.push_back(k);
        aas.push_back(*a);
      }
    }
    *meta = blob(kv, meta_len);
    *meta_arrays = from_vec(std::move(aas));
    *meta_array_names = blob(ans, meta_array_names_len);
  });
}

size_t fgt_active_memory(void) { return mx::get_active_memory(); }
size_t fgt_peak_memory(void) { return mx::get_peak_memory(); }
size_t fgt_cache_memory(void) { return mx::get_cache_memory(); }
void fgt_reset_peak_memory(void) { mx::reset_peak_memory(); }
size_t fgt_set_memory_limit(size_t limit) { return mx::set_memory_limit(limit); }
size_t fgt_set_cache_limit(size_t limit) { return mx::set_cache_limit(limit); }
size_t fgt_set_wired_limit(size_t limit) {
  try {
    return mx::set_wired_limit(limit);
  } catch (...) {
    return 0;
  }
}
void fgt_clear_cache(void) { mx::clear_cache(); }

int fgt_default_device(void) { return mx::default_device() == mx::Device::gpu ? 1 : 0; }

int fgt_set_default_device(int gpu) {
  GUARD({ mx::set_default_device(gpu ? mx::Device(mx::Device::gpu) : mx::Device(mx::Device::cpu)); });
}

int fgt_gpu_available(void) {
  try {
    return mx::gpu::is_available() ? 1 : 0;
  } catch (...) {
    return 0;
  }
}

const char* fgt_version(void) {
  static std::string v = mx::version();
  return v.c_str();
}

const char* fgt_backend(void) {
  if (!fgt_gpu_available()) return "cpu";
#ifdef __APPLE__
  return "metal";
#else
  return "cuda";
#endif
}

}  // extern "C"
