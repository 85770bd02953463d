package mlx

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
)

// The environment MLX's backends read (and mlx.launch sets).
const (
	EnvRank      = "MLX_RANK"       // this process's rank
	EnvHostfile  = "MLX_HOSTFILE"   // ring: path of a RingHostfile
	EnvWorldSize = "MLX_WORLD_SIZE" // nccl: number of ranks
	EnvNCCLHost  = "NCCL_HOST_IP"   // nccl: rank 0's address, where it shares the NCCL id
	EnvNCCLPort  = "NCCL_PORT"      // nccl: the port of that address
)

// RingHostfile is the ring backend's hostfile (the JSON file MLX_HOSTFILE
// names): for each rank in order, the "ip:port" addresses it listens on,
// one connection per address.
type RingHostfile [][]string

// ReadRingHostfile reads and validates a ring hostfile.
func ReadRingHostfile(path string) (RingHostfile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("ring hostfile: %w", err)
	}
	var h RingHostfile
	if err := json.Unmarshal(b, &h); err != nil {
		return nil, fmt.Errorf("ring hostfile %s: want a JSON list with one list of \"ip:port\" strings per rank: %w", path, err)
	}
	if err := h.Validate(); err != nil {
		return nil, fmt.Errorf("ring hostfile %s: %w", path, err)
	}
	return h, nil
}

// Validate checks what MLX's ring needs: two ranks or more, each with the
// same number (≥ 1) of IPv4 "ip:port" addresses, no address twice.
func (h RingHostfile) Validate() error {
	if len(h) < 2 {
		return fmt.Errorf("%d ranks: the ring needs at least 2 (one process needs no hostfile)", len(h))
	}
	seen := map[string]int{}
	for r, addrs := range h {
		if len(addrs) == 0 {
			return fmt.Errorf("rank %d has no address", r)
		}
		if len(addrs) != len(h[0]) {
			return fmt.Errorf("rank %d has %d addresses and rank 0 has %d: the ring needs the same number on every rank", r, len(addrs), len(h[0]))
		}
		for _, a := range addrs {
			if err := checkRingAddress(a); err != nil {
				return fmt.Errorf("rank %d: %w", r, err)
			}
			if prev, dup := seen[a]; dup {
				return fmt.Errorf("rank %d: address %s is also rank %d's", r, a, prev)
			}
			seen[a] = r
		}
	}
	return nil
}

func checkRingAddress(a string) error {
	ap, err := netip.ParseAddrPort(a)
	if err != nil || !ap.Addr().Is4() || ap.Port() == 0 {
		return fmt.Errorf("address %q: want an IPv4 \"ip:port\" such as \"192.168.1.2:32323\"", a)
	}
	return nil
}

// envInt reads an integer variable; ok is false when it is unset.
func envInt(name string) (v int, ok bool, err error) {
	s := os.Getenv(name)
	if s == "" {
		return 0, false, nil
	}
	v, err = strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		return 0, true, fmt.Errorf("%s=%q: not an integer", name, s)
	}
	return v, true, nil
}

// CheckDistributedEnv checks the variables the backend will read, so that a
// mistake gets an error naming the variable or file instead of MLX parsing
// garbage (it reads ranks with atoi). Unset variables are left to MLX,
// which falls back to a size-1 group or, when strict, says what is missing.
func CheckDistributedEnv(backend string) error {
	rank, rankSet, err := envInt(EnvRank)
	if err != nil {
		return err
	}
	if rankSet && rank < 0 {
		return fmt.Errorf("%s=%d: a rank is ≥ 0", EnvRank, rank)
	}
	if path := os.Getenv(EnvHostfile); path != "" && (backend == "ring" || backend == "any") {
		h, err := ReadRingHostfile(path)
		if err != nil {
			return fmt.Errorf("%s: %w", EnvHostfile, err)
		}
		if rankSet && rank >= len(h) {
			return fmt.Errorf("%s=%d but the ring hostfile %s lists %d ranks", EnvRank, rank, path, len(h))
		}
	}
	if backend == "nccl" || backend == "any" {
		size, sizeSet, err := envInt(EnvWorldSize)
		if err != nil {
			return err
		}
		if sizeSet && (size < 1 || rankSet && rank >= size) {
			return fmt.Errorf("%s=%d with %s=%d: want 0 ≤ rank < world size", EnvWorldSize, size, EnvRank, rank)
		}
		port, portSet, err := envInt(EnvNCCLPort)
		if err != nil {
			return err
		}
		if portSet && (port < 1 || port > 65535) {
			return fmt.Errorf("%s=%d: not a TCP port", EnvNCCLPort, port)
		}
	}
	return nil
}

// describeEnv names the distributed variables that are set, for messages.
func describeEnv() string {
	var parts []string
	for _, k := range []string{EnvRank, EnvWorldSize, EnvHostfile, EnvNCCLHost, EnvNCCLPort} {
		if v, ok := os.LookupEnv(k); ok {
			parts = append(parts, k+"="+v)
		}
	}
	if len(parts) == 0 {
		return "no MLX_RANK or hostfile set"
	}
	return strings.Join(parts, " ")
}

// DistributedRequested reports whether the environment asks for a group
// (a launcher set MLX_RANK, MLX_HOSTFILE or MLX_WORLD_SIZE). A program
// should then join strictly: falling back to a size-1 group would train
// alone and write as if it were the only rank.
func DistributedRequested() bool {
	for _, k := range []string{EnvRank, EnvHostfile, EnvWorldSize} {
		if os.Getenv(k) != "" {
			return true
		}
	}
	return false
}
