// shim.h: fungtrain's narrow C ABI over MLX's C++ API.
//
// Every function that can fail returns 0 on success and non-zero on failure;
// the message is then available from fgt_last_error() on the same thread.
// No C++ exception ever crosses this boundary.
#ifndef FUNGTRAIN_MLX_SHIM_H
#define FUNGTRAIN_MLX_SHIM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct fgt_array_s* fgt_array;  // an owned heap mlx::core::array
typedef struct fgt_vag_s* fgt_vag;      // a value-and-grad function
typedef struct fgt_compiled_s* fgt_compiled;

// A vector of owned arrays allocated by the shim; free with fgt_vec_free.
typedef struct {
  fgt_array* data;
  int n;
} fgt_vec;

// Dtype codes shared with Go (dtype.go).
enum {
  FGT_BOOL = 0, FGT_UINT8 = 1, FGT_UINT32 = 2, FGT_INT32 = 3, FGT_INT64 = 4,
  FGT_FLOAT16 = 5, FGT_BFLOAT16 = 6, FGT_FLOAT32 = 7, FGT_UINT16 = 8,
  FGT_INT8 = 9, FGT_INT16 = 10, FGT_UINT64 = 11, FGT_FLOAT64 = 12,
  FGT_COMPLEX64 = 13
};

const char* fgt_last_error(void);
void fgt_set_error(const char* msg);

// Thread ownership.
int fgt_claim_thread(void);
int fgt_is_owner(void);
void fgt_release_thread(void);

// Arrays.
int fgt_array_from_data(const void* data, const int* shape, int ndim, int dtype, fgt_array* out);
int fgt_array_scalar(double v, int dtype, fgt_array* out);
void fgt_array_free(fgt_array a);
int fgt_array_copy(fgt_array a, fgt_array* out);
int fgt_array_ndim(fgt_array a);
void fgt_array_shape(fgt_array a, int* shape);
int fgt_array_shape_n(fgt_array a, int* shape, int cap);  // writes up to cap dims, returns ndim
int fgt_array_dtype(fgt_array a);
size_t fgt_array_size(fgt_array a);
size_t fgt_array_nbytes(fgt_array a);
int fgt_array_read(fgt_array a, void* dst, size_t nbytes);
void fgt_vec_free(fgt_vec v);
void fgt_vec_release(fgt_vec v);  // frees the vector but not the arrays

// Op codes shared with Go: ops.go names them as C.FGT_OP_…, so Go and C++
// cannot disagree about which code is which op.
enum fgt_unary_opcode {
  FGT_OP_SQRT, FGT_OP_RSQRT, FGT_OP_EXP, FGT_OP_LOG, FGT_OP_NEGATIVE,
  FGT_OP_ABS, FGT_OP_SIGMOID, FGT_OP_STOP_GRADIENT, FGT_OP_SQUARE,
  FGT_OP_SIN, FGT_OP_COS, FGT_OP_TANH, FGT_OP_FLOOR, FGT_OP_LOGICAL_NOT,
  FGT_OP_ERF, FGT_OP_SILU, FGT_OP_LOG1P, FGT_OP_ISNAN, FGT_OP_ISINF,
  FGT_OP_CONTIGUOUS
};
enum fgt_binary_opcode {
  FGT_OP_ADD, FGT_OP_SUBTRACT, FGT_OP_MULTIPLY, FGT_OP_DIVIDE, FGT_OP_POWER,
  FGT_OP_MAXIMUM, FGT_OP_MINIMUM, FGT_OP_MATMUL, FGT_OP_EQUAL,
  FGT_OP_NOT_EQUAL, FGT_OP_LESS, FGT_OP_LESS_EQUAL, FGT_OP_GREATER,
  FGT_OP_GREATER_EQUAL, FGT_OP_LOGICAL_AND, FGT_OP_LOGICAL_OR,
  FGT_OP_FLOOR_DIVIDE, FGT_OP_REMAINDER
};
enum fgt_reduce_opcode {
  FGT_OP_SUM, FGT_OP_MEAN, FGT_OP_MAX, FGT_OP_MIN, FGT_OP_LOGSUMEXP,
  FGT_OP_ARGMAX, FGT_OP_ARGMIN, FGT_OP_PROD, FGT_OP_ALL, FGT_OP_ANY
};
enum fgt_axis_opcode { FGT_OP_SORT, FGT_OP_ARGSORT, FGT_OP_LOG_SOFTMAX };

