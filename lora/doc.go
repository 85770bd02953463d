// Package lora implements LoRA adapters over llama models and the trainer:
// AdamW, gradient accumulation, evaluation, checkpoints and exact resume.
//
// One file per concern:
//
//	layer.go, adapters.go   the adapter layer; placing, saving, loading and fusing adapters
//	config.go               the YAML run file
//	trainer.go              Trainer: NewTrainer, Step, Evaluate
//	run.go                  Run: the loop of steps, evaluations and checkpoints
//	report.go               the report window (train lines) and summary.json
//	stepper.go, queue.go    one optimizer step: gradients, accumulation, update; the step queued ahead
//	layout.go               the argument lists of the step's MLX functions
//	forward.go              the forward pass as training runs it (gradient checkpointing)
//	loss.go                 the fused LM head and cross-entropy
//	optim.go                AdamW, clipping, the learning-rate schedule
//	batches.go              the data order: micro-batch cursor → batch
//	checkpoint.go           checkpoints and resume
//	records.go              run_metadata.json, config.yaml, metrics.jsonl
package lora
