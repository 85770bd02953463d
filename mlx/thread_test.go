package mlx

import (
	"errors"
	"strings"
	"testing"
)

// TestCall checks that Call runs its function on the owner thread and hands
// back the function's own value and error, from any goroutine and from
// inside Do.
func TestCall(t *testing.T) {
	errBoom := errors.New("boom")
	cases := []struct {
		name    string
		f       func() (float64, error)
		want    float64
		wantErr string
	}{
		{"value computed by MLX", func() (float64, error) {
			s := NewScope()
			defer s.Close()
			return Sum(Multiply(FromFloat32s([]float32{1, 2, 3}, 3), Full(2, Float32, 3)), false).Item()
		}, 12, ""},
		{"error passed through", func() (float64, error) { return 0, errBoom }, 0, "boom"},
		{"value kept beside an error", func() (float64, error) { return 7, errBoom }, 7, "boom"},
		{"MLX error", func() (float64, error) {
			s := NewScope()
			defer s.Close()
			return Add(Zeros(Float32, 2), Zeros(Float32, 3)).Item()
		}, 0, "Add"},
		{"panic", func() (float64, error) { panic("kaboom") }, 0, "kaboom"},
		{"runs on the owner thread", func() (float64, error) {
			if !OnOwnerThread() {
				return 0, errors.New("ran off the owner thread")
			}
			return 1, nil
		}, 1, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Call(tc.f)
			if tc.wantErr == "" && err != nil {
				t.Fatalf("error %v", err)
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
			}
			if got != tc.want {
				t.Errorf("value %v, want %v", got, tc.want)
			}
		})
	}
}
