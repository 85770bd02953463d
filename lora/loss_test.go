package lora

import (
	"math"
	"testing"
)

// TestChunkedLossSameUpdate: the chunked, checkpointed cross-entropy
// (loss_chunk 3: several chunks per sequence, the last one short)
// gives the same update and gradient norm as the whole-sequence loss.
func TestChunkedLossSameUpdate(t *testing.T) {
	train := loadSplit(t, t.TempDir(), "train", trainPairs[:4])
	ref, refNorm := oneStepWith(t, train, 4, 1, false, 0, 0)
	got, norm := oneStepWith(t, train, 4, 1, false, 0, 3)
	scale := maxAbs(ref)
	diff := maxAbsDiff(got, ref)
	t.Logf("chunked vs whole: max |update difference| %.3g of %.3g; grad norm %.7g vs %.7g", diff, scale, norm, refNorm)
	if scale == 0 || diff > 1e-5*scale {
		t.Errorf("chunked loss changes the update by %g (largest update %g)", diff, scale)
	}
	if math.Abs(norm-refNorm) > 1e-5*refNorm {
		t.Errorf("chunked loss gradient norm %v, whole %v", norm, refNorm)
	}
}
