package mlx

/*
#include <stdlib.h>
#include "shim.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// Distributed backends MLX knows. "any" tries NCCL (on CUDA), then the
// ring, MPI and JACCL, as MLX's init does.
var DistributedBackends = []string{"any", "ring", "nccl", "mpi", "jaccl"}

// Bounds on blocking distributed calls when DistributedConfig leaves them 0.
const (
	// DefaultInitTimeout bounds joining the group: every rank must have
	// started by then. MLX's ring waits for its left neighbour with no
	// timeout of its own.
	DefaultInitTimeout = 5 * time.Minute
	// DefaultCollectiveTimeout bounds one Group.Eval: it must cover the
	// longest time one rank can wait for the slowest at a collective (a
	// step's compute, a validation pass, rank 0 writing a checkpoint).
	DefaultCollectiveTimeout = 10 * time.Minute
)

// HangExitCode is the exit status of a process that the default OnHang
// stops (the status of timeout(1)).
const HangExitCode = 124

// DistributedConfig says how to join the group of processes.
type DistributedConfig struct {
	// Backend is one of DistributedBackends; "" means "any".
	Backend string
	// Strict makes a backend that cannot start an error. Otherwise the
	// process gets a size-1 group whose collectives return their input.
	Strict bool
	// InitTimeout bounds InitDistributed, Timeout each Group.Eval and the
	// host-value collectives (0: the defaults above).
	InitTimeout, Timeout time.Duration
	// OnHang is called, on its own goroutine, when a bound passes. MLX
	// cannot cancel a collective that waits for a dead peer, so the
	// default logs the error and exits the process with HangExitCode.
	OnHang func(error)
}

// Group is a group of processes (ranks) that run collectives together.
// Its methods that touch MLX must run on the MLX thread (inside Do).
type Group struct {
	c       C.fgt_group
	rank    int
	size    int
	backend string
	timeout time.Duration
	onHang  func(error)
}

// DistributedAvailable reports whether MLX was built with the backend.
func DistributedAvailable(backend string) bool {
	cs := C.CString(backend)
	defer C.free(unsafe.Pointer(cs))
	return C.fgt_dist_is_available(cs) == 1
}

// InitDistributed joins the group described by the environment (see
// CheckDistributedEnv) with the configured backend. With Strict unset and
// no backend configured it returns a size-1 group. It blocks until every
// rank has joined, at most cfg.InitTimeout.
//
// It makes the process ignore SIGPIPE: MLX's ring writes to its sockets
// from its own threads without MSG_NOSIGNAL, and a peer that dies mid-
// transfer would otherwise kill this process by that signal, with no
// message, instead of failing the collective with an error.
func InitDistributed(cfg DistributedConfig) (*Group, error) {
	if cfg.Backend == "" {
		cfg.Backend = "any"
	}
	if !slices.Contains(DistributedBackends, cfg.Backend) {
		return nil, fmt.Errorf("mlx: distributed backend %q: want one of %v", cfg.Backend, DistributedBackends)
	}
	if cfg.InitTimeout <= 0 {
		cfg.InitTimeout = DefaultInitTimeout
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultCollectiveTimeout
	}
	if cfg.OnHang == nil {
		cfg.OnHang = exitOnHang
	}
	if cfg.Strict && cfg.Backend != "any" && !DistributedAvailable(cfg.Backend) {
		return nil, fmt.Errorf("mlx: distributed backend %s is not in this MLX build (%s); it has %v",
			cfg.Backend, Backend(), availableBackends())
	}
	if err := CheckDistributedEnv(cfg.Backend); err != nil {
		return nil, err
	}
	signal.Ignore(syscall.SIGPIPE)
	cb := C.CString(cfg.Backend)
	defer C.free(unsafe.Pointer(cb))
	var g C.fgt_group
	strict := C.int(0)
	if cfg.Strict {
		strict = 1
	}
	err := withDeadline(cfg.InitTimeout, cfg.OnHang, func() error {
		return fmt.Errorf("mlx: joining the distributed group (backend %s, %s) did not finish within %s: "+
			"a rank did not start, died, or cannot be reached", cfg.Backend, describeEnv(), cfg.InitTimeout)
	}, func() error {
		if C.fgt_dist_init(strict, cb, &g) != 0 {
			return fmt.Errorf("mlx: init distributed backend %s (%s): %w", cfg.Backend, describeEnv(), lastError())
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &Group{
		c: g, rank: int(C.fgt_dist_rank(g)), size: int(C.fgt_dist_size(g)),
		backend: C.GoString(C.fgt_dist_backend(g)), timeout: cfg.Timeout, onHang: cfg.OnHang,
	}, nil
}

func availableBackends() []string {
	var out []string
	for _, b := range DistributedBackends[1:] {
		if DistributedAvailable(b) {
			out = append(out, b)
		}
	}
	return out
}

// Free releases the handle. MLX keeps the backend itself (and its
// connections) for the life of the process.
func (g *Group) Free() {
	if g != nil && g.c != nil {
		C.fgt_dist_group_free(g.c)
		g.c = nil
	}
}

// Rank is this process's index in the group, from 0.
func (g *Group) Rank() int { return g.rank }

// Size is the number of ranks.
func (g *Group) Size() int { return g.size }

// Backend is the backend in use: "ring", "nccl", "mpi", "jaccl", or "none"
// for a size-1 group.
func (g *Group) Backend() string { return g.backend }

// Timeout is the bound on each Eval.
func (g *Group) Timeout() time.Duration { return g.timeout }

// SetTimeout changes the bound on each Eval and host-value collective
// (a program that joins before it has read its settings sets it after);
// d ≤ 0 keeps the current one. Call it on the MLX thread.
func (g *Group) SetTimeout(d time.Duration) {
	if d > 0 {
		g.timeout = d
	}
}

func (g *Group) String() string {
	return fmt.Sprintf("rank %d of %d (backend %s)", g.rank, g.size, g.backend)
}

// Split divides the group: ranks that pass the same color form a new
// group, ordered by key (a negative key keeps the current order). Not
// every backend can (the ring cannot).
func (g *Group) Split(color, key int) (*Group, error) {
	if g.c == nil {
		return nil, errors.New("mlx: split of a freed group")
	}
	var out C.fgt_group
	if C.fgt_dist_split(g.c, C.int(color), C.int(key), &out) != 0 {
		return nil, fmt.Errorf("mlx: split %s: %w", g, lastError())
	}
	return &Group{c: out, rank: int(C.fgt_dist_rank(out)), size: int(C.fgt_dist_size(out)),
		backend: C.GoString(C.fgt_dist_backend(out)), timeout: g.timeout, onHang: g.onHang}, nil
}

// Collective op codes, matching shim.h.
const (
	collSum = iota
	collMax
	collMin
	collGather
)

var collNames = [...]string{"AllSum", "AllMax", "AllMin", "AllGather"}

func (g *Group) collective(op int, x *Array) *Array {
	name := collNames[op]
	if err := inputsErr(name, x); err != nil {
		return errArray(err)
	}
	if g == nil || g.c == nil {
		return errArray(fmt.Errorf("mlx.%s: nil or freed group", name))
	}
	var out C.fgt_array
	return result(name, C.fgt_dist_collective(C.int(op), x.c, g.c, &out), out)
}

// AllSum is the elementwise sum of x over the ranks (x itself in a size-1
// group). Every rank must call it with the same shape and dtype.
func (g *Group) AllSum(x *Array) *Array { return g.collective(collSum, x) }

// AllMax is the elementwise maximum of x over the ranks.
func (g *Group) AllMax(x *Array) *Array { return g.collective(collMax, x) }

// AllMin is the elementwise minimum of x over the ranks.
func (g *Group) AllMin(x *Array) *Array { return g.collective(collMin, x) }

// AllGather concatenates every rank's x along axis 0 in rank order (a 0-d
// x gives shape (size)).
func (g *Group) AllGather(x *Array) *Array { return g.collective(collGather, x) }

// Eval evaluates arrays that depend on collectives, bounded by the group's
// timeout: past it OnHang runs (by default the process exits), because a
// collective that waits for a dead or stuck peer never returns.
func (g *Group) Eval(as ...*Array) error {
	return withDeadline(g.timeout, g.onHang, func() error {
		return fmt.Errorf("mlx: a collective on %s did not finish within %s: "+
			"another rank has died, hangs, or cannot be reached", g, g.timeout)
	}, func() error {
		if err := Eval(as...); err != nil {
			return fmt.Errorf("a collective on %s failed (has another rank stopped?): %w", g, err)
		}
		return nil
	})
}

// withDeadline runs f; if it has not returned after d, onHang gets
// hangErr() from a timer goroutine. f itself cannot be interrupted.
func withDeadline(d time.Duration, onHang func(error), hangErr func() error, f func() error) error {
	var done atomic.Bool
	t := time.AfterFunc(d, func() {
		if !done.Load() {
			onHang(hangErr())
		}
	})
	defer t.Stop()
	err := f()
	done.Store(true)
	return err
}

func exitOnHang(err error) {
	slog.Error("distributed: giving up", "err", err)
	fmt.Fprintln(os.Stderr, "error:", err)
	os.Exit(HangExitCode)
}
