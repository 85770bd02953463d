package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/fungtrain/fungtrain/mlx"
)

func init() { subcommands = append(subcommands, newLaunchCmd) }

// envDistBackend tells a launched fungtrain command which backend to join
// with; without it (started by mlx.launch or by hand) it joins with "any".
const envDistBackend = "FUNGTRAIN_DIST_BACKEND"

type launchFlags struct {
	n         int
	backend   string
	hostfile  string
	rank      int
	port      int
	ncclPort  int
	grace     time.Duration
	ssh       bool
	exec      bool
	env       []string
	printOnly bool
}

func newLaunchCmd() *cobra.Command {
	var f launchFlags
	cmd := &cobra.Command{
		Use:   "launch -n N [--backend ring|nccl|any] [--hostfile hosts.json [--rank R | --ssh]] -- COMMAND...",
		Short: "Run a fungtrain command as N ranks of one distributed group",
		Long: `Run a fungtrain command (for example "train --config run.yaml") as the
ranks of one MLX distributed group, with the environment MLX's backends
read (the same as mlx.launch sets).

On one machine, -n N starts N processes: over the ring backend (TCP on
loopback ports; CPU and Apple silicon) or NCCL (CUDA; one GPU per rank
through CUDA_VISIBLE_DEVICES). "any" picks NCCL when this MLX build has it,
else the ring. Each line of output is prefixed with "[rank N]". If a rank
fails, the others get SIGTERM, then SIGKILL after --grace, and launch exits
non-zero.

With --hostfile (mlx.launch's JSON format: a list of hosts, or an object
with "hosts", "backend" and "envs"; each host is {"ssh": NAME, "ips":
[IPv4, ...]}, one rank per entry), run "launch --hostfile hosts.json
--rank R -- COMMAND" on each host by hand, or pass --ssh to start every
rank over ssh (the binary, the hostfile and the working directory must be
at the same paths on every host). Without either, launch prints the
command each host must run.

--exec runs COMMAND as a program rather than a fungtrain subcommand.`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return runLaunch(cmd, f, args) },
	}
	fl := cmd.Flags()
	fl.IntVarP(&f.n, "n", "n", 0, "number of ranks on this machine (without --hostfile)")
	fl.StringVar(&f.backend, "backend", "", "ring, nccl or any (default: the hostfile's, else any)")
	fl.StringVar(&f.hostfile, "hostfile", "", "hosts of a group across machines (mlx.launch's JSON format)")
	fl.IntVar(&f.rank, "rank", -1, "with --hostfile: start only this rank, here")
	fl.IntVar(&f.port, "port", 0, "ring: first port, one more per rank and address (default: free ports; with --hostfile 32323)")
	fl.IntVar(&f.ncclPort, "nccl-port", 0, "nccl: rank 0's port for sharing the NCCL id (default: a free port; with --hostfile 12345)")
	fl.DurationVar(&f.grace, "grace", 15*time.Second, "after a rank fails, how long the others get to stop before SIGKILL")
	fl.BoolVar(&f.ssh, "ssh", false, "with --hostfile: start the ranks of other hosts over ssh")
	fl.BoolVar(&f.exec, "exec", false, "COMMAND is a program, not a fungtrain subcommand")
	fl.StringArrayVar(&f.env, "env", nil, "KEY=VALUE for every rank (repeatable)")
	fl.BoolVar(&f.printOnly, "print", false, "print each rank's command and environment and start nothing")
	return cmd
}

// rankPlan is how to start one rank.
type rankPlan struct {
	rank int
	host string   // the hostfile's ssh name; "" on this machine
	env  []string // KEY=VALUE added to the inherited environment
}

// launchPlan is the whole group.
type launchPlan struct {
	backend string
	ring    mlx.RingHostfile // the ring's addresses (ring only)
	ranks   []rankPlan
}

// launchHost is one entry of an mlx.launch hostfile: one rank.
type launchHost struct {
	SSH string   `json:"ssh"`
	IPs []string `json:"ips"`
}

