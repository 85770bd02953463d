package main

import (
	"fmt"
	"runtime"

	"github.com/spf13/cobra"

	"github.com/fungtrain/fungtrain/mlx"
)

func init() { subcommands = append(subcommands, newVersionCmd) }

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the fungtrain and MLX versions, the backend and the default device",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var mlxVersion, backend string
			var device mlx.Device
			err := mlx.Do(func() error {
				mlxVersion, backend, device = mlx.Version(), mlx.Backend(), mlx.DefaultDevice()
				return nil
			})
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			_, err = fmt.Fprintf(w, "fungtrain %s (commit %s, %s, %s/%s)\nMLX %s\nbackend: %s\ndefault device: %s\n",
				version, commit, runtime.Version(), runtime.GOOS, runtime.GOARCH, mlxVersion, backend, device)
			return err
		},
	}
}
