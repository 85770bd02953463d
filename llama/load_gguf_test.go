package llama

import (
	"bytes"
	"math"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fungtrain/fungtrain/internal/gguf"
	"github.com/fungtrain/fungtrain/mlx"
)

// arrayBytes evaluates a and returns its dtype, shape and raw bytes.
func arrayBytes(t *testing.T, a *mlx.Array) (mlx.Dtype, []int, []byte) {
	t.Helper()
	b, err := a.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	return a.Dtype(), a.Shape(), b
}

// TestGGUFTensorsMatchMLXLoader: fungtrain's Go GGUF tensor reader makes
// bit for bit the arrays MLX's own GGUF loader makes (dtype, shape and
// bytes of weight, scales and biases), on the real SmolLM2 file (Q4_1, Q8_0
// and F32 tensors) and on a file of random Q4_0, Q8_0, F16 and F32 tensors.
func TestGGUFTensorsMatchMLXLoader(t *testing.T) {
	r := rand.New(rand.NewSource(14))
	w := gguf.NewWriter()
	w.Set("general.architecture", gguf.String("llama"))
	for _, typ := range []gguf.TensorType{gguf.Q4_0, gguf.Q8_0, gguf.F16, gguf.F32, gguf.Q4_1} {
		data := make([]byte, 3*64/32*typ.TypeSize()*32/typ.BlockSize())
		r.Read(data)
		if typ != gguf.F32 && typ != gguf.F16 {
			// Keep the float16 scales finite, as a quantizer writes them.
			bs := int(typ.TypeSize())
			for b := 0; b < len(data)/bs; b++ {
				data[b*bs+1] &= 0x3b
				if typ == gguf.Q4_1 {
					data[b*bs+3] &= 0x3b
				}
			}
		}
		if err := w.AddTensorBytes("t_"+typ.String(), typ, []int64{3, 64}, data); err != nil {
			t.Fatal(err)
		}
	}
	synthetic := filepath.Join(t.TempDir(), "types.gguf")
	if err := w.WriteFile(synthetic); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{requireAsset(t, smolLM2GGUF), synthetic} {
		t.Run(filepath.Base(path), func(t *testing.T) {
			info, err := gguf.ReadInfo(path)
			if err != nil {
				t.Fatal(err)
			}
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			doMLX(t, func() error {
				s := mlx.NewScope()
				defer s.Close()
				ref, err := mlx.LoadGGUF(path)
				if err != nil {
					return err
				}
				defer ref.Free()
				types := map[gguf.TensorType]int{}
				for _, ti := range info.Tensors {
					raw, err := info.ReadTensor(f, ti)
					if err != nil {
						return err
					}
					arrays, err := ggufArrays(ti, raw)
					if err != nil {
						return err
					}
					types[ti.Type]++
					base := strings.TrimSuffix(ti.Name, ".weight")
					for part, a := range arrays {
						name := base + "." + part
						if part == "weight" {
							name = ti.Name
						}
						want, ok := ref.Tensors[name]
						if !ok {
							t.Errorf("%s: MLX's loader has no %s", ti.Name, name)
							continue
						}
						gd, gs, gb := arrayBytes(t, a)
						wd, ws, wb := arrayBytes(t, want)
						if gd != wd || !equalShape(gs, ws) || !bytes.Equal(gb, wb) {
							t.Errorf("%s (%s): fungtrain %s %v, MLX %s %v, bytes equal %v", name, ti.Type, gd, gs, wd, ws, bytes.Equal(gb, wb))
						}
					}
				}
				t.Logf("compared tensors by type: %v", types)
				return nil
			})
		})
	}
}

// TestGGUFBF16Loads: BF16 tensors load as bfloat16 with every value kept,
// where MLX's GGUF loader turns them into float16 and values past 65504
// into infinities.
func TestGGUFBF16Loads(t *testing.T) {
	src := []float32{1, -2.5, 3.140625, 1e-3, 65504, 1e5, -3e38, 0.1}
	data, err := gguf.Encode(nil, gguf.BF16, src)
	if err != nil {
		t.Fatal(err)
	}
	w := gguf.NewWriter()
	w.Set("general.architecture", gguf.String("llama"))
	w.AddTensorBytes("x", gguf.BF16, []int64{8}, data)
	path := filepath.Join(t.TempDir(), "bf16.gguf")
	if err := w.WriteFile(path); err != nil {
		t.Fatal(err)
	}
	info, err := gguf.ReadInfo(path)
	if err != nil {
		t.Fatal(err)
	}
	doMLX(t, func() error {
		s := mlx.NewScope()
		defer s.Close()
		arrays, err := ggufArrays(info.Tensors[0], data)
		if err != nil {
			return err
		}
		got, err := arrays["weight"].Float32s()
		if err != nil {
			return err
		}
		if arrays["weight"].Dtype() != mlx.BFloat16 {
			t.Errorf("dtype %s, want bfloat16", arrays["weight"].Dtype())
		}
		for i, x := range src {
			if want := mlx.ToBF16(x).Float32(); got[i] != want {
				t.Errorf("value %d: %g, want %g", i, got[i], want)
			}
		}
		ref, err := mlx.LoadGGUF(path)
		if err != nil {
			return err
		}
		defer ref.Free()
		viaMLX, _ := mlx.AsType(ref.Tensors["x"], mlx.Float32).Float32s()
		if !math.IsInf(float64(viaMLX[5]), 1) {
			t.Logf("MLX's loader now keeps BF16 (1e5 -> %g); the Go reader is still exact", viaMLX[5])
		}
		return nil
	})
}
