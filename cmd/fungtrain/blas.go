package main

import (
	"log/slog"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
)

// slowBLASWarning is logged when MLX's matrix products on the CPU go to
// the reference BLAS that the mlx-cpu wheel bundles (see
// docs/TROUBLESHOOTING.md, "Slow CPU runs").
const slowBLASWarning = "matrix products run on the reference BLAS bundled with mlx-cpu, 20-100x slower than OpenBLAS: " +
	"rebuild with ./build.sh build (it installs OpenBLAS and links it ahead of libmlx), and do not set FUNGTRAIN_NO_OPENBLAS"

// computeCommands are the commands whose speed depends on the BLAS, and
// version, where a user checks the set-up.
var computeCommands = map[string]bool{"train": true, "generate": true, "eval": true, "bench": true, "serve": true, "version": true}

// warnSlowBLAS logs slowBLASWarning when cmd computes and the process
// resolved cblas_sgemm to a reference BLAS.
func warnSlowBLAS(cmd *cobra.Command) {
	if !computeCommands[topCommand(cmd)] {
		return
	}
	if lib := sgemmLibrary(); isReferenceBLAS(lib) {
		slog.Warn(slowBLASWarning, "cblas_sgemm", lib)
	}
}

// isReferenceBLAS tells the netlib reference BLAS (libblas.so, as the
// mlx-cpu wheel bundles it: mlx_cpu.libs/libblas-<hash>.so.3) from an
// optimised one. Debian's alternatives may install OpenBLAS as
// .../openblas-pthread/libblas.so.3, so links are followed and a path
// that names OpenBLAS is optimised.
func isReferenceBLAS(lib string) bool {
	if lib == "" {
		return false
	}
	if real, err := filepath.EvalSymlinks(lib); err == nil {
		lib = real
	}
	if strings.Contains(strings.ToLower(lib), "openblas") {
		return false
	}
	base := filepath.Base(lib)
	return strings.HasPrefix(base, "libblas") || strings.HasPrefix(base, "libcblas")
}

// topCommand is the name of the subcommand of the root that cmd is, or
// is under ("export" for "export gguf").
func topCommand(cmd *cobra.Command) string {
	for cmd.HasParent() && cmd.Parent().HasParent() {
		cmd = cmd.Parent()
	}
	return cmd.Name()
}
