package mlx

/*
#include "shim.h"
*/
import "C"

import (
	"fmt"
	"os"
	"strconv"
)

// ActiveMemory is the bytes held by live MLX buffers.
func ActiveMemory() int64 { return int64(C.fgt_active_memory()) }

// PeakMemory is the high-water mark of ActiveMemory since the last reset.
// It excludes MLX's buffer cache; see CacheMemory.
func PeakMemory() int64 { return int64(C.fgt_peak_memory()) }

// CacheMemory is the bytes MLX keeps cached for reuse.
func CacheMemory() int64 { return int64(C.fgt_cache_memory()) }

// ResetPeakMemory restarts the peak measurement.
func ResetPeakMemory() { C.fgt_reset_peak_memory() }

// SetMemoryLimit sets MLX's memory limit in bytes and returns the old one.
func SetMemoryLimit(bytes int64) int64 { return int64(C.fgt_set_memory_limit(C.size_t(bytes))) }

// SetCacheLimit caps the buffer cache in bytes and returns the old cap.
func SetCacheLimit(bytes int64) int64 { return int64(C.fgt_set_cache_limit(C.size_t(bytes))) }

// SetWiredLimit sets the wired memory limit (Metal only; 0 elsewhere).
func SetWiredLimit(bytes int64) int64 { return int64(C.fgt_set_wired_limit(C.size_t(bytes))) }

// ClearCache frees MLX's buffer cache.
func ClearCache() { C.fgt_clear_cache() }

// Device is where MLX runs ops by default.
type Device int

// Devices.
const (
	CPU Device = 0
	GPU Device = 1
)

func (d Device) String() string {
	if d == GPU {
		return "gpu"
	}
	return "cpu"
}

// DefaultDevice is the device MLX runs ops on.
func DefaultDevice() Device { return Device(C.fgt_default_device()) }

// SetDefaultDevice changes the default device.
func SetDefaultDevice(d Device) error {
	if C.fgt_set_default_device(C.int(d)) != 0 {
		return fmt.Errorf("mlx.SetDefaultDevice(%s): %w", d, lastError())
	}
	return nil
}

// GPUAvailable reports whether MLX has a GPU backend here.
func GPUAvailable() bool { return C.fgt_gpu_available() == 1 }

// Version is MLX's version string.
func Version() string { return C.GoString(C.fgt_version()) }

// Backend is "metal", "cuda" or "cpu".
func Backend() string { return C.GoString(C.fgt_backend()) }

// TrainingBufferMB is the most memory, in MB, that the operations of one
// CUDA command buffer may touch before MLX submits it
// (MLX_MAX_MB_PER_BUFFER) in a training process. MLX frees a buffer only
// when the work that used it has finished, and it keeps up to ten command
// buffers in flight, so their size bounds the memory held by queued work.
// At 200 MB a Llama-3.2-3B LoRA step on the H100 peaked 1.2-1.7 GiB lower
// than with MLX's default (1000 MB there); see docs/BENCHMARKS.md.
const TrainingBufferMB = 200

// UseTrainingBuffers sets MLX_MAX_MB_PER_BUFFER to TrainingBufferMB on
// CUDA, unless the user set it. It is for training processes only: in
// generation every token reads all the weights, and small buffers would
// mean many more launches per token; Metal's per-chip defaults are already
// small. Call it before the first MLX computation.
func UseTrainingBuffers() {
	if Backend() == "cuda" && os.Getenv("MLX_MAX_MB_PER_BUFFER") == "" {
		os.Setenv("MLX_MAX_MB_PER_BUFFER", strconv.Itoa(TrainingBufferMB))
	}
}
