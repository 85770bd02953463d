// Command fungtrain fine-tunes Llama 3.x models with LoRA on MLX.
//
// Every subcommand is a thin layer over the packages data, lora, llama and
// mlx; this package only parses flags, sets up logging and wires them.
package main

import (
	"errors"
	"os"
)

func main() {
	cmd, err := newRootCmd().ExecuteC()
	if err != nil {
		printError(os.Stderr, cmd, err)
		os.Exit(exitCode(err))
	}
}

// exitCode is 1 for an error, unless the error carries its own code (the
// data stages' codes, see data_outcome.go).
func exitCode(err error) int {
	var coded interface{ ExitCode() int }
	if errors.As(err, &coded) {
		return coded.ExitCode()
	}
	return 1
}