// Elementwise and generic ops by code (the enums above).
int fgt_unary(int op, fgt_array a, fgt_array* out);
int fgt_binary(int op, fgt_array a, fgt_array b, fgt_array* out);
int fgt_reduce(int op, fgt_array a, const int* axes, int naxes, int all, int keepdims, fgt_array* out);
int fgt_axis_op(int op, fgt_array a, int axis, fgt_array* out);

int fgt_where(fgt_array c, fgt_array a, fgt_array b, fgt_array* out);
int fgt_clip(fgt_array a, fgt_array lo, fgt_array hi, fgt_array* out);
int fgt_softmax(fgt_array a, const int* axes, int naxes, int precise, fgt_array* out);
int fgt_linear(fgt_array x, fgt_array w, fgt_array bias, fgt_array* out);  // x·wᵀ (+ bias)
int fgt_addmm(fgt_array c, fgt_array a, fgt_array b, float alpha, float beta, fgt_array* out);
int fgt_astype(fgt_array a, int dtype, fgt_array* out);

// Shapes and indexing.
int fgt_reshape(fgt_array a, const int* shape, int ndim, fgt_array* out);
int fgt_transpose(fgt_array a, const int* perm, int nperm, fgt_array* out);
int fgt_swapaxes(fgt_array a, int ax1, int ax2, fgt_array* out);
int fgt_expand_dims(fgt_array a, const int* axes, int naxes, fgt_array* out);
int fgt_squeeze(fgt_array a, const int* axes, int naxes, fgt_array* out);
int fgt_broadcast_to(fgt_array a, const int* shape, int ndim, fgt_array* out);
int fgt_concatenate(const fgt_array* as, int n, int axis, fgt_array* out);
int fgt_stack(const fgt_array* as, int n, int axis, fgt_array* out);
int fgt_split_sections(fgt_array a, int nsections, int axis, fgt_vec* out);
int fgt_split_indices(fgt_array a, const int* indices, int nidx, int axis, fgt_vec* out);
int fgt_slice(fgt_array a, const int* start, const int* stop, const int* strides, int n, fgt_array* out);
int fgt_slice_update(fgt_array src, fgt_array upd, const int* start, const int* stop, const int* strides, int n, fgt_array* out);
int fgt_take(fgt_array a, fgt_array idx, int axis, int has_axis, fgt_array* out);
int fgt_take_along_axis(fgt_array a, fgt_array idx, int axis, fgt_array* out);
int fgt_put_along_axis(fgt_array a, fgt_array idx, fgt_array vals, int axis, fgt_array* out);
int fgt_argpartition(fgt_array a, int kth, int axis, fgt_array* out);
int fgt_cumsum(fgt_array a, int axis, int reverse, int inclusive, fgt_array* out);

// Construction.
int fgt_arange(double start, double stop, double step, int dtype, fgt_array* out);
int fgt_full(const int* shape, int ndim, fgt_array val, int dtype, fgt_array* out);
int fgt_tri(fgt_array a, int k, int upper, fgt_array* out);

// fast.
int fgt_rms_norm(fgt_array x, fgt_array w, float eps, fgt_array* out);
int fgt_rope(fgt_array x, int dims, int traditional, float base, int has_base, float scale, int offset, fgt_array offset_arr, fgt_array freqs, fgt_array* out);
int fgt_sdpa(fgt_array q, fgt_array k, fgt_array v, float scale, const char* mask_mode, fgt_array mask, fgt_array* out);
int fgt_cross_entropy(fgt_array logits, fgt_array targets, fgt_array* out);

// Quantization.
int fgt_quantize(fgt_array w, int group_size, int bits, fgt_vec* out);
int fgt_dequantize(fgt_array w, fgt_array scales, fgt_array biases, int group_size, int bits, fgt_array* out);
int fgt_quantized_matmul(fgt_array x, fgt_array w, fgt_array scales, fgt_array biases, int transpose, int group_size, int bits, fgt_array* out);

