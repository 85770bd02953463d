package mlx

/*
#include "shim.h"
*/
import "C"

import "fmt"

// RandomKey is a PRNG key for seed. Functions below take an optional key;
// with nil they use MLX's global generator (seeded by RandomSeed).
func RandomKey(seed uint64) *Array {
	var out C.fgt_array
	return result("RandomKey", C.fgt_random_key(C.uint64_t(seed), &out), out)
}

// RandomSeed seeds MLX's global generator.
func RandomSeed(seed uint64) error {
	if C.fgt_random_seed(C.uint64_t(seed)) != 0 {
		return fmt.Errorf("mlx.RandomSeed: %w", lastError())
	}
	return nil
}

// RandomSplit splits key into num keys, stacked along axis 0.
func RandomSplit(key *Array, num int) *Array {
	if err := inputsErr("RandomSplit", key); err != nil {
		return errArray(err)
	}
	var out C.fgt_array
	return result("RandomSplit", C.fgt_random_split(key.c, C.int(num), &out), out)
}

func keyInputs(name string, key *Array, in ...*Array) error {
	if key != nil {
		in = append(in, key)
	}
	return inputsErr(name, in...)
}

// Uniform samples U[lo, hi) of shape in dtype dt.
func Uniform(lo, hi float64, dt Dtype, key *Array, shape ...int) *Array {
	l, h := Scalar(lo, dt), Scalar(hi, dt)
	defer l.Free()
	defer h.Free()
	if err := keyInputs("Uniform", key, l, h); err != nil {
		return errArray(err)
	}
	s, n := cInts(shape)
	var out C.fgt_array
	return result("Uniform", C.fgt_random_uniform(l.c, h.c, s, n, C.int(dt), cOpt(key), &out), out)
}

// Normal samples N(loc, scale²) of shape in dtype dt.
func Normal(loc, scale float32, dt Dtype, key *Array, shape ...int) *Array {
	if err := keyInputs("Normal", key); err != nil {
		return errArray(err)
	}
	s, n := cInts(shape)
	var out C.fgt_array
	return result("Normal", C.fgt_random_normal(s, n, C.int(dt), C.float(loc), C.float(scale), cOpt(key), &out), out)
}

// Bernoulli samples booleans that are true with probability p.
func Bernoulli(p float64, key *Array, shape ...int) *Array {
	pa := Scalar(p, Float32)
	defer pa.Free()
	if err := keyInputs("Bernoulli", key, pa); err != nil {
		return errArray(err)
	}
	s, n := cInts(shape)
	var out C.fgt_array
	return result("Bernoulli", C.fgt_random_bernoulli(pa.c, s, n, cOpt(key), &out), out)
}

// Categorical samples indices along axis from unnormalised log-probabilities.
func Categorical(logits *Array, axis int, key *Array) *Array {
	if err := keyInputs("Categorical", key, logits); err != nil {
		return errArray(err)
	}
	var out C.fgt_array
	return result("Categorical", C.fgt_random_categorical(logits.c, C.int(axis), cOpt(key), &out), out)
}
