package mlx

import "math"

// float64 references for the op tests, written from the ops' definitions.

func normAxis(ax, nd int) int {
	if ax < 0 {
		ax += nd
	}
	return ax
}

func mapRef(x tensor, f func(float64) float64) tensor {
	out := newTensor(x.shape...)
	for i, v := range x.data {
		out.data[i] = f(v)
	}
	return out
}

// broadcastShape is numpy's broadcast of shapes.
func broadcastShape(shapes ...[]int) []int {
	nd := 0
	for _, s := range shapes {
		nd = max(nd, len(s))
	}
	out := make([]int, nd)
	for i := range out {
		out[i] = 1
	}
	for _, s := range shapes {
		for i, d := range s {
			j := nd - len(s) + i
			if d != 1 {
				out[j] = d
			}
		}
	}
	return out
}

// bcastAt reads x at coordinate c of a broadcast result shape.
func bcastAt(x tensor, c []int) float64 {
	off := len(c) - len(x.shape)
	idx := 0
	for i, d := range x.shape {
		ci := c[off+i]
		if d == 1 {
			ci = 0
		}
		idx = idx*d + ci
	}
	return x.data[idx]
}

func zipRef(f func(v []float64) float64, xs ...tensor) tensor {
	shapes := make([][]int, len(xs))
	for i, x := range xs {
		shapes[i] = x.shape
	}
	out := newTensor(broadcastShape(shapes...)...)
	v := make([]float64, len(xs))
	for i := range out.data {
		c := unravel(i, out.shape)
		for j, x := range xs {
			v[j] = bcastAt(x, c)
		}
		out.data[i] = f(v)
	}
	return out
}

func broadcastRef(x tensor, shape []int) tensor {
	out := newTensor(shape...)
	for i := range out.data {
		out.data[i] = bcastAt(x, unravel(i, shape))
	}
	return out
}

// reduceRef applies f to the values along axes (all when axes is empty),
// in row-major order.
func reduceRef(x tensor, axes []int, keep bool, f func([]float64) float64) tensor {
	nd := len(x.shape)
	red := make([]bool, nd)
	if len(axes) == 0 {
		for i := range red {
			red[i] = true
		}
	}
	for _, a := range axes {
		red[normAxis(a, nd)] = true
	}
	var outShape, keptShape []int
	for i, d := range x.shape {
		if red[i] {
			keptShape = append(keptShape, 1)
			if keep {
				outShape = append(outShape, 1)
			}
		} else {
			keptShape = append(keptShape, d)
			outShape = append(outShape, d)
		}
	}
	buckets := make([][]float64, numel(keptShape))
	for i, v := range x.data {
		c := unravel(i, x.shape)
		for d := range c {
			if red[d] {
				c[d] = 0
			}
		}
		k := ravel(c, keptShape)
		buckets[k] = append(buckets[k], v)
	}
	out := tensor{shape: outShape, data: make([]float64, len(buckets))}
	if outShape == nil {
		out.shape = []int{}
	}
	for i, b := range buckets {
		out.data[i] = f(b)
	}
	return out
}

func sumF(v []float64) float64 {
	s := 0.0
	for _, x := range v {
		s += x
	}
	return s
}

func meanF(v []float64) float64 { return sumF(v) / float64(len(v)) }

func maxF(v []float64) float64 {
	m := math.Inf(-1)
	for _, x := range v {
		m = math.Max(m, x)
	}
	return m
}

func minF(v []float64) float64 {
	m := math.Inf(1)
	for _, x := range v {
		m = math.Min(m, x)
	}
	return m
}

func prodF(v []float64) float64 {
	p := 1.0
	for _, x := range v {
		p *= x
	}
	return p
}

func argmaxF(v []float64) float64 {
	best := 0
	for i, x := range v {
		if x > v[best] {
			best = i
		}
	}
	return float64(best)
}

func argminF(v []float64) float64 {
	best := 0
	for i, x := range v {
		if x < v[best] {
			best = i
		}
	}
	return float64(best)
}

func logsumexpF(v []float64) float64 {
	m := maxF(v)
	s := 0.0
	for _, x := range v {
		s += math.Exp(x - m)
	}
	return m + math.Log(s)
}

func allF(v []float64) float64 {
	for _, x := range v {
		if x == 0 {
			return 0
		}
	}
	return 1
}

