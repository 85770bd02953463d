// Command fungtrain fine-tunes Llama 3.x models with LoRA on MLX.
//
// Every subcommand is a thin layer over the packages data, lora, llama and
// mlx; this package only parses flags, sets up logging and wires them.
package main

import (
	"fmt"
	"os"
)

func main() {
	if err := newRootCmd().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}
