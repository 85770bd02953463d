package mlx

/*
#include "shim.h"
*/
import "C"

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"sync"
)

// The single owner of the MLX thread: a goroutine locked to one OS thread
// that runs the jobs handed to Do, one at a time. Its scope stack is only
// touched from that thread.
var owner struct {
	once   sync.Once
	jobs   chan func()
	err    error
	scopes []*Scope
}

func startOwner() {
	owner.jobs = make(chan func())
	ready := make(chan error)
	go func() {
		runtime.LockOSThread() // never unlocked: this thread belongs to MLX
		if C.fgt_claim_thread() != 0 {
			ready <- lastError()
			return
		}
		ready <- nil
		for job := range owner.jobs {
			job()
			drainForgotten()
		}
	}()
	owner.err = <-ready
}

// Do runs f on the MLX owner thread and returns its error. A panic in f is
// recovered and returned as an error. Do may be called from any goroutine,
// concurrently: calls are serialised. Called from the owner thread itself
// (inside another Do, or inside a transform's callback), it runs f inline.
//
// Do is the documented owner/worker for concurrent callers (a server hands
// each request's MLX work to Do); the CLI wraps each command's MLX work in
// one Do.
func Do(f func() error) error {
	if OnOwnerThread() {
		return runGuarded(f)
	}
	owner.once.Do(startOwner)
	if owner.err != nil {
		return fmt.Errorf("mlx: start owner thread: %w", owner.err)
	}
	done := make(chan error, 1)
	owner.jobs <- func() { done <- runGuarded(f) }
	return <-done
}

// Call runs f on the MLX owner thread, like Do, and returns what f returns,
// so a caller gets a result without a variable captured by the closure. A
// panic in f gives the zero T and the panic as the error.
func Call[T any](f func() (T, error)) (T, error) {
	var v T
	err := Do(func() error {
		var err error
		v, err = f()
		return err
	})
	return v, err
}

// OnOwnerThread reports whether the calling goroutine runs on the MLX owner
// thread.
func OnOwnerThread() bool { return C.fgt_is_owner() == 1 }

func runGuarded(f func() error) (err error) {
	depth := len(owner.scopes)
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("mlx: panic on the MLX thread: %v\n%s", r, debug.Stack())
			// Close the scopes the panicking code left open.
			for len(owner.scopes) > depth {
				owner.scopes[len(owner.scopes)-1].Close()
			}
		}
	}()
	return f()
}
