// Package eval scores generated answers against reference answers and runs
// paired base-versus-adapter evaluations.
//
// The scoring functions are pure and model-independent: length against the
// reference, formatting (bold, lists, paragraphs) and whether it matches the
// reference's, EOS versus running out of tokens, refusals, meta-references
// to the source material ("the transcript", "the video", ...) and ROUGE-L F1.
// RunPaired drives two [Generator]s over the same questions and collects a
// [Result], which can be written as JSON ([Result.WriteJSON]) or rendered as
// markdown ([Result.Markdown]). An optional [Judge] adds an LLM-judge score
// through any OpenAI-compatible chat completions endpoint.
//
// docs/EVAL.md describes every metric and the JSON format.
package eval
