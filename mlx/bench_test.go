package mlx

import (
	"testing"
)

// benchOnOwner runs body on the MLX owner thread with x, a small evaluated
// float32 array.
func benchOnOwner(b *testing.B, body func(b *testing.B, x *Array) error) {
	b.Helper()
	err := Do(func() error {
		x := FromFloat32s([]float32{1, 2, 3, 4}, 4)
		defer x.Free()
		if err := Eval(x); err != nil {
			return err
		}
		b.ReportAllocs()
		b.ResetTimer()
		err := body(b, x)
		b.StopTimer()
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
}

// BenchmarkAddScalarOverhead is the cost of one trivial op from Go through
// the shim and back, graph building only (no eval): AddScalar makes a
// scalar and an add node (2 shim calls), then the scalar and, at scope
// close, the result are freed (2 more).
func BenchmarkAddScalarOverhead(b *testing.B) {
	benchOnOwner(b, func(b *testing.B, x *Array) error {
		for i := 0; i < b.N; i++ {
			s := NewScope()
			y := AddScalar(x, 1)
			if err := y.Err(); err != nil {
				return err
			}
			s.Close()
		}
		return nil
	})
}

// BenchmarkAddOverhead is one binary op node plus its free: the smallest
// op round trip.
func BenchmarkAddOverhead(b *testing.B) {
	benchOnOwner(b, func(b *testing.B, x *Array) error {
		for i := 0; i < b.N; i++ {
			s := NewScope()
			y := Add(x, x)
			if err := y.Err(); err != nil {
				return err
			}
			s.Close()
		}
		return nil
	})
}

// BenchmarkAddScalarEval adds Eval of the result: MLX's scheduling and the
// CPU kernel of a 4-element add.
func BenchmarkAddScalarEval(b *testing.B) {
	benchOnOwner(b, func(b *testing.B, x *Array) error {
		for i := 0; i < b.N; i++ {
			s := NewScope()
			y := AddScalar(x, 1)
			if err := Eval(y); err != nil {
				return err
			}
			s.Close()
		}
		return nil
	})
}

// BenchmarkDoRoundTrip is the cost of handing an empty job to the owner
// thread from another goroutine (the server's path).
func BenchmarkDoRoundTrip(b *testing.B) {
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if err := Do(func() error { return nil }); err != nil {
			b.Fatal(err)
		}
	}
}
