package mlx

import (
	"fmt"
	"math/rand"
	"testing"
)

// TestRopeOffsets checks that rotating a batch with one starting position
// per row equals rotating each row alone at its position (the float64
// reference of TestRope), and that equal offsets agree with Rope.
func TestRopeOffsets(t *testing.T) {
	const H, D = 3, 16
	for _, trad := range []bool{false, true} {
		for _, c := range []struct {
			L       int
			offsets []int32
		}{{1, []int32{3, 0, 17}}, {4, []int32{0, 9, 2}}, {1, []int32{5}}} {
			t.Run(fmt.Sprintf("traditional=%v/L=%d/offsets=%v", trad, c.L, c.offsets), func(t *testing.T) {
				B := len(c.offsets)
				r := rand.New(rand.NewSource(int64(B*10 + c.L)))
				x := genTensor(r, genNormal, Float32, B, H, c.L, D)
				inv := ropeInvFreq(10000, D)
				cfg := RoPE{Dims: D, Traditional: trad, Base: 10000, Scale: 1}
				inMLX(t, func() error {
					got := RopeOffsets(arr(x.data, Float32, x.shape...), cfg, FromInt32s(c.offsets, B))
					rows, err := Split(got, B, 0)
					if err != nil {
						return err
					}
					n := H * c.L * D
					for b, off := range c.offsets {
						xb := tensor{shape: []int{1, H, c.L, D}, data: x.data[b*n : (b+1)*n]}
						want := ropeRef(xb, D, trad, inv, 1, int(off))
						if err := check(rows[b], want, 2e-5, 2e-5); err != nil {
							t.Errorf("row %d (offset %d): %v", b, off, err)
						}
					}
					return nil
				})
			})
		}
	}
}