type launchHostfile struct {
	Backend string       `json:"backend"`
	Envs    []string     `json:"envs"`
	Hosts   []launchHost `json:"hosts"`
}

// readLaunchHostfile reads mlx.launch's hostfile: a list of hosts or an
// object with "hosts" (and optionally "backend" and "envs").
func readLaunchHostfile(path string) (launchHostfile, error) {
	var hf launchHostfile
	b, err := os.ReadFile(path)
	if err != nil {
		return hf, fmt.Errorf("hostfile: %w", err)
	}
	trimmed := strings.TrimSpace(string(b))
	if strings.HasPrefix(trimmed, "[") {
		err = json.Unmarshal(b, &hf.Hosts)
	} else {
		dec := json.NewDecoder(strings.NewReader(trimmed))
		dec.DisallowUnknownFields()
		err = dec.Decode(&struct {
			*launchHostfile
			RDMA any `json:"rdma"`
		}{launchHostfile: &hf})
	}
	if err != nil {
		return hf, fmt.Errorf("hostfile %s: want a JSON list of {\"ssh\": NAME, \"ips\": [IPv4]} or an object with \"hosts\": %w", path, err)
	}
	if len(hf.Hosts) == 0 {
		return hf, fmt.Errorf("hostfile %s: no hosts", path)
	}
	for i, h := range hf.Hosts {
		if h.SSH == "" && len(h.IPs) == 0 {
			return hf, fmt.Errorf("hostfile %s: host %d has neither \"ssh\" nor \"ips\"", path, i)
		}
	}
	for _, e := range hf.Envs {
		if k, _, ok := strings.Cut(e, "="); !ok || k == "" {
			return hf, fmt.Errorf("hostfile %s: env %q: want KEY=VALUE", path, e)
		}
	}
	return hf, nil
}

// resolveBackend turns "any" into the backend the ranks will use: NCCL when
// this MLX build has it (CUDA), else the ring, as mlx.launch does.
func resolveBackend(b string) (string, error) {
	switch b {
	case "ring", "nccl":
		return b, nil
	case "", "any":
		if mlx.DistributedAvailable("nccl") {
			return "nccl", nil
		}
		return "ring", nil
	}
	return "", fmt.Errorf("launch: backend %q: want ring, nccl or any (for MPI use mpirun)", b)
}

// baseEnv is what every rank of a group of size n gets.
func baseEnv(backend string, rank, n int) []string {
	return []string{mlx.EnvRank + "=" + strconv.Itoa(rank), mlx.EnvWorldSize + "=" + strconv.Itoa(n), envDistBackend + "=" + backend}
}

// planLocal plans n ranks on this machine. ports are the ring's (one per
// rank); ncclPort is rank 0's; visible is this process's
// CUDA_VISIBLE_DEVICES ("" for all), whose r-th entry rank r gets.
func planLocal(n int, backend string, ports []int, ncclPort int, visible string) (launchPlan, error) {
	p := launchPlan{backend: backend}
	var gpus []string
	if visible != "" {
		gpus = strings.Split(visible, ",")
		if backend == "nccl" && n > len(gpus) {
			return p, fmt.Errorf("launch: %d NCCL ranks need %d GPUs, but CUDA_VISIBLE_DEVICES=%s lists %d", n, n, visible, len(gpus))
		}
	}
	for r := range n {
		rp := rankPlan{rank: r, env: baseEnv(backend, r, n)}
		switch backend {
		case "ring":
			p.ring = append(p.ring, []string{fmt.Sprintf("127.0.0.1:%d", ports[r])})
		case "nccl":
			gpu := strconv.Itoa(r)
			if gpus != nil {
				gpu = strings.TrimSpace(gpus[r])
			}
			rp.env = append(rp.env, mlx.EnvNCCLHost+"=127.0.0.1", mlx.EnvNCCLPort+"="+strconv.Itoa(ncclPort), "CUDA_VISIBLE_DEVICES="+gpu)
		}
		p.ranks = append(p.ranks, rp)
	}
	return p, nil
}

