// Package lora implements LoRA adapters over llama models and the trainer:
// AdamW, token-weighted gradient accumulation over length-packed compute
// batches, data-parallel training across ranks, evaluation, checkpoints
// and exact resume.
//
// One file per concern:
//
//	layer.go, adapters.go   the adapter layer; placing, saving, loading and fusing adapters
//	settings.go             the adapter settings (rank, scale, dropout, which layers)
//	config.go               the YAML run file (config_validate.go: its values; config_keys.go: its keys;
//	                        config_types.go: micro_batch)
//	trainer.go              Trainer: NewTrainer, Step, Evaluate
//	run.go                  Run: the loop of steps, evaluations and checkpoints
//	report.go               the report window (train lines) and summary.json
//	stepper.go, queue.go    one optimizer step: its compiled functions; queuing its batches, the update, the next step
//	layout.go               the argument lists of the step's MLX functions
//	distributed.go          what changes with several ranks: sharing rank 0's state, checks, metadata
//	reduce.go               the collectives: the step's all-reduce, broadcasts, agreeing on errors
//	forward.go              the forward pass as training runs it (gradient checkpointing)
//	loss.go                 the fused LM head and cross-entropy
//	optim.go                AdamW, clipping, the learning-rate schedule
//	batches.go              the data order: cursor → the step's examples → this rank's compute batches
//	checkpoint.go           checkpoints and resume
//	rundir.go               what a new run or a resume may find in output.dir
//	records.go              run_metadata.json, config.yaml, metrics.jsonl
package lora
