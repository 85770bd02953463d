package mlx

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"math"
	"math/rand"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fungtrain/fungtrain/internal/lockedbuf"
)

// The distributed tests run this test binary as the ranks of a group over
// MLX's ring backend on loopback ports: TestDistributedRank, started with
// distScenarioEnv set, joins the group and plays one scenario.
const (
	distScenarioEnv = "FUNGTRAIN_DIST_TEST_SCENARIO"
	distTimeoutEnv  = "FUNGTRAIN_DIST_TEST_TIMEOUT"
	distBackendEnv  = "FUNGTRAIN_DIST_TEST_BACKEND"
)

// TestDistributedRank is one rank of a distributed test, not a test of
// its own.
func TestDistributedRank(t *testing.T) {
	sc := os.Getenv(distScenarioEnv)
	if sc == "" {
		t.Skip("a rank process that the distributed tests start")
	}
	timeout, err := time.ParseDuration(os.Getenv(distTimeoutEnv))
	if err != nil {
		timeout = 20 * time.Second
	}
	err = Do(func() error {
		backend := cmp.Or(os.Getenv(distBackendEnv), "ring")
		g, err := InitDistributed(DistributedConfig{Backend: backend, Strict: true, InitTimeout: timeout, Timeout: timeout})
		if err != nil {
			return err
		}
		defer g.Free()
		fmt.Printf("joined %s\n", g)
		switch sc {
		case "collectives":
			return rankCollectives(g)
		case "loop":
			return rankLoop(g, 1024)
		case "bigloop":
			return rankLoop(g, 1<<22)
		case "join":
			return nil
		}
		return fmt.Errorf("unknown scenario %q", sc)
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// collectiveCase is one input shape and dtype; every rank's input is
// rankInput(case, rank), so each rank can compute every other's.
type collectiveCase struct {
	name  string
	dt    Dtype
	shape []int
	scale float64
}

var collectiveCases = []collectiveCase{
	{"f32 scalar", Float32, nil, 1},
	{"f32 one element (fewer elements than ranks)", Float32, []int{1}, 1e3},
	{"f32 3x5", Float32, []int{3, 5}, 1e-3},
	{"f32 2x3x4", Float32, []int{2, 3, 4}, 7},
	{"f32 300001 (two transfers each way)", Float32, []int{300001}, 1},
	{"bf16 scalar", BFloat16, nil, 1},
	{"bf16 7x9", BFloat16, []int{7, 9}, 100},
	{"bf16 257x129", BFloat16, []int{257, 129}, 1e-2},
	{"i32 4x4", Int32, []int{4, 4}, 1e6},
}

func rankInput(c int, rank int) []float64 {
	cs := collectiveCases[c]
	r := rand.New(rand.NewSource(int64(1000*c + rank)))
	v := make([]float64, numel(cs.shape))
	for i := range v {
		x := r.NormFloat64() * cs.scale
		if cs.dt == Int32 {
			x = math.Round(x)
		}
		v[i] = roundTo(x, cs.dt)
	}
	return v
}

// ulp is the spacing of dtype dt's values at |v|.
func ulp(v float64, dt Dtype) float64 {
	bits := 23
	if dt == BFloat16 {
		bits = 7
	}
	if v == 0 {
		return math.SmallestNonzeroFloat32
	}
	_, e := math.Frexp(math.Abs(v))
	return math.Ldexp(1, e-1-bits)
}

// rankCollectives checks AllSum, AllMax and AllGather of every case against
// float64 references built from all ranks' inputs, and the host-value
// collectives; it prints one "checked" line per comparison.
func rankCollectives(g *Group) error {
	n := g.Size()
	for c, cs := range collectiveCases {
		s := NewScope()
		x := arr(rankInput(c, g.Rank()), cs.dt, cs.shape...)
		sum, mx, all := g.AllSum(x), g.AllMax(x), g.AllGather(x)
		if err := g.Eval(sum, mx, all); err != nil {
			s.Close()
			return fmt.Errorf("%s: %w", cs.name, err)
		}
		size := numel(cs.shape)
		wantSum, wantMax, absSum := make([]float64, size), make([]float64, size), make([]float64, size)
		var wantAll []float64
		for i := range wantMax {
			wantMax[i] = math.Inf(-1)
		}
		for r := range n {
			in := rankInput(c, r)
			wantAll = append(wantAll, in...)
			for i, v := range in {
				wantSum[i] += v
				absSum[i] += math.Abs(v)
				wantMax[i] = math.Max(wantMax[i], v)
			}
		}
		gotSum, err := values(sum, cs.shape)
		if err == nil {
			err = sumClose(gotSum, wantSum, absSum, cs.dt, n)
		}
		report(cs.name, "all_sum", err)
		report(cs.name, "all_max", checkExact(mx, cs.shape, wantMax))
		gatherShape := []int{n}
		if len(cs.shape) > 0 {
			gatherShape = append([]int{cs.shape[0] * n}, cs.shape[1:]...)
		}
		report(cs.name, "all_gather", checkExact(all, gatherShape, wantAll))
		s.Close()
	}
	_, err := g.Split(0, -1)
	report("ring", "split refused", errMentions(err, "split", "not supported"))
	report("compiled", "all_sum inside compile", rankCompiled(g))
	return rankHostValues(g)
}

// rankCompiled checks a collective inside a compiled function (as a fused
// training step would hold one): f(x) = all_sum(2x) + 1, called twice.
func rankCompiled(g *Group) error {
	c := NewClosure(func(in []*Array) ([]*Array, error) {
		return []*Array{Add(g.AllSum(Multiply(in[0], Scalar(2, Float32))), Scalar(1, Float32))}, nil
	})
	defer c.Free()
	if err := c.Compile(false); err != nil {
		return err
	}
	for call := range 2 {
		x := FromFloat32s([]float32{float32(g.Rank() + call), -1}, 2)
		out, err := c.Call(x)
		if err != nil {
			return err
		}
		if err := g.Eval(out...); err != nil {
			return err
		}
		n := g.Size()
		want := []float64{float64(2*(n*(n-1)/2+n*call) + 1), float64(-2*n + 1)}
		if err := checkExact(out[0], []int{2}, want); err != nil {
			return fmt.Errorf("call %d: %w", call, err)
		}
	}
	return nil
}

// sumClose compares an all_sum over n ranks with the float64 sum. Two
// ranks make one addition: the result must be the exact sum rounded to dt.
// More ranks round each of n-1 partial sums, whose size is at most the sum
// of magnitudes: |got - want| ≤ (n-1)·ulp(Σ|x|). Integers are exact.
func sumClose(got, want, absSum []float64, dt Dtype, n int) error {
	for i := range want {
		tol, ref := 0.0, want[i]
		switch {
		case dt == Int32:
		case n == 2:
			ref = roundTo(want[i], dt)
		default:
			tol = float64(n-1) * ulp(absSum[i], dt)
		}
		if math.Abs(got[i]-ref) > tol {
			return fmt.Errorf("element %d: got %.9g, want %.9g (float64 sum %.9g, tolerance %.3g)", i, got[i], ref, want[i], tol)
		}
	}
	return nil
}

func report(name, op string, err error) {
	if err != nil {
		fmt.Printf("mismatch %s %s: %v\n", name, op, err)
		return
	}
	fmt.Printf("checked %s %s\n", name, op)
}

// rankHostValues checks the exact host-value collectives: rank r
// contributes r+1, 1e16+r (beyond float32), 0.1·(r+1), and r+1 bytes.
func rankHostValues(g *Group) error {
	n, r := g.Size(), g.Rank()
	ints, err := g.SumInts([]int64{int64(r + 1), 1e16 + int64(r)})
	if err != nil {
		return err
	}
	want := []int64{int64(n * (n + 1) / 2), int64(n)*1e16 + int64(n*(n-1)/2)}
	report("host ints", "sum", errUnless(fmt.Sprint(ints) == fmt.Sprint(want), "got %v, want %v", ints, want))
	fl, err := g.SumFloat64s([]float64{0.1 * float64(r+1)})
	if err != nil {
		return err
	}
	wantF := 0.0
	for k := range n {
		wantF += 0.1 * float64(k+1) // the same rank order, so bit-identical
	}
	report("host floats", "sum", errUnless(fl[0] == wantF, "got %v, want %v", fl[0], wantF))
	bs, err := g.GatherBytes(bytes.Repeat([]byte{byte('a' + r)}, r+1))
	if err != nil {
		return err
	}
	var parts []string
	for _, b := range bs {
		parts = append(parts, string(b))
	}
	wantB := []string{"a", "bb", "ccc", "dddd"}[:n]
	report("host bytes", "gather", errUnless(strings.Join(parts, ",") == strings.Join(wantB, ","), "got %q, want %q", parts, wantB))
	report("host barrier", "barrier", g.Barrier())
	return nil
}

func errUnless(ok bool, format string, args ...any) error {
	if ok {
		return nil
	}
	return fmt.Errorf(format, args...)
}

// rankLoop all-sums rank-valued vectors until killed, printing each round.
func rankLoop(g *Group, size int) error {
	for round := 1; ; round++ {
		s := NewScope()
		sum := g.AllSum(Full(float64(g.Rank()+1), Float32, size))
		err := g.Eval(sum)
		if err == nil {
			var v []float32
			if v, err = sum.Float32s(); err == nil && v[0] != float32(g.Size()*(g.Size()+1)/2) {
				err = fmt.Errorf("round %d: sum %v", round, v[0])
			}
		}
		s.Close()
		if err != nil {
			return err
		}
		fmt.Printf("round %d\n", round)
		if size < 1<<20 {
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// waitFor reports whether sub appears in b within d.
func waitFor(b *lockedbuf.Buffer, sub string, d time.Duration) bool {
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if strings.Contains(b.String(), sub) {
			return true
		}
	}
	return false
}

type rankProc struct {
	rank     int
	cmd      *exec.Cmd
	out, err *lockedbuf.Buffer
	done     chan struct{}
	exit     error
	ended    time.Time
}

// freePorts returns n loopback ports that were free a moment ago.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ls []net.Listener
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return ports
}

func writeRingHostfile(t *testing.T, ports []int) string {
	t.Helper()
	h := RingHostfile{}
	for _, p := range ports {
		h = append(h, []string{fmt.Sprintf("127.0.0.1:%d", p)})
	}
	b, _ := json.Marshal(h)
	path := filepath.Join(t.TempDir(), "hosts.json")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// startRanks starts the given ranks of a ring of len(ports) processes.
func startRanks(t *testing.T, scenario string, timeout time.Duration, hostfile string, ranks ...int) []*rankProc {
	return startRanksEnv(t, scenario, timeout, hostfile, nil, ranks...)
}

func startRanksEnv(t *testing.T, scenario string, timeout time.Duration, hostfile string, env []string, ranks ...int) []*rankProc {
	t.Helper()
	var procs []*rankProc
	for _, r := range ranks {
		p := &rankProc{rank: r, out: &lockedbuf.Buffer{}, err: &lockedbuf.Buffer{}, done: make(chan struct{})}
		p.cmd = exec.Command(os.Args[0], "-test.run=^TestDistributedRank$", "-test.count=1")
		p.cmd.Env = append(os.Environ(), distScenarioEnv+"="+scenario, distTimeoutEnv+"="+timeout.String(),
			EnvRank+"="+strconv.Itoa(r), EnvHostfile+"="+hostfile)
		p.cmd.Env = append(p.cmd.Env, env...)
		p.cmd.Stdout, p.cmd.Stderr = p.out, p.err
		if err := p.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() {
			p.exit = p.cmd.Wait()
			p.ended = time.Now()
			close(p.done)
		}()
		procs = append(procs, p)
	}
	t.Cleanup(func() {
		for _, p := range procs {
			p.cmd.Process.Signal(syscall.SIGCONT)
			p.cmd.Process.Kill()
			<-p.done
		}
	})
	return procs
}

// Exit codes wait reports besides the process's own.
const (
	stillRunning   = -1000
	killedBySignal = -1001
)

// wait waits at most d for the rank to exit and returns its exit code.
func (p *rankProc) wait(d time.Duration) int {
	select {
	case <-p.done:
		if ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return killedBySignal
		}
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(d):
		return stillRunning
	}
}

// TestDistributedCollectives: 2 ranks over the ring, and 3 ranks joined
// with backend "any" (which must pick the ring here).
func TestDistributedCollectives(t *testing.T) {
	for _, n := range []int{2, 3} {
		backend := map[int]string{2: "ring", 3: "any"}[n]
		t.Run(fmt.Sprintf("%d ranks, backend %s", n, backend), func(t *testing.T) {
			hosts := writeRingHostfile(t, freePorts(t, n))
			ranks := make([]int, n)
			for i := range ranks {
				ranks[i] = i
			}
			procs := startRanksEnv(t, "collectives", 60*time.Second, hosts, []string{distBackendEnv + "=" + backend}, ranks...)
			want := 3*len(collectiveCases) + 6
			for _, p := range procs {
				if code := p.wait(120 * time.Second); code != 0 {
					t.Fatalf("rank %d exit %d\nstdout:\n%s\nstderr:\n%s", p.rank, code, p.out, p.err)
				}
				out := p.out.String()
				if !strings.Contains(out, fmt.Sprintf("joined rank %d of %d (backend ring)", p.rank, n)) {
					t.Errorf("rank %d did not report joining as rank %d of %d over the ring:\n%s", p.rank, p.rank, n, out)
				}
				if got := strings.Count(out, "checked "); got != want || strings.Contains(out, "mismatch") {
					t.Errorf("rank %d: %d checks passed, want %d:\n%s", p.rank, got, want, out)
				}
			}
		})
	}
}

// TestDistributedPeerFailure: a rank that dies (kill -9) or stops
// answering (SIGSTOP, as a host that drops off the network) makes the
// other exit with a clear error within the bound, never hang.
func TestDistributedPeerFailure(t *testing.T) {
	const bound = 4 * time.Second
	cases := []struct {
		name     string
		signal   syscall.Signal
		wantCode []int
		wantErr  []string
	}{
		// The ring sees the closed socket at once: an error, not the watchdog.
		// A peer that stops answering keeps its socket open: the watchdog.
		{"killed", syscall.SIGKILL, []int{1}, []string{"rank 0 of 2", "connection to a peer was lost"}},
		// Without ignoring SIGPIPE (InitDistributed), the ring's writes to
		// the dead peer kill this rank by that signal about every other run.
		{"killed during large transfers", syscall.SIGKILL, []int{1}, []string{"rank 0 of 2", "connection to a peer was lost"}},
		{"stopped", syscall.SIGSTOP, []int{HangExitCode}, []string{"did not finish within 4s", "rank 0 of 2"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			scenario := "loop"
			if strings.Contains(c.name, "large") {
				scenario = "bigloop"
			}
			procs := startRanks(t, scenario, bound, writeRingHostfile(t, freePorts(t, 2)), 0, 1)
			for _, p := range procs {
				if !waitFor(p.out, "round 3\n", 60*time.Second) {
					t.Fatalf("rank %d did not reach round 3:\n%s\n%s", p.rank, p.out, p.err)
				}
			}
			sent := time.Now()
			if err := procs[1].cmd.Process.Signal(c.signal); err != nil {
				t.Fatal(err)
			}
			code := procs[0].wait(bound + 10*time.Second)
			switch code {
			case stillRunning:
				t.Fatalf("rank 0 still runs %s after its peer was %s", time.Since(sent), c.name)
			case killedBySignal:
				t.Fatalf("rank 0 died by %s, with no error of its own", procs[0].cmd.ProcessState)
			}
			took := procs[0].ended.Sub(sent)
			t.Logf("rank 0 exited with %d after %s: %s", code, took.Round(time.Millisecond), strings.TrimSpace(procs[0].err.String()))
			if took > bound+5*time.Second {
				t.Errorf("rank 0 took %s to stop, bound %s", took, bound)
			}
			okCode := false
			for _, w := range c.wantCode {
				okCode = okCode || code == w
			}
			if !okCode {
				t.Errorf("rank 0 exit code %d, want one of %v", code, c.wantCode)
			}
			stderr := procs[0].err.String()
			for _, w := range c.wantErr {
				if !strings.Contains(stderr, w) {
					t.Errorf("rank 0's error does not say %q:\n%s", w, stderr)
				}
			}
		})
	}
}

// TestDistributedInitAlone: a rank whose peers never start gives up
// joining within the init bound.
func TestDistributedInitAlone(t *testing.T) {
	const bound = 3 * time.Second
	procs := startRanks(t, "join", bound, writeRingHostfile(t, freePorts(t, 2)), 0)
	code := procs[0].wait(bound + 20*time.Second)
	if code != HangExitCode {
		t.Fatalf("exit %d, want %d\n%s", code, HangExitCode, procs[0].err)
	}
	if err := errMentions(fmt.Errorf("%s", procs[0].err), "joining the distributed group", "within 3s", "MLX_RANK=0"); err != nil {
		t.Error(err)
	}
}

// unsetDistEnv clears the variables MLX's backends read for the test.
func unsetDistEnv(t *testing.T) {
	for _, k := range []string{EnvRank, EnvHostfile, EnvWorldSize, EnvNCCLHost, EnvNCCLPort} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
}

// TestDistributedSingleton: with no backend configured, a non-strict init
// gives a size-1 group whose collectives return their input.
func TestDistributedSingleton(t *testing.T) {
	unsetDistEnv(t)
	inMLX(t, func() error {
		g, err := InitDistributed(DistributedConfig{})
		if err != nil {
			return err
		}
		defer g.Free()
		if g.Rank() != 0 || g.Size() != 1 || g.Backend() != "none" {
			return fmt.Errorf("group %s, want rank 0 of 1 (backend none)", g)
		}
		x := randTensor(rand.New(rand.NewSource(3)), 4, 5)
		for name, op := range map[string]func(*Array) *Array{"AllSum": g.AllSum, "AllMax": g.AllMax, "AllMin": g.AllMin, "AllGather": g.AllGather} {
			y := op(f32(x))
			if err := g.Eval(y); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			if err := check(y, x, 0, 0); err != nil {
				t.Errorf("%s on one rank: %v", name, err)
			}
		}
		ints, err := g.SumInts([]int64{7, -3})
		if err != nil || fmt.Sprint(ints) != "[7 -3]" {
			t.Errorf("SumInts on one rank: %v, %v", ints, err)
		}
		bs, err := g.GatherBytes([]byte("cpu"))
		if err != nil || len(bs) != 1 || string(bs[0]) != "cpu" {
			t.Errorf("GatherBytes on one rank: %q, %v", bs, err)
		}
		return g.Barrier()
	})
}

// TestDistributedBadInput: a mistake in the backend or the environment is
// an error that names it, before MLX starts (or from MLX, through the
// shim, without a crash).
func TestDistributedBadInput(t *testing.T) {
	dir := t.TempDir()
	file := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := file("good.json", `[["127.0.0.1:41001"],["127.0.0.1:41002"]]`)
	cases := []struct {
		name    string
		backend string
		strict  bool
		env     map[string]string
		want    []string
	}{
		{"unknown backend", "tcp", true, nil, []string{`backend "tcp"`, "ring", "nccl"}},
		{"backend not in this build", "nccl", true, nil, []string{"nccl", "not in this MLX build"}},
		{"ring without its variables (MLX's own error)", "ring", true, nil, []string{"MLX_RANK", "MLX_HOSTFILE"}},
		{"missing hostfile", "ring", true, map[string]string{EnvRank: "0", EnvHostfile: filepath.Join(dir, "nope.json")}, []string{"MLX_HOSTFILE", "nope.json", "no such file"}},
		{"hostfile not JSON", "ring", true, map[string]string{EnvRank: "0", EnvHostfile: file("bad.json", `[["127.0.0.1:1"],`)}, []string{"bad.json", "JSON"}},
		{"hostfile of one rank", "any", false, map[string]string{EnvRank: "0", EnvHostfile: file("one.json", `[["127.0.0.1:41001"]]`)}, []string{"one.json", "1 ranks", "at least 2"}},
		{"hostname instead of IP", "ring", true, map[string]string{EnvRank: "0", EnvHostfile: file("name.json", `[["localhost:41001"],["127.0.0.1:41002"]]`)}, []string{"name.json", "rank 0", `"localhost:41001"`, "IPv4"}},
		{"no port", "ring", true, map[string]string{EnvRank: "1", EnvHostfile: file("port.json", `[["127.0.0.1:41001"],["127.0.0.1"]]`)}, []string{"port.json", "rank 1", "ip:port"}},
		{"uneven addresses", "ring", true, map[string]string{EnvRank: "0", EnvHostfile: file("uneven.json", `[["127.0.0.1:41001"],["127.0.0.1:41002","127.0.0.1:41003"]]`)}, []string{"uneven.json", "rank 1 has 2 addresses"}},
		{"address twice", "ring", true, map[string]string{EnvRank: "0", EnvHostfile: file("dup.json", `[["127.0.0.1:41001"],["127.0.0.1:41001"]]`)}, []string{"dup.json", "also rank 0"}},
		{"rank beyond the hostfile", "ring", true, map[string]string{EnvRank: "2", EnvHostfile: good}, []string{"MLX_RANK=2", "good.json", "2 ranks"}},
		{"rank not a number", "ring", true, map[string]string{EnvRank: "one", EnvHostfile: good}, []string{"MLX_RANK", `"one"`, "not an integer"}},
		{"negative rank", "any", false, map[string]string{EnvRank: "-1", EnvHostfile: good}, []string{"MLX_RANK=-1"}},
		{"world size below rank", "any", false, map[string]string{EnvRank: "3", EnvWorldSize: "2"}, []string{"MLX_WORLD_SIZE=2", "MLX_RANK=3"}},
		{"NCCL port out of range", "any", false, map[string]string{EnvNCCLPort: "70000"}, []string{"NCCL_PORT=70000", "port"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			unsetDistEnv(t)
			for k, v := range c.env {
				t.Setenv(k, v)
			}
			var err error
			inMLX(t, func() error {
				var g *Group
				g, err = InitDistributed(DistributedConfig{Backend: c.backend, Strict: c.strict, InitTimeout: 30 * time.Second,
					OnHang: func(e error) { panic(fmt.Sprintf("init hung: %v", e)) }})
				if err == nil {
					g.Free()
				}
				return nil
			})
			if e := errMentions(err, c.want...); e != nil {
				t.Error(e)
			}
		})
	}
}

// TestDistributedThreadRule: joining from a thread that does not own MLX
// is refused by the shim.
func TestDistributedThreadRule(t *testing.T) {
	Do(func() error { return nil }) // the owner thread exists and is not this one
	unsetDistEnv(t)
	_, err := InitDistributed(DistributedConfig{})
	if e := errMentions(err, "does not own MLX"); e != nil {
		t.Error(e)
	}
}
