package bench

import (
	"fmt"

	"github.com/fungtrain/fungtrain/llama"
)

// DefaultPeakTFLOPs is the dense bf16 tensor-core peak of an H100 or H200
// SXM (989 TFLOP/s, without sparsity): the denominator of model FLOP
// utilisation unless --peak-tflops says otherwise.
const DefaultPeakTFLOPs = 989

// FLOPs is the model FLOP count of one LoRA training token: the work the
// model needs, not what the implementation does (recomputation under
// gradient checkpointing, padding and the optimizer are not counted).
//
//   - Forward: 2 FLOPs per weight of every matrix the token passes through
//     (the 7 projections of each block and the LM head; the embedding is a
//     lookup), plus attention: QKᵀ and AV cost 2·heads·head_dim FLOPs each
//     per attended position.
//   - Backward: the base weights are frozen, so only activation gradients
//     flow, and only down to the first adapted block: 2 FLOPs per weight of
//     the blocks from there up and of the LM head, plus twice the forward
//     attention FLOPs of those blocks (dQ, dK from dS; dV, dP).
//   - LoRA: each adapter (in→r→out) costs 2·r·(in+out) forward, as much for
//     its input gradient and as much for its weight gradients.
//
// This is the count of /work/shared/NOTES.md "Ceilings" (2P forward + 2P'
// backward; about 9.6 GFLOP per token for Llama-3.2-3B with the mission's
// LoRA) plus attention and the adapters.
type FLOPs struct {
	Forward   float64 `json:"forward"`   // matrices, forward
	Backward  float64 `json:"backward"`  // matrices, activation gradients
	Attention float64 `json:"attention"` // QKᵀ and AV, forward and backward
	LoRA      float64 `json:"lora"`      // adapters, forward and backward
	Total     float64 `json:"total"`
}

// TrainFLOPsPerToken counts the FLOPs of one training token of a model of
// config c with adapters on keys (module paths) of the last loraLayers
// blocks (-1: all) of rank r, when tokens attend on average meanContext
// positions (Stats.MeanAttention; (L+1)/2 for sequences of L inputs).
func TrainFLOPsPerToken(c *llama.Config, keys []string, loraLayers, rank int, meanContext float64) (FLOPs, error) {
	D, I, V := float64(c.HiddenSize), float64(c.IntermediateSize), float64(c.VocabSize)
	qo, kvo := float64(c.NumHeads*c.HeadDim), float64(c.NumKVHeads*c.HeadDim)
	shapes := map[string][2]float64{ // in, out
		"self_attn.q_proj": {D, qo}, "self_attn.k_proj": {D, kvo}, "self_attn.v_proj": {D, kvo},
		"self_attn.o_proj": {qo, D}, "mlp.gate_proj": {D, I}, "mlp.up_proj": {D, I}, "mlp.down_proj": {I, D},
	}
	block := 0.0
	for _, p := range llama.ModulePaths {
		block += shapes[p][0] * shapes[p][1]
	}
	L := float64(c.NumLayers)
	adapted := float64(loraLayers)
	if loraLayers < 0 || loraLayers > c.NumLayers {
		adapted = L
	}
	var f FLOPs
	f.Forward = 2 * (L*block + V*D)
	f.Backward = 2 * (adapted*block + V*D)
	attnPerLayer := 4 * qo * meanContext // 2·heads·head_dim per position, for QKᵀ and for AV
	f.Attention = attnPerLayer * (L + 2*adapted)
	for _, k := range keys {
		s, ok := shapes[k]
		if !ok {
			return f, fmt.Errorf("FLOP count: unknown LoRA key %q", k)
		}
		f.LoRA += 3 * 2 * float64(rank) * (s[0] + s[1]) * adapted
	}
	f.Total = f.Forward + f.Backward + f.Attention + f.LoRA
	return f, nil
}

// MFU is achieved FLOP/s over the peak: tokens/s × FLOPs per token over
// peakTFLOPs·10¹².
func MFU(tokensPerSec, flopsPerToken, peakTFLOPs float64) float64 {
	if peakTFLOPs <= 0 {
		return 0
	}
	return tokensPerSec * flopsPerToken / (peakTFLOPs * 1e12)
}
