package bench

import (
	"fmt"
	"path/filepath"

	"github.com/fungtrain/fungtrain/llama"
)

// WriteGGUF writes the dense checkpoint in src as a GGUF file whose
// matrices are Q4_0 or Q8_0 (typ "q4_0" or "q8_0"), through the exporter
// `fungtrain export gguf` uses, so a benchmark trains on the file users
// get. It carries no tokenizer: it is a base to measure training on. Call
// it on the MLX thread.
func WriteGGUF(src, dst, typ string) error {
	if typ != "q4_0" && typ != "q8_0" {
		return fmt.Errorf("gguf type %q: want q4_0 or q8_0", typ)
	}
	t, err := llama.ParseGGUFType(typ)
	if err != nil {
		return err
	}
	m, err := llama.LoadModel(src, llama.LoadOptions{Dequantize: "yes"})
	if err != nil {
		return err
	}
	defer m.Free()
	return llama.WriteGGUF(m, dst, llama.GGUFExportOptions{Type: t, Name: filepath.Base(src)})
}