// Random.
int fgt_random_key(uint64_t seed, fgt_array* out);
int fgt_random_seed(uint64_t seed);
int fgt_random_split(fgt_array key, int num, fgt_array* out);
int fgt_random_uniform(fgt_array lo, fgt_array hi, const int* shape, int ndim, int dtype, fgt_array key, fgt_array* out);
int fgt_random_normal(const int* shape, int ndim, int dtype, float loc, float scale, fgt_array key, fgt_array* out);
int fgt_random_bernoulli(fgt_array p, const int* shape, int ndim, fgt_array key, fgt_array* out);
int fgt_random_categorical(fgt_array logits, int axis, fgt_array key, fgt_array* out);

// Transforms.
int fgt_eval(const fgt_array* as, int n);
int fgt_async_eval(const fgt_array* as, int n);
int fgt_vag_new(uintptr_t handle, const int* argnums, int nargnums, fgt_vag* out);
void fgt_vag_free(fgt_vag f);
int fgt_vag_call(fgt_vag f, const fgt_array* inputs, int n, fgt_vec* values, fgt_vec* grads);
int fgt_vjp(uintptr_t handle, const fgt_array* primals, int np, const fgt_array* cotangents, int nc, fgt_vec* outs, fgt_vec* vjps);
int fgt_compile_new(uintptr_t handle, int shapeless, fgt_compiled* out);
void fgt_compiled_free(fgt_compiled f);
int fgt_compiled_call(fgt_compiled f, const fgt_array* inputs, int n, fgt_vec* outs);
int fgt_checkpoint_call(uintptr_t handle, const fgt_array* inputs, int n, fgt_vec* outs);
int fgt_custom_vjp_call(uintptr_t fwd, uintptr_t vjp, const fgt_array* inputs, int n, fgt_vec* outs);

// I/O. Names and string metadata come back as NUL-separated byte blobs
// (malloc'd, free with free()).
int fgt_load_safetensors(const char* path, fgt_vec* arrays, char** names, size_t* names_len, char** meta, size_t* meta_len);
int fgt_save_safetensors(const char* path, const fgt_array* as, const char* names, int n, const char* meta, size_t meta_len);
int fgt_load_gguf(const char* path, fgt_vec* arrays, char** names, size_t* names_len, char** meta, size_t* meta_len, fgt_vec* meta_arrays, char** meta_array_names, size_t* meta_array_names_len);

// Memory, device, version.
size_t fgt_active_memory(void);
size_t fgt_peak_memory(void);
size_t fgt_cache_memory(void);
void fgt_reset_peak_memory(void);
size_t fgt_set_memory_limit(size_t limit);
size_t fgt_set_cache_limit(size_t limit);
size_t fgt_set_wired_limit(size_t limit);
void fgt_clear_cache(void);
int fgt_default_device(void);  // 0 cpu, 1 gpu
int fgt_set_default_device(int gpu);
int fgt_gpu_available(void);
const char* fgt_version(void);
const char* fgt_backend(void);

#ifdef __cplusplus
}
#endif
#endif

// ---- Distributed (shim_distributed.cpp) -----------------------------------
// MLX's mlx::core::distributed: a group of processes (ranks) and collective
// ops over it. The collectives are lazy ops like any other: they run when
// the arrays that depend on them are evaluated, on the stream the group's
// backend chooses (the ring: the CPU stream; NCCL: the GPU stream), so they
// obey the thread rule. Same error discipline as above.
#ifndef FUNGTRAIN_MLX_SHIM_DISTRIBUTED_H
#define FUNGTRAIN_MLX_SHIM_DISTRIBUTED_H
#ifdef __cplusplus
extern "C" {
#endif

typedef struct fgt_group_s* fgt_group;  // an owned mlx::core::distributed::Group

// Collective op codes shared with Go (distributed.go).
enum { FGT_ALL_SUM = 0, FGT_ALL_MAX = 1, FGT_ALL_MIN = 2, FGT_ALL_GATHER = 3 };

int fgt_dist_is_available(const char* backend);  // 1 when MLX was built with it
int fgt_dist_init(int strict, const char* backend, fgt_group* out);
void fgt_dist_group_free(fgt_group g);
int fgt_dist_rank(fgt_group g);
int fgt_dist_size(fgt_group g);
const char* fgt_dist_backend(fgt_group g);  // "ring", "nccl", "mpi", "jaccl" or "none"
int fgt_dist_split(fgt_group g, int color, int key, fgt_group* out);
int fgt_dist_collective(int op, fgt_array x, fgt_group g, fgt_array* out);

#ifdef __cplusplus
}
#endif
#endif
