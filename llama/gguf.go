package llama

import "github.com/fungtrain/fungtrain/internal/gguf"

// GGUF files are read, checked and written by internal/gguf; these names
// keep the llama package's earlier GGUF API for its callers.

// GGUFInfo is a GGUF file's header: metadata and tensor infos.
type GGUFInfo = gguf.Info

// ReadGGUFInfo reads the header, metadata and tensor infos of a GGUF file.
func ReadGGUFInfo(path string) (*GGUFInfo, error) { return gguf.ReadInfo(path) }

// GGMLType is a GGUF tensor's element type.
type GGMLType = gguf.TensorType

// Tensor types named by callers of the llama package.
const (
	GGMLTypeF32  = gguf.F32
	GGMLTypeF16  = gguf.F16
	GGMLTypeBF16 = gguf.BF16
	GGMLTypeQ4_0 = gguf.Q4_0
	GGMLTypeQ4_1 = gguf.Q4_1
	GGMLTypeQ8_0 = gguf.Q8_0
	GGMLTypeQ4_K = gguf.Q4_K
	GGMLTypeQ6_K = gguf.Q6_K
)
