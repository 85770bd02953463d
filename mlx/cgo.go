// Package mlx is fungtrain's binding to MLX, through a narrow C ABI (shim.h)
// over MLX's C++ API.
//
// Two rules shape the API:
//
//   - The thread rule. MLX keeps streams thread-local, so every MLX call must
//     happen on one OS thread. Do runs a function on that thread (the owner);
//     a call from any other thread returns an error instead of reaching MLX.
//   - Lifetimes. Go's garbage collector does not see MLX memory, so arrays
//     have explicit owners. A Scope frees every array created inside it,
//     except those it keeps; long-lived arrays (weights, optimizer state)
//     are created outside any scope and freed with Free. LiveArrays counts
//     the arrays not yet freed, so tests can prove steady state. A GC
//     cleanup frees a forgotten array only as a backstop.
//
// Ops never panic on bad input. An op that fails returns an Array holding
// the error; ops on such an array pass the error along, and Eval, the data
// readers and Err report it.
package mlx

/*
#cgo CXXFLAGS: -std=c++20 -O2 -I${SRCDIR}/../third_party/mlx/mlx/include
#cgo LDFLAGS: -L${SRCDIR}/../third_party/mlx/mlx/lib -lmlx -Wl,-rpath,${SRCDIR}/../third_party/mlx/mlx/lib
#cgo linux LDFLAGS: -lstdc++
#cgo darwin LDFLAGS: -lc++
#include <stdlib.h>
#include "shim.h"
*/
import "C"

import "errors"

func lastError() error {
	return errors.New(C.GoString(C.fgt_last_error()))
}