func anyF(v []float64) float64 {
	for _, x := range v {
		if x != 0 {
			return 1
		}
	}
	return 0
}

// alongAxis calls f on every 1-D lane of x along axis; f writes the lane's
// result in place of its input.
func alongAxis(x tensor, axis int, f func(lane []float64)) tensor {
	axis = normAxis(axis, len(x.shape))
	out := tensor{shape: x.shape, data: append([]float64{}, x.data...)}
	st := strides(x.shape)
	n := x.shape[axis]
	lane := make([]float64, n)
	for i := range x.data {
		if unravel(i, x.shape)[axis] != 0 {
			continue
		}
		for j := 0; j < n; j++ {
			lane[j] = out.data[i+j*st[axis]]
		}
		f(lane)
		for j := 0; j < n; j++ {
			out.data[i+j*st[axis]] = lane[j]
		}
	}
	return out
}

func softmaxLane(l []float64) {
	m := maxF(l)
	s := 0.0
	for i := range l {
		l[i] = math.Exp(l[i] - m)
		s += l[i]
	}
	for i := range l {
		l[i] /= s
	}
}

func logSoftmaxLane(l []float64) {
	lse := logsumexpF(l)
	for i := range l {
		l[i] -= lse
	}
}

func cumsumRef(x tensor, axis int, reverse, inclusive bool) tensor {
	return alongAxis(x, axis, func(l []float64) {
		n := len(l)
		in := append([]float64{}, l...)
		acc := 0.0
		for k := 0; k < n; k++ {
			j := k
			if reverse {
				j = n - 1 - k
			}
			if inclusive {
				acc += in[j]
				l[j] = acc
			} else {
				l[j] = acc
				acc += in[j]
			}
		}
	})
}

// matmulRef multiplies (..., M, K) by (..., K, N) with broadcast batch axes.
func matmulRef(a, b tensor) tensor {
	na, nb := len(a.shape), len(b.shape)
	M, K, N := a.shape[na-2], a.shape[na-1], b.shape[nb-1]
	batch := broadcastShape(a.shape[:na-2], b.shape[:nb-2])
	out := newTensor(append(append([]int{}, batch...), M, N)...)
	for i := range out.data {
		c := unravel(i, out.shape)
		bc := c[:len(batch)]
		m, n := c[len(batch)], c[len(batch)+1]
		s := 0.0
		for k := 0; k < K; k++ {
			s += bcastAt(a, append(append([]int{}, bc...), m, k)) * bcastAt(b, append(append([]int{}, bc...), k, n))
		}
		out.data[i] = s
	}
	return out
}

// absMatmulRef is |a|·|b|, the scale of rounding errors in a·b.
func absMatmulRef(a, b tensor) tensor {
	abs := func(x float64) float64 { return math.Abs(x) }
	return matmulRef(mapRef(a, abs), mapRef(b, abs))
}

func transposeRef(x tensor, perm []int) tensor {
	shape := make([]int, len(perm))
	for i, p := range perm {
		shape[i] = x.shape[p]
	}
	out := newTensor(shape...)
	src := make([]int, len(perm))
	for i := range out.data {
		c := unravel(i, shape)
		for j, p := range perm {
			src[p] = c[j]
		}
		out.data[i] = x.data[ravel(src, x.shape)]
	}
	return out
}

func sliceRef(x tensor, start, stop, step []int) tensor {
	shape := make([]int, len(x.shape))
	for i := range shape {
		shape[i] = (stop[i] - start[i] + step[i] - 1) / step[i]
	}
	out := newTensor(shape...)
	src := make([]int, len(shape))
	for i := range out.data {
		c := unravel(i, shape)
		for d := range c {
			src[d] = start[d] + c[d]*step[d]
		}
		out.data[i] = x.data[ravel(src, x.shape)]
	}
	return out
}

func sliceUpdateRef(x, upd tensor, start, step []int) tensor {
	out := tensor{shape: x.shape, data: append([]float64{}, x.data...)}
	dst := make([]int, len(x.shape))
	for i, v := range upd.data {
		c := unravel(i, upd.shape)
		for d := range c {
			dst[d] = start[d] + c[d]*step[d]
		}
		out.data[ravel(dst, x.shape)] = v
	}
	return out
}

