// shim_distributed.cpp: the distributed block of shim.h over
// mlx::core::distributed. Like shim.cpp, each entry point checks that it runs
// on the MLX owner thread and turns every C++ exception into an error code
// plus the thread's message (fgt_set_error); nothing unwinds into Go.
#include "shim.h"

#include <cstring>
#include <exception>
#include <stdexcept>
#include <string>
#include <typeinfo>

#include <mlx/mlx.h>
#include <mlx/distributed/distributed.h>
#include <mlx/distributed/distributed_impl.h>
#include <mlx/distributed/ops.h>

namespace mx = mlx::core;
namespace dist = mlx::core::distributed;

struct fgt_group_s {
  dist::Group group;
};

namespace {

inline mx::array& arr(fgt_array a) { return *reinterpret_cast<mx::array*>(a); }
inline fgt_array wrap_array(mx::array a) { return reinterpret_cast<fgt_array>(new mx::array(std::move(a))); }

int dist_fail(const std::string& msg) {
  fgt_set_error(msg.c_str());
  return 1;
}

#define DIST_GUARD(...)                                                      \
  if (!fgt_is_owner())                                                       \
    return dist_fail("mlx: called from an OS thread that does not own MLX; " \
                     "run MLX work inside mlx.Do");                          \
  try {                                                                      \
    __VA_ARGS__;                                                             \
    return 0;                                                                \
  } catch (const std::exception& e) {                                        \
    return dist_fail(e.what());                                              \
  } catch (...) {                                                            \
    return dist_fail("mlx: unknown C++ exception");                          \
  }

// backend_of names the implementation behind a group. MLX does not say which
// backend "any" picked; the dynamic type of the group's implementation does
// (mlx::core::distributed::ring::RingGroup, nccl::NCCLGroup, ...; the
// size-1 group is detail::EmptyGroup).
const char* backend_of(const dist::Group& g) {
  const auto& impl = g.raw_group();
  if (!impl) return "none";
  const char* name = typeid(*impl).name();
  struct {
    const char* mangled;
    const char* backend;
  } known[] = {{"4ring", "ring"}, {"4nccl", "nccl"}, {"3mpi", "mpi"}, {"5jaccl", "jaccl"}};
  for (auto& k : known) {
    if (std::strstr(name, k.mangled) != nullptr) return k.backend;
  }
  return "none";
}

}  // namespace

extern "C" {

int fgt_dist_is_available(const char* backend) {
  try {
    return dist::is_available(backend) ? 1 : 0;
  } catch (...) {
    return 0;
  }
}

int fgt_dist_init(int strict, const char* backend, fgt_group* out) {
  DIST_GUARD({ *out = new fgt_group_s{dist::init(strict != 0, backend)}; });
}

void fgt_dist_group_free(fgt_group g) { delete g; }

int fgt_dist_rank(fgt_group g) { return g->group.rank(); }

int fgt_dist_size(fgt_group g) { return g->group.size(); }

const char* fgt_dist_backend(fgt_group g) { return backend_of(g->group); }

int fgt_dist_split(fgt_group g, int color, int key, fgt_group* out) {
  DIST_GUARD({ *out = new fgt_group_s{g->group.split(color, key)}; });
}

int fgt_dist_collective(int op, fgt_array x, fgt_group g, fgt_array* out) {
  DIST_GUARD({
    switch (op) {
      case FGT_ALL_SUM: *out = wrap_array(dist::all_sum(arr(x), g->group)); break;
      case FGT_ALL_MAX: *out = wrap_array(dist::all_max(arr(x), g->group)); break;
      case FGT_ALL_MIN: *out = wrap_array(dist::all_min(arr(x), g->group)); break;
      case FGT_ALL_GATHER: *out = wrap_array(dist::all_gather(arr(x), g->group)); break;
      default: throw std::invalid_argument("mlx: unknown collective op code " + std::to_string(op));
    }
  });
}

}  // extern "C"
