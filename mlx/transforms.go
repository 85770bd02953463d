package mlx

/*
#include <stdlib.h>
#include "shim.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"runtime/cgo"
	"runtime/debug"
	"unsafe"
)

// Eval computes the arrays now. It returns the first error carried by any
// of them, or the error of the computation.
func Eval(as ...*Array) error {
	return evalWith("Eval", as, func(p *C.fgt_array, n C.int) C.int { return C.fgt_eval(p, n) })
}

// AsyncEval starts computing the arrays and returns without waiting.
func AsyncEval(as ...*Array) error {
	return evalWith("AsyncEval", as, func(p *C.fgt_array, n C.int) C.int { return C.fgt_async_eval(p, n) })
}

func evalWith(name string, as []*Array, f func(*C.fgt_array, C.int) C.int) error {
	if len(as) == 0 {
		return nil
	}
	if err := inputsErr(name, as...); err != nil {
		return err
	}
	p := cArrays(as)
	defer C.free(unsafe.Pointer(p))
	if f(p, C.int(len(as))) != 0 {
		return fmt.Errorf("mlx.%s: %w", name, lastError())
	}
	return nil
}

// Func is a Go function over arrays that MLX transforms call back into.
// The arrays it receives belong to a scope that closes when it returns;
// what it returns is copied, so it may return fresh or long-lived arrays.
type Func func(inputs []*Array) ([]*Array, error)

//export fgtGoCall
func fgtGoCall(handle C.uintptr_t, inputs *C.fgt_array, n C.int, outs *C.fgt_vec) (rc C.int) {
	s := NewScope()
	defer s.Close()
	defer func() {
		if r := recover(); r != nil {
			setError(fmt.Sprintf("mlx: panic in a Go function called by MLX: %v\n%s", r, debug.Stack()))
			rc = 1
		}
	}()
	fn := cgo.Handle(handle).Value().(Func)
	args := make([]*Array, int(n))
	for i, p := range unsafe.Slice(inputs, int(n)) {
		args[i] = newArray(p)
	}
	res, err := fn(args)
	if err == nil {
		err = inputsErr("callback result", res...)
	}
	if err != nil {
		setError(err.Error())
		return 1
	}
	vec := C.fgt_vec{n: C.int(len(res))}
	vec.data = (*C.fgt_array)(C.malloc(C.size_t(max(len(res), 1)) * C.size_t(unsafe.Sizeof(C.fgt_array(nil)))))
	dst := unsafe.Slice(vec.data, len(res))
	for i, a := range res {
		C.fgt_array_copy(a.c, &dst[i])
	}
	*outs = vec
	return 0
}

func setError(msg string) {
	cs := C.CString(msg)
	defer C.free(unsafe.Pointer(cs))
	C.fgt_set_error(cs)
}

// ValueAndGrad is a function that returns the outputs of a Go function and
// the gradients of its first output (a scalar) with respect to chosen
// inputs. Build it once and Call it every step; Free it when done.
type ValueAndGrad struct {
	c C.fgt_vag
	h cgo.Handle
}

// NewValueAndGrad builds the value-and-grad function of f with respect to
// the inputs at argnums.
func NewValueAndGrad(f Func, argnums ...int) (*ValueAndGrad, error) {
	if len(argnums) == 0 {
		return nil, errors.New("mlx.NewValueAndGrad: no argnums")
	}
	h := cgo.NewHandle(f)
	an, n := cInts(argnums)
	var out C.fgt_vag
	if C.fgt_vag_new(C.uintptr_t(h), an, n, &out) != 0 {
		h.Delete()
		return nil, fmt.Errorf("mlx.NewValueAndGrad: %w", lastError())
	}
	return &ValueAndGrad{c: out, h: h}, nil
}

// Call runs f on inputs and returns its outputs and the gradients.
func (g *ValueAndGrad) Call(inputs ...*Array) (values, grads []*Array, err error) {
	if g == nil || g.c == nil {
		return nil, nil, errors.New("mlx.ValueAndGrad.Call: freed or nil function")
	}
	if err := inputsErr("ValueAndGrad.Call", inputs...); err != nil {
		return nil, nil, err
	}
	p := cArrays(inputs)
	defer C.free(unsafe.Pointer(p))
	var vals, gs C.fgt_vec
	if C.fgt_vag_call(g.c, p, C.int(len(inputs)), &vals, &gs) != 0 {
		return nil, nil, fmt.Errorf("mlx.ValueAndGrad: %w", lastError())
	}
	return takeVec(vals), takeVec(gs), nil
}

// Free releases the function.
func (g *ValueAndGrad) Free() {
	if g == nil || g.c == nil {
		return
	}
	C.fgt_vag_free(g.c)
	g.c = nil
	g.h.Delete()
}

// Vjp computes f(primals) and the vector-Jacobian products with cotangents.
func Vjp(f Func, primals, cotangents []*Array) (outs, vjps []*Array, err error) {
	if err := inputsErr("Vjp", append(append([]*Array{}, primals...), cotangents...)...); err != nil {
		return nil, nil, err
	}
	h := cgo.NewHandle(f)
	defer h.Delete()
	pp, pc := cArrays(primals), cArrays(cotangents)
	defer C.free(unsafe.Pointer(pp))
	defer C.free(unsafe.Pointer(pc))
	var o, v C.fgt_vec
	if C.fgt_vjp(C.uintptr_t(h), pp, C.int(len(primals)), pc, C.int(len(cotangents)), &o, &v) != 0 {
		return nil, nil, fmt.Errorf("mlx.Vjp: %w", lastError())
	}
	return takeVec(o), takeVec(v), nil
}

// Closure is a Go function registered with MLX for the life of a model: it
// can be compiled, or called with gradient checkpointing. MLX may call it
// back during any later backward pass, so Free it only when no graph that
// used it will be differentiated again.
type Closure struct {
	h        cgo.Handle
	compiled C.fgt_compiled
}

var errClosureFreed = errors.New("mlx.Closure: use of a freed or nil closure")

// NewClosure registers f.
func NewClosure(f Func) *Closure { return &Closure{h: cgo.NewHandle(f)} }

// Checkpoint calls the closure so that its intermediate arrays are not kept
// for the backward pass: the backward recomputes them. This trades compute
// for memory (gradient checkpointing).
func (c *Closure) Checkpoint(inputs ...*Array) ([]*Array, error) {
	if c == nil || c.h == 0 {
		return nil, errClosureFreed
	}
	if err := inputsErr("Checkpoint", inputs...); err != nil {
		return nil, err
	}
	p := cArrays(inputs)
	defer C.free(unsafe.Pointer(p))
	var o C.fgt_vec
	if C.fgt_checkpoint_call(C.uintptr_t(c.h), p, C.int(len(inputs)), &o) != 0 {
		return nil, fmt.Errorf("mlx.Checkpoint: %w", lastError())
	}
	return takeVec(o), nil
}

// Compile compiles the closure (tracing it on first call per input shape,
// or once for all shapes when shapeless); later calls run the fused graph.
func (c *Closure) Compile(shapeless bool) error {
	if c == nil || c.h == 0 {
		return errClosureFreed
	}
	if c.compiled != nil {
		return nil
	}
	if C.fgt_compile_new(C.uintptr_t(c.h), cBool(shapeless), &c.compiled) != 0 {
		return fmt.Errorf("mlx.Compile: %w", lastError())
	}
	return nil
}

// Call runs the closure: compiled if Compile was called, else directly.
func (c *Closure) Call(inputs ...*Array) ([]*Array, error) {
	if c == nil || c.h == 0 {
		return nil, errClosureFreed
	}
	if c.compiled == nil {
		return c.h.Value().(Func)(inputs)
	}
	if err := inputsErr("Closure.Call", inputs...); err != nil {
		return nil, err
	}
	p := cArrays(inputs)
	defer C.free(unsafe.Pointer(p))
	var o C.fgt_vec
	if C.fgt_compiled_call(c.compiled, p, C.int(len(inputs)), &o) != 0 {
		return nil, fmt.Errorf("mlx.Compiled: %w", lastError())
	}
	return takeVec(o), nil
}

// Free releases the closure.
func (c *Closure) Free() {
	if c == nil || c.h == 0 {
		return
	}
	if c.compiled != nil {
		C.fgt_compiled_free(c.compiled)
		c.compiled = nil
	}
	c.h.Delete()
	c.h = 0
}

// VJPFunc computes the cotangents of a CustomVJP's primals from the
// primals, the cotangents of its outputs and the outputs themselves.
type VJPFunc func(primals, cotangents, outputs []*Array) ([]*Array, error)

// CustomVJP is a function of a fixed number of inputs whose backward pass
// is written by hand: MLX calls vjp instead of differentiating fwd (under
// compile too). It lives as long as a model that uses it, like a Closure;
// Free it when no graph that used it will be differentiated again.
type CustomVJP struct {
	n        int
	fwd, vjp cgo.Handle
}

// NewCustomVJP registers fwd, a function of n inputs, and its vjp, which
// must return n cotangents (any array for inputs that take no gradient:
// MLX only evaluates the ones it needs).
func NewCustomVJP(n int, fwd Func, vjp VJPFunc) *CustomVJP {
	split := Func(func(in []*Array) ([]*Array, error) {
		// MLX passes primals, then one cotangent per output, then the outputs.
		if (len(in)-n)%2 != 0 || len(in) < n {
			return nil, fmt.Errorf("mlx.CustomVJP: vjp called with %d arrays for %d primals", len(in), n)
		}
		nOut := (len(in) - n) / 2
		return vjp(in[:n], in[n:n+nOut], in[n+nOut:])
	})
	return &CustomVJP{n: n, fwd: cgo.NewHandle(fwd), vjp: cgo.NewHandle(split)}
}

// Call runs the function on its n inputs.
func (c *CustomVJP) Call(inputs ...*Array) ([]*Array, error) {
	if c == nil || c.fwd == 0 {
		return nil, errors.New("mlx.CustomVJP: use of a freed or nil function")
	}
	if len(inputs) != c.n {
		return nil, fmt.Errorf("mlx.CustomVJP: %d inputs, want %d", len(inputs), c.n)
	}
	if err := inputsErr("CustomVJP", inputs...); err != nil {
		return nil, err
	}
	p := cArrays(inputs)
	defer C.free(unsafe.Pointer(p))
	var o C.fgt_vec
	if C.fgt_custom_vjp_call(C.uintptr_t(c.fwd), C.uintptr_t(c.vjp), p, C.int(len(inputs)), &o) != 0 {
		return nil, fmt.Errorf("mlx.CustomVJP: %w", lastError())
	}
	return takeVec(o), nil
}

// Free releases the function.
func (c *CustomVJP) Free() {
	if c == nil || c.fwd == 0 {
		return
	}
	c.fwd.Delete()
	c.vjp.Delete()
	c.fwd, c.vjp = 0, 0
}
