package main

import (
	"cmp"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/fungtrain/fungtrain/mlx"
)

func init() { subcommands = append(subcommands, newDistcheckCmd) }

type distcheckFlags struct {
	backend  string
	rounds   int
	mib      float64
	interval time.Duration
	timeout  time.Duration
	failRank int
}

func newDistcheckCmd() *cobra.Command {
	f := distcheckFlags{failRank: -1}
	cmd := &cobra.Command{
		Use:   "distcheck [--rounds N] [--mib M]",
		Short: "Check a distributed set-up: join the group, all-sum, report each rank's device",
		Long: `Join the distributed group that the environment describes (as set by
"fungtrain launch" or mlx.launch), check that every rank runs the same
fungtrain, print each rank's backend, device and host, and all-sum a
float32 array of --mib MiB --rounds times, checking the sum and timing it.
Run it under launch before a long distributed run:

  fungtrain launch -n 2 -- distcheck`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return runDistcheck(cmd, f) },
	}
	fl := cmd.Flags()
	fl.StringVar(&f.backend, "backend", "", "backend to join with (default: $"+envDistBackend+", else any)")
	fl.IntVar(&f.rounds, "rounds", 3, "number of all-sums")
	fl.Float64Var(&f.mib, "mib", 4, "size of each all-sum in MiB")
	fl.DurationVar(&f.interval, "interval", 0, "pause between rounds")
	fl.DurationVar(&f.timeout, "timeout", 2*time.Minute, "bound on joining and on each all-sum; past it the rank exits with status 124")
	fl.IntVar(&f.failRank, "fail-rank", -1, "this rank exits with an error after joining (to test failure handling)")
	fl.MarkHidden("fail-rank")
	return cmd
}

// distributedConfig is how fungtrain commands join the group: the backend
// from the flag, the launcher's variable, else any; strictly when the
// environment asks for a group, so a misconfigured rank fails instead of
// running alone.
func distributedConfig(backend string, timeout time.Duration) mlx.DistributedConfig {
	return mlx.DistributedConfig{
		Backend:     cmp.Or(backend, os.Getenv(envDistBackend), "any"),
		Strict:      mlx.DistributedRequested(),
		InitTimeout: timeout, Timeout: timeout,
	}
}

// rankDevice describes where this rank computes, for run metadata.
func rankDevice() string {
	d := fmt.Sprintf("%s (%s", mlx.DefaultDevice(), mlx.Backend())
	if v := os.Getenv("CUDA_VISIBLE_DEVICES"); v != "" && mlx.Backend() == "cuda" {
		d += ", CUDA_VISIBLE_DEVICES=" + v
	}
	host, _ := os.Hostname()
	return d + ") on " + host
}

func runDistcheck(cmd *cobra.Command, f distcheckFlags) error {
	if f.rounds < 0 || f.mib <= 0 {
		return fmt.Errorf("distcheck: --rounds %d, --mib %g: want rounds ≥ 0 and a positive size", f.rounds, f.mib)
	}
	w := cmd.OutOrStdout()
	return mlx.Do(func() error {
		g, err := mlx.InitDistributed(distributedConfig(f.backend, f.timeout))
		if err != nil {
			return err
		}
		defer g.Free()
		fmt.Fprintf(w, "%s, pid %d, %s\n", g, os.Getpid(), rankDevice())
		if g.Rank() == f.failRank {
			return fmt.Errorf("distcheck: rank %d fails on purpose (--fail-rank)", g.Rank())
		}
		build := version
		if commit != version {
			build += " (" + commit + ")"
		}
		about, err := g.GatherBytes([]byte(build + "\x00" + rankDevice()))
		if err != nil {
			return err
		}
		for r, a := range about {
			ver, dev, _ := cutByte(a, 0)
			if g.Rank() == 0 {
				fmt.Fprintf(w, "rank %d: fungtrain %s, %s\n", r, ver, dev)
			}
			if mine, _, _ := cutByte(about[g.Rank()], 0); ver != mine {
				return fmt.Errorf("distcheck: rank %d runs fungtrain %s, this rank %s: run the same build everywhere", r, ver, mine)
			}
		}
		n := max(1, int(f.mib*(1<<20)/4))
		want := float32(g.Size() * (g.Size() + 1) / 2)
		for round := 1; round <= f.rounds; round++ {
			if err := allSumRound(w, g, round, n, want); err != nil {
				return err
			}
			time.Sleep(f.interval)
		}
		return nil
	})
}

// allSumRound all-sums n float32 values of rank+1 and checks every element
// is 1+2+…+size.
func allSumRound(w interface{ Write([]byte) (int, error) }, g *mlx.Group, round, n int, want float32) error {
	s := mlx.NewScope()
	defer s.Close()
	x := mlx.Full(float64(g.Rank()+1), mlx.Float32, n)
	if err := mlx.Eval(x); err != nil {
		return err
	}
	start := time.Now()
	sum := g.AllSum(x)
	if err := g.Eval(sum); err != nil {
		return fmt.Errorf("distcheck round %d: %w", round, err)
	}
	took := time.Since(start)
	v, err := sum.Float32s()
	if err != nil {
		return err
	}
	for i, x := range v {
		if x != want {
			return fmt.Errorf("distcheck round %d: element %d of the all-sum is %v, want %v", round, i, x, want)
		}
	}
	mib := float64(4*n) / (1 << 20)
	fmt.Fprintf(w, "round %d: all_sum of %.1f MiB = %g on every element (want %g), %.1f ms, %.2f GB/s\n",
		round, mib, v[0], want, took.Seconds()*1e3, float64(4*n)/took.Seconds()/1e9)
	return nil
}

func cutByte(b []byte, sep byte) (before, after string, found bool) {
	for i, c := range b {
		if c == sep {
			return string(b[:i]), string(b[i+1:]), true
		}
	}
	return string(b), "", false
}