// planHosts plans one rank per hostfile entry. The ring listens on each
// host's IPs from port up, one port per rank and address; NCCL meets at
// the first IP of rank 0 and gives each rank the next GPU of its host.
func planHosts(hf launchHostfile, backend string, port, ncclPort int) (launchPlan, error) {
	p := launchPlan{backend: backend}
	n := len(hf.Hosts)
	perHost := map[string]int{}
	for r, h := range hf.Hosts {
		rp := rankPlan{rank: r, host: h.SSH, env: baseEnv(backend, r, n)}
		if isLocalHost(h.SSH) {
			rp.host = ""
		}
		switch backend {
		case "ring":
			if len(h.IPs) == 0 {
				return p, fmt.Errorf("launch: hostfile host %d (%s) has no \"ips\": the ring needs each host's IPv4 addresses", r, h.SSH)
			}
			var addrs []string
			for _, ip := range h.IPs {
				addrs = append(addrs, fmt.Sprintf("%s:%d", ip, port))
				port++
			}
			p.ring = append(p.ring, addrs)
		case "nccl":
			if len(hf.Hosts[0].IPs) == 0 {
				return p, errors.New("launch: hostfile host 0 has no \"ips\": NCCL's ranks meet at rank 0's first IP")
			}
			rp.env = append(rp.env, mlx.EnvNCCLHost+"="+hf.Hosts[0].IPs[0], mlx.EnvNCCLPort+"="+strconv.Itoa(ncclPort),
				"CUDA_VISIBLE_DEVICES="+strconv.Itoa(perHost[h.SSH]))
			perHost[h.SSH]++
		}
		rp.env = append(rp.env, hf.Envs...)
		p.ranks = append(p.ranks, rp)
	}
	if backend == "ring" {
		if err := p.ring.Validate(); err != nil {
			return p, fmt.Errorf("launch: hostfile: %w", err)
		}
	}
	return p, nil
}

// isLocalHost reports whether a hostfile's ssh name is this machine.
func isLocalHost(name string) bool {
	switch name {
	case "", "localhost", "127.0.0.1", "::1":
		return true
	}
	h, err := os.Hostname()
	return err == nil && name == h
}

