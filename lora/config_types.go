package lora

import (
	"encoding/json"
	"fmt"
	"strconv"

	"gopkg.in/yaml.v3"
)

// MicroBatch is training.micro_batch: auto, or how many examples run
// together as one compute batch.
type MicroBatch int

// MicroBatchAuto packs a step's examples by the token budget
// (training.micro_batch_tokens).
const MicroBatchAuto MicroBatch = 0

func (m MicroBatch) String() string {
	if m == MicroBatchAuto {
		return "auto"
	}
	return strconv.Itoa(int(m))
}

// yamlWant says what the config takes, for errors.
func (MicroBatch) yamlWant() string { return `auto or a positive integer` }

func parseMicroBatch(s string) (MicroBatch, error) {
	if s == "auto" {
		return MicroBatchAuto, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		return 0, fmt.Errorf("want %s, got %q", MicroBatch(0).yamlWant(), s)
	}
	return MicroBatch(n), nil
}

// UnmarshalYAML reads auto or a positive integer.
func (m *MicroBatch) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode || (n.ShortTag() != "!!str" && n.ShortTag() != "!!int") {
		return fmt.Errorf("want %s", m.yamlWant())
	}
	v, err := parseMicroBatch(n.Value)
	if err != nil {
		return err
	}
	*m = v
	return nil
}

// MarshalYAML writes auto or the number.
func (m MicroBatch) MarshalYAML() (any, error) {
	if m == MicroBatchAuto {
		return "auto", nil
	}
	return int(m), nil
}

// MarshalJSON writes "auto" or the number.
func (m MicroBatch) MarshalJSON() ([]byte, error) {
	if m == MicroBatchAuto {
		return []byte(`"auto"`), nil
	}
	return json.Marshal(int(m))
}

// UnmarshalJSON reads "auto" or a positive integer.
func (m *MicroBatch) UnmarshalJSON(b []byte) error {
	var s string
	if json.Unmarshal(b, &s) == nil {
		v, err := parseMicroBatch(s)
		*m = v
		return err
	}
	var n int
	if err := json.Unmarshal(b, &n); err != nil || n < 1 {
		return fmt.Errorf("micro_batch: want %s, got %s", m.yamlWant(), b)
	}
	*m = MicroBatch(n)
	return nil
}
