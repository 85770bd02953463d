package main

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// allowedImports is docs/ARCHITECTURE.md's layer table: the project
// packages each package may import. Imports go one way, downwards.
var allowedImports = map[string][]string{
	"cmd/fungtrain":       {"bench", "data", "eval", "hub", "internal/atomicfile", "internal/gguf", "internal/progress", "llama", "lora", "mlx", "report", "serve", "traindata"},
	"serve":               {"llama", "llama/constrain", "lora", "mlx"},
	"bench":               {"internal/atomicfile", "llama", "lora", "mlx", "traindata"},
	"data":                {"internal/atomicfile", "internal/jsonl", "internal/progress"},
	"hub":                 {"internal/progress"},
	"hub/hubtest":         {},
	"eval":                {"internal/atomicfile"},
	"report":              {"eval"},
	"lora":                {"internal/atomicfile", "internal/progress", "llama", "mlx", "traindata"},
	"traindata":           {"internal/jsonl", "llama"},
	"llama":               {"internal/atomicfile", "internal/gguf", "mlx"},
	"llama/constrain":     {},
	"mlx":                 {"internal/gguf"},
	"internal/atomicfile": {},
	"internal/gguf":       {"internal/atomicfile"},
	"internal/jsonl":      {},
	"internal/progress":   {},
	"internal/lockedbuf":  {},
	"internal/testenv":    {},
}

// TestPackageLayers checks every package's project imports (tests
// excluded) against allowedImports, so a new edge is a deliberate change
// of the table and the doc.
func TestPackageLayers(t *testing.T) {
	const mod = "github.com/fungtrain/fungtrain/"
	cmd := exec.Command("go", "list", "-f", `{{.ImportPath}} {{join .Imports " "}}`, "./...")
	cmd.Dir = "../.."
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	seen := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		pkg := strings.TrimPrefix(fields[0], mod)
		allowed, ok := allowedImports[pkg]
		if !ok {
			t.Errorf("package %s is not in docs/ARCHITECTURE.md's layer table (allowedImports)", pkg)
			continue
		}
		seen++
		for _, imp := range fields[1:] {
			if dep, ours := strings.CutPrefix(imp, mod); ours && !slices.Contains(allowed, dep) {
				t.Errorf("%s imports %s, which its layer may not", pkg, dep)
			}
		}
	}
	if seen < 10 {
		t.Fatalf("go list named %d known packages; want all of them:\n%s", seen, out)
	}
}