// freeLoopbackPorts asks the OS for n ports that are free now.
func freeLoopbackPorts(n int) ([]int, error) {
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("launch: find a free port: %w", err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func runLaunch(cmd *cobra.Command, f launchFlags, args []string) error {
	if len(args) == 0 {
		return errors.New("launch: no command: put it after --, e.g. fungtrain launch -n 2 -- train --config run.yaml")
	}
	for _, e := range f.env {
		if k, _, ok := strings.Cut(e, "="); !ok || k == "" {
			return fmt.Errorf("launch: --env %q: want KEY=VALUE", e)
		}
	}
	plan, err := makePlan(f)
	if err != nil {
		return err
	}
	for i := range plan.ranks {
		plan.ranks[i].env = append(plan.ranks[i].env, f.env...)
	}
	if f.hostfile != "" && f.rank < 0 && !f.ssh && !f.printOnly && slices.ContainsFunc(plan.ranks, func(r rankPlan) bool { return r.host != "" }) {
		return printHostCommands(cmd, f, args)
	}
	if f.printOnly {
		return printPlan(cmd, plan, args)
	}
	return startPlan(cmd, f, plan, args)
}

func makePlan(f launchFlags) (launchPlan, error) {
	if f.hostfile == "" {
		if f.rank >= 0 || f.ssh {
			return launchPlan{}, errors.New("launch: --rank and --ssh need --hostfile")
		}
		if f.n < 1 {
			return launchPlan{}, fmt.Errorf("launch: -n %d: want at least 1 rank (or --hostfile)", f.n)
		}
		backend, err := resolveBackend(f.backend)
		if err != nil {
			return launchPlan{}, err
		}
		if f.n == 1 {
			return launchPlan{backend: "none", ranks: []rankPlan{{rank: 0}}}, nil
		}
		ports, err := freeLoopbackPorts(f.n + 1)
		if err != nil {
			return launchPlan{}, err
		}
		ringPorts, ncclPort := ports[:f.n], ports[f.n]
		if f.port > 0 {
			ringPorts = make([]int, f.n)
			for i := range ringPorts {
				ringPorts[i] = f.port + i
			}
		}
		if f.ncclPort > 0 {
			ncclPort = f.ncclPort
		}
		return planLocal(f.n, backend, ringPorts, ncclPort, os.Getenv("CUDA_VISIBLE_DEVICES"))
	}
	if f.n != 0 {
		return launchPlan{}, errors.New("launch: -n and --hostfile exclude each other: the hostfile has one entry per rank")
	}
	hf, err := readLaunchHostfile(f.hostfile)
	if err != nil {
		return launchPlan{}, err
	}
	backend, err := resolveBackend(cmpOr(f.backend, hf.Backend))
	if err != nil {
		return launchPlan{}, err
	}
	if f.rank >= len(hf.Hosts) {
		return launchPlan{}, fmt.Errorf("launch: --rank %d but hostfile %s has %d hosts (ranks 0..%d)", f.rank, f.hostfile, len(hf.Hosts), len(hf.Hosts)-1)
	}
	plan, err := planHosts(hf, backend, cmpOr(f.port, 32323), cmpOr(f.ncclPort, 12345))
	if err != nil {
		return plan, err
	}
	if f.rank >= 0 {
		plan.ranks = []rankPlan{plan.ranks[f.rank]}
		plan.ranks[0].host = ""
	}
	return plan, nil
}

func cmpOr[T comparable](a, b T) T {
	var zero T
	if a != zero {
		return a
	}
	return b
}

// printHostCommands prints the command each host runs to join the group.
func printHostCommands(cmd *cobra.Command, f launchFlags, args []string) error {
	abs, err := filepath.Abs(f.hostfile)
	if err != nil {
		return err
	}
	hf, err := readLaunchHostfile(f.hostfile)
	if err != nil {
		return err
	}
	w := cmd.OutOrStdout()
	fmt.Fprintf(w, "Nothing started. Run on each host (with the same hostfile and files at the same paths), or pass --ssh:\n")
	for r, h := range hf.Hosts {
		fmt.Fprintf(w, "  %s: %s\n", cmpOr(h.SSH, "this host"), shellJoin(joinCommand(f, abs, r, args)))
	}
	return nil
}

// joinCommand is the launch command that starts rank r of a hostfile.
func joinCommand(f launchFlags, hostfile string, r int, args []string) []string {
	c := []string{selfPath(), "launch", "--hostfile", hostfile, "--rank", strconv.Itoa(r)}
	if f.backend != "" {
		c = append(c, "--backend", f.backend)
	}
	if f.port > 0 {
		c = append(c, "--port", strconv.Itoa(f.port))
	}
	if f.ncclPort > 0 {
		c = append(c, "--nccl-port", strconv.Itoa(f.ncclPort))
	}
	if f.exec {
		c = append(c, "--exec")
	}
	for _, e := range f.env {
		c = append(c, "--env", e)
	}
	return append(append(c, "--"), args...)
}

func printPlan(cmd *cobra.Command, plan launchPlan, args []string) error {
	w := cmd.OutOrStdout()
	fmt.Fprintf(w, "backend %s, %d rank(s)\n", plan.backend, len(plan.ranks))
	if plan.ring != nil {
		b, _ := json.Marshal(plan.ring)
		fmt.Fprintf(w, "ring hostfile: %s\n", b)
	}
	for _, r := range plan.ranks {
		fmt.Fprintf(w, "[rank %d] %s %s\n", r.rank, strings.Join(r.env, " "), shellJoin(args))
	}
	return nil
}

// shellJoin quotes args for a POSIX shell.
func shellJoin(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		if a != "" && strings.IndexFunc(a, func(c rune) bool {
			return !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("-_./=:,@%+", c))
		}) < 0 {
			q[i] = a
			continue
		}
		q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(q, " ")
}