func concatRef(xs []tensor, axis int) tensor {
	axis = normAxis(axis, len(xs[0].shape))
	shape := append([]int{}, xs[0].shape...)
	shape[axis] = 0
	for _, x := range xs {
		shape[axis] += x.shape[axis]
	}
	out := newTensor(shape...)
	for i := range out.data {
		c := unravel(i, shape)
		k := c[axis]
		for _, x := range xs {
			if k < x.shape[axis] {
				c[axis] = k
				out.data[i] = x.data[ravel(c, x.shape)]
				break
			}
			k -= x.shape[axis]
		}
	}
	return out
}

func reshapeRef(x tensor, shape ...int) tensor {
	return tensor{shape: shape, data: x.data}
}

func triRef(x tensor, k int, upper bool) tensor {
	out := newTensor(x.shape...)
	cols := x.shape[len(x.shape)-1]
	rows := x.shape[len(x.shape)-2]
	for i, v := range x.data {
		c := i % cols
		r := (i / cols) % rows
		if (!upper && c-r <= k) || (upper && c-r >= k) {
			out.data[i] = v
		}
	}
	return out
}

// rmsNormRef normalises the last axis; w may be nil.
func rmsNormRef(x tensor, w []float64, eps float64) tensor {
	return alongAxis(x, -1, func(l []float64) {
		ms := 0.0
		for _, v := range l {
			ms += v * v
		}
		r := 1 / math.Sqrt(ms/float64(len(l))+eps)
		for i := range l {
			l[i] *= r
			if w != nil {
				l[i] *= w[i]
			}
		}
	})
}

// ropeRef rotates x of shape (..., L, D): position p = (offset + l)·scale,
// pair i turns by p·invFreq[i]. traditional pairs (2i, 2i+1); otherwise
// (i, i + dims/2). Features past dims pass through.
func ropeRef(x tensor, dims int, traditional bool, invFreq []float64, scale float64, offset int) tensor {
	nd := len(x.shape)
	L, D := x.shape[nd-2], x.shape[nd-1]
	out := tensor{shape: x.shape, data: append([]float64{}, x.data...)}
	half := dims / 2
	for row := 0; row < len(x.data)/D; row++ {
		l := row % L
		p := float64(offset+l) * scale
		base := row * D
		for i := 0; i < half; i++ {
			var a, b int
			if traditional {
				a, b = base+2*i, base+2*i+1
			} else {
				a, b = base+i, base+i+half
			}
			th := p * invFreq[i]
			c, s := math.Cos(th), math.Sin(th)
			x1, x2 := x.data[a], x.data[b]
			out.data[a] = x1*c - x2*s
			out.data[b] = x1*s + x2*c
		}
	}
	return out
}

func ropeInvFreq(base float64, dims int) []float64 {
	f := make([]float64, dims/2)
	for i := range f {
		f[i] = math.Pow(base, -2*float64(i)/float64(dims))
	}
	return f
}

// sdpaRef is softmax(q·kᵀ·scale + mask)·v for q (B, H, Lq, D), k and v
// (B, Hk, Lk, D), with query head h reading kv head h/(H/Hk). causal masks
// key j > i + Lk - Lq; mask (broadcast to (B, H, Lq, Lk)) is additive.
func sdpaRef(q, k, v tensor, scale float64, causal bool, mask *tensor) tensor {
	B, H, Lq, D := q.shape[0], q.shape[1], q.shape[2], q.shape[3]
	Hk, Lk := k.shape[1], k.shape[2]
	out := newTensor(B, H, Lq, D)
	sc := make([]float64, Lk)
	for b := 0; b < B; b++ {
		for h := 0; h < H; h++ {
			hk := h / (H / Hk)
			for i := 0; i < Lq; i++ {
				for j := 0; j < Lk; j++ {
					s := 0.0
					for d := 0; d < D; d++ {
						s += q.at(b, h, i, d) * k.at(b, hk, j, d)
					}
					s *= scale
					if mask != nil {
						s += bcastAt(*mask, []int{b, h, i, j})
					}
					if causal && j > i+Lk-Lq {
						s = math.Inf(-1)
					}
					sc[j] = s
				}
				softmaxLane(sc)
				for d := 0; d < D; d++ {
					o := 0.0
					for j := 0; j < Lk; j++ {
						o += sc[j] * v.at(b, hk, j, d)
					}
					out.data[ravel([]int{b, h, i, d}, out.shape)] = o
				}
			}
		}
	}
	return out
}
