package main

import (
	"github.com/fungtrain/fungtrain/llama"
	"github.com/fungtrain/fungtrain/serve"
)

// serveConstraints builds the response_format constraints of serve.
var serveConstraints func(*llama.Tokenizer) (serve.ConstraintFactory, error)
