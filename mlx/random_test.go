package mlx

import (
	"fmt"
	"math"
	"slices"
	"testing"
)

func moments(v []float64) (mean, std float64) {
	for _, x := range v {
		mean += x
	}
	mean /= float64(len(v))
	for _, x := range v {
		std += (x - mean) * (x - mean)
	}
	return mean, math.Sqrt(std / float64(len(v)))
}

func TestRandomKeys(t *testing.T) {
	inMLX(t, func() error {
		read := func(a *Array) []float64 {
			v, err := a.Float64s()
			if err != nil {
				t.Error(err)
			}
			return v
		}
		a := read(Uniform(0, 1, Float32, RandomKey(42), 64))
		b := read(Uniform(0, 1, Float32, RandomKey(42), 64))
		c := read(Uniform(0, 1, Float32, RandomKey(43), 64))
		if !slices.Equal(a, b) {
			t.Errorf("same key, different uniforms")
		}
		if slices.Equal(a, c) {
			t.Errorf("keys 42 and 43 give the same uniforms")
		}
		n1 := read(Normal(0, 1, Float32, RandomKey(7), 32))
		if err := RandomSeed(1234); err != nil {
			return err
		}
		n2 := read(Normal(0, 1, Float32, RandomKey(7), 32))
		if !slices.Equal(n1, n2) {
			t.Errorf("keyed normals depend on the global seed")
		}
		// Split keys: shape (n, 2) uint32, each different, each repeatable.
		keys := RandomSplit(RandomKey(5), 3)
		if !equalInts(keys.Shape(), []int{3, 2}) || keys.Dtype() != Uint32 {
			t.Errorf("split keys: %v", keys)
		}
		var rows [][]float64
		for i := range 3 {
			k := Squeeze(SliceAxis(keys, 0, i, i+1), 0)
			rows = append(rows, read(Uniform(0, 1, Float32, k, 16)))
		}
		if slices.Equal(rows[0], rows[1]) || slices.Equal(rows[1], rows[2]) {
			t.Errorf("split keys give equal streams")
		}
		again := read(Uniform(0, 1, Float32, Squeeze(SliceAxis(RandomSplit(RandomKey(5), 3), 0, 1, 2), 0), 16))
		if !slices.Equal(again, rows[1]) {
			t.Errorf("split is not repeatable")
		}
		// The global generator: reseeding repeats the stream.
		if err := RandomSeed(99); err != nil {
			return err
		}
		g1 := read(Uniform(0, 1, Float32, nil, 32))
		g1b := read(Uniform(0, 1, Float32, nil, 32))
		if err := RandomSeed(99); err != nil {
			return err
		}
		g2 := read(Uniform(0, 1, Float32, nil, 32))
		if !slices.Equal(g1, g2) || slices.Equal(g1, g1b) {
			t.Errorf("global generator: reseed repeats %v, successive draws differ %v", slices.Equal(g1, g2), !slices.Equal(g1, g1b))
		}
		return nil
	})
}

// The statistical checks allow 5 standard errors over n samples.
func TestRandomDistributions(t *testing.T) {
	const n = 100000
	inMLX(t, func() error {
		lo, hi := -2.0, 3.0
		u := Uniform(lo, hi, Float32, RandomKey(1), n)
		uv, err := values(u, []int{n})
		if err != nil {
			return err
		}
		if u.Dtype() != Float32 {
			t.Errorf("uniform dtype %s", u.Dtype())
		}
		if mn, mx := minF(uv), maxF(uv); mn < lo || mx >= hi || mn > lo+0.01 || mx < hi-0.01 {
			t.Errorf("uniform range [%v, %v], want within and filling [%v, %v)", mn, mx, lo, hi)
		}
		m, s := moments(uv)
		wantStd := (hi - lo) / math.Sqrt(12)
		if se := wantStd / math.Sqrt(n); math.Abs(m-(lo+hi)/2) > 5*se || math.Abs(s-wantStd) > 5*wantStd/math.Sqrt(2*n)*1.2 {
			t.Errorf("uniform mean %.4f std %.4f, want %.4f %.4f", m, s, (lo+hi)/2, wantStd)
		}

		for _, dt := range []Dtype{Float32, BFloat16} {
			nr := Normal(1.5, 2, dt, RandomKey(2), n)
			if nr.Dtype() != dt {
				t.Errorf("normal dtype %s, want %s", nr.Dtype(), dt)
			}
			nv, err := values(nr, []int{n})
			if err != nil {
				return err
			}
			m, s := moments(nv)
			if math.Abs(m-1.5) > 5*2/math.Sqrt(n)+0.01*b2f(dt == BFloat16) || math.Abs(s-2) > 5*2/math.Sqrt(2*n)+0.01*b2f(dt == BFloat16) {
				t.Errorf("normal %s: mean %.4f std %.4f, want 1.5 2", dt, m, s)
			}
			// Tails: about 4.55% beyond 2σ.
			out := 0
			for _, v := range nv {
				if math.Abs(v-1.5) > 4 {
					out++
				}
			}
			if p := float64(out) / n; math.Abs(p-0.0455) > 5*math.Sqrt(0.0455*0.9545/n) {
				t.Errorf("normal %s: %.4f beyond 2σ, want 0.0455", dt, p)
			}
		}

		bern := Bernoulli(0.3, RandomKey(3), n)
		if bern.Dtype() != Bool {
			t.Errorf("bernoulli dtype %s", bern.Dtype())
		}
		bv, err := values(bern, []int{n})
		if err != nil {
			return err
		}
		if rate := meanF(bv); math.Abs(rate-0.3) > 5*math.Sqrt(0.3*0.7/n) {
			t.Errorf("bernoulli rate %.4f, want 0.3", rate)
		}

		logits := []float64{0.5, -1, 2, 0, 1.2}
		probs := append([]float64{}, logits...)
		softmaxLane(probs)
		cat := Categorical(BroadcastTo(arr(logits, Float32, 1, 5), n, 5), -1, RandomKey(4))
		cv, err := values(cat, []int{n})
		if err != nil {
			return err
		}
		counts := make([]float64, 5)
		for _, c := range cv {
			if c < 0 || c > 4 || c != math.Trunc(c) {
				return fmt.Errorf("categorical sample %v", c)
			}
			counts[int(c)]++
		}
		for i, p := range probs {
			if f := counts[i] / n; math.Abs(f-p) > 5*math.Sqrt(p*(1-p)/n) {
				t.Errorf("categorical class %d: frequency %.4f, softmax %.4f", i, f, p)
			}
		}
		// Categorical along axis 0 of (V, batch) logits.
		cat0 := Categorical(Transpose(BroadcastTo(arr(logits, Float32, 1, 5), 2000, 5)), 0, RandomKey(5))
		if !equalInts(cat0.Shape(), []int{2000}) {
			t.Errorf("categorical axis 0 shape %v", cat0.Shape())
		}
		return nil
	})
}
