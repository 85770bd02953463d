package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fungtrain/fungtrain/internal/lockedbuf"
	"github.com/fungtrain/fungtrain/mlx"
)

// In the test binary the ranks' fungtrain is the test binary acting as
// the CLI (see TestMain).
func init() {
	selfCommand = func(args []string) *exec.Cmd {
		b, _ := json.Marshal(args)
		c := exec.Command(os.Args[0], "-test.run=^$")
		c.Env = append(os.Environ(), cliChildEnv+"="+string(b))
		return c
	}
}

// startCLI runs a fungtrain command in-process on its own goroutine; the
// channel gets its error.
func startCLI(args ...string) (stdout, stderr *lockedbuf.Buffer, done chan error) {
	stdout, stderr, done = &lockedbuf.Buffer{}, &lockedbuf.Buffer{}, make(chan error, 1)
	root := newRootCmd()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetIn(strings.NewReader(""))
	go func() { done <- root.Execute() }()
	return stdout, stderr, done
}

// consecutivePorts finds n consecutive loopback ports that are free now.
func consecutivePorts(t *testing.T, n int) int {
	t.Helper()
	for range 100 {
		base := 20000 + rand.IntN(40000)
		var ls []net.Listener
		for i := range n {
			l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", base+i))
			if err != nil {
				break
			}
			ls = append(ls, l)
		}
		for _, l := range ls {
			l.Close()
		}
		if len(ls) == n {
			return base
		}
	}
	t.Fatal("no free consecutive ports")
	return 0
}

// checkPrefixed asserts every line of out starts with "[rank N] ", N < n.
func checkPrefixed(t *testing.T, out string, n int) {
	t.Helper()
	re := regexp.MustCompile(`^\[rank (\d+)\] `)
	for _, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		m := re.FindStringSubmatch(line)
		if m == nil {
			t.Errorf("line without a rank prefix: %q", line)
			continue
		}
		if r, _ := strconv.Atoi(m[1]); r >= n {
			t.Errorf("line of rank %d in a group of %d: %q", r, n, line)
		}
	}
}

// TestLaunchDistcheck: launch -n 2 starts two ranks that join one ring,
// all-sum correctly, see each other's device, and exit 0; every output
// line carries its rank.
func TestLaunchDistcheck(t *testing.T) {
	out, errb, err := runCLI(t, "launch", "-n", "2", "--", "distcheck", "--rounds", "2", "--mib", "1")
	if err != nil {
		t.Fatalf("%v\nstdout:\n%s\nstderr:\n%s", err, out, errb)
	}
	checkPrefixed(t, out, 2)
	for _, want := range []string{
		"[rank 0] rank 0 of 2 (backend ring)",
		"[rank 1] rank 1 of 2 (backend ring)",
		"[rank 0] rank 1: fungtrain dev (unknown), cpu (cpu) on ",
		"[rank 0] round 2: all_sum of 1.0 MiB = 3 on every element (want 3)",
		"[rank 1] round 2: all_sum of 1.0 MiB = 3 on every element (want 3)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

// TestLaunchOneRank: -n 1 runs the command once, without a group.
func TestLaunchOneRank(t *testing.T) {
	out, errb, err := runCLI(t, "launch", "-n", "1", "--", "distcheck", "--rounds", "1", "--mib", "0.25")
	if err != nil {
		t.Fatalf("%v\n%s", err, errb)
	}
	if !strings.Contains(out, "[rank 0] rank 0 of 1 (backend none)") || !strings.Contains(out, "= 1 on every element") {
		t.Errorf("output:\n%s", out)
	}
}

// pidsIn returns the pids that lines "pid N" of out report.
func pidsIn(out string) []int {
	var pids []int
	for _, m := range regexp.MustCompile(`pid (\d+)`).FindAllStringSubmatch(out, -1) {
		p, _ := strconv.Atoi(m[1])
		pids = append(pids, p)
	}
	return pids
}

func alive(pid int) bool { return syscall.Kill(pid, 0) == nil }

// TestLaunchStopsOthers: when one rank fails, launch exits non-zero within
// the grace period and no other rank is left running, even one that
// ignores SIGTERM; the error names the rank and how it ended.
func TestLaunchStopsOthers(t *testing.T) {
	const grace = 1500 * time.Millisecond
	// Rank 1 fails; the others report their pid and ignore SIGTERM.
	script := `if [ "$MLX_RANK" = 1 ]; then sleep 0.3; echo failing; exit 3; fi; trap '' TERM; echo "pid $$"; sleep 60`
	cases := []struct {
		name     string
		args     []string
		waitPids int // wait until this many ranks report their pid
		kill     int // then kill -9 this rank (-1: none)
		wantErr  string
		wantOut  string
	}{
		{"exit status", []string{"-n", "3", "--exec", "--", "sh", "-c", script}, 2, -1, "rank 1 exited with status 3", "[rank 1] failing"},
		{"fungtrain rank fails", []string{"-n", "3", "--", "distcheck", "--fail-rank", "1"}, 0, -1, "rank 1 exited with status 1", "[rank 1] error: distcheck: rank 1 fails on purpose"},
		{"kill -9", []string{"-n", "2", "--", "distcheck", "--rounds", "100000", "--mib", "0.01", "--interval", "20ms"}, 2, 1, "rank 1 was killed by signal: killed", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			args := append([]string{"launch", "--grace", grace.String()}, c.args...)
			stdout, stderr, done := startCLI(args...)
			for deadline := time.Now().Add(60 * time.Second); len(pidsIn(stdout.String())) < c.waitPids; time.Sleep(20 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("%d ranks did not report their pid:\n%s\n%s", c.waitPids, stdout, stderr)
				}
			}
			var sent time.Time
			if c.kill >= 0 {
				re := regexp.MustCompile(fmt.Sprintf(`\[rank %d\] rank %d of \d+ \(backend ring\), pid (\d+)`, c.kill, c.kill))
				m := re.FindStringSubmatch(stdout.String())
				if m == nil {
					t.Fatalf("no pid of rank %d:\n%s", c.kill, stdout)
				}
				pid, _ := strconv.Atoi(m[1])
				sent = time.Now()
				if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
			}
			start := time.Now()
			var err error
			select {
			case err = <-done:
			case <-time.After(grace + 30*time.Second):
				t.Fatalf("launch still runs after %s:\n%s\n%s", time.Since(start), stdout, stderr)
			}
			pids := pidsIn(stdout.String())
			if !sent.IsZero() {
				t.Logf("launch returned %s after the kill: %v", time.Since(sent).Round(time.Millisecond), err)
				if time.Since(sent) > grace+5*time.Second {
					t.Errorf("launch took %s after the kill, grace %s", time.Since(sent), grace)
				}
			}
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("error %v, want %q\nstdout:\n%s\nstderr:\n%s", err, c.wantErr, stdout, stderr)
			}
			if c.wantOut != "" && !strings.Contains(stdout.String()+stderr.String(), c.wantOut) {
				t.Errorf("output lacks %q:\n%s\n%s", c.wantOut, stdout, stderr)
			}
			for _, p := range pids {
				if alive(p) {
					t.Errorf("pid %d still runs after launch returned", p)
					syscall.Kill(p, syscall.SIGKILL)
				}
			}
		})
	}
}

func writeJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "hosts.json")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestLaunchHostfileByHand: two launchers, each given the same hostfile
// and its own --rank (as on two machines), form one group.
func TestLaunchHostfileByHand(t *testing.T) {
	hosts := writeJSON(t, map[string]any{"backend": "ring", "envs": []string{"FUNGTRAIN_TEST_MARK=1"},
		"hosts": []map[string]any{{"ssh": "mac-a", "ips": []string{"127.0.0.1"}}, {"ssh": "mac-b", "ips": []string{"127.0.0.1"}}}})
	port := strconv.Itoa(consecutivePorts(t, 2))
	var outs [2]*lockedbuf.Buffer
	var dones [2]chan error
	for r := range 2 {
		outs[r], _, dones[r] = startCLI("launch", "--hostfile", hosts, "--rank", strconv.Itoa(r), "--port", port, "--", "distcheck", "--rounds", "1", "--mib", "0.5")
	}
	for r := range 2 {
		select {
		case err := <-dones[r]:
			if err != nil {
				t.Fatalf("rank %d: %v\n%s", r, err, outs[r])
			}
		case <-time.After(120 * time.Second):
			t.Fatalf("rank %d still runs", r)
		}
		if want := fmt.Sprintf("[rank %d] rank %d of 2 (backend ring)", r, r); !strings.Contains(outs[r].String(), want) {
			t.Errorf("rank %d's output lacks %q:\n%s", r, want, outs[r])
		}
		if !strings.Contains(outs[r].String(), "= 3 on every element") {
			t.Errorf("rank %d: no correct all-sum:\n%s", r, outs[r])
		}
	}
}

// TestLaunchHostCommands: with hosts elsewhere and neither --rank nor
// --ssh, launch starts nothing and prints each host's command; with --ssh
// it runs exactly that command on each host through ssh -tt.
func TestLaunchHostCommands(t *testing.T) {
	hosts := writeJSON(t, []map[string]any{{"ssh": "mac-a", "ips": []string{"10.0.0.1"}}, {"ssh": "mac-b", "ips": []string{"10.0.0.2"}}})
	out, _, err := runCLI(t, "launch", "--hostfile", hosts, "--", "train", "--config", "my run.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for r, h := range []string{"mac-a", "mac-b"} {
		want := fmt.Sprintf("  %s: %s launch --hostfile %s --rank %d -- train --config 'my run.yaml'", h, selfPath(), hosts, r)
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	// A stand-in ssh records its arguments.
	dir := t.TempDir()
	fake := filepath.Join(dir, "ssh")
	os.WriteFile(fake, []byte("#!/bin/sh\nprintf '%s\\n' \"$@\" > \""+dir+"/$2.args\"\necho \"ran on $2\"\n"), 0o755)
	t.Setenv("FUNGTRAIN_SSH", fake)
	out, errb, err := runCLI(t, "launch", "--hostfile", hosts, "--ssh", "--", "train", "--config", "my run.yaml")
	if err != nil {
		t.Fatalf("%v\n%s", err, errb)
	}
	if !strings.Contains(out, "[rank 0] ran on mac-a") || !strings.Contains(out, "[rank 1] ran on mac-b") {
		t.Errorf("output:\n%s", out)
	}
	cwd, _ := os.Getwd()
	b, _ := os.ReadFile(filepath.Join(dir, "mac-b.args"))
	want := fmt.Sprintf("-tt\nmac-b\ncd %s && exec %s launch --hostfile %s --rank 1 -- train --config 'my run.yaml'\n", cwd, selfPath(), hosts)
	if string(b) != want {
		t.Errorf("ssh got\n%s\nwant\n%s", b, want)
	}
}

// TestLaunchPlan checks each rank's environment against what MLX's
// backends read and what mlx.launch sets.
func TestLaunchPlan(t *testing.T) {
	env := func(p launchPlan, r int) map[string]string {
		m := map[string]string{}
		for _, kv := range p.ranks[r].env {
			k, v, _ := strings.Cut(kv, "=")
			m[k] = v
		}
		return m
	}
	ring, err := planLocal(3, "ring", []int{4001, 4002, 4003}, 0, "")
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(ring.ring) != "[[127.0.0.1:4001] [127.0.0.1:4002] [127.0.0.1:4003]]" {
		t.Errorf("ring hostfile %v", ring.ring)
	}
	if e := env(ring, 2); e[mlx.EnvRank] != "2" || e[mlx.EnvWorldSize] != "3" || e[envDistBackend] != "ring" || e["CUDA_VISIBLE_DEVICES"] != "" {
		t.Errorf("ring rank 2 env %v", e)
	}
	nccl, err := planLocal(2, "nccl", nil, 12999, "4,5,6")
	if err != nil {
		t.Fatal(err)
	}
	for r, gpu := range []string{"4", "5"} {
		e := env(nccl, r)
		if e[mlx.EnvRank] != strconv.Itoa(r) || e[mlx.EnvWorldSize] != "2" || e[mlx.EnvNCCLHost] != "127.0.0.1" || e[mlx.EnvNCCLPort] != "12999" || e["CUDA_VISIBLE_DEVICES"] != gpu {
			t.Errorf("nccl rank %d env %v, want GPU %s", r, e, gpu)
		}
	}
	if _, err := planLocal(3, "nccl", nil, 1, "0,1"); err == nil || !strings.Contains(err.Error(), "CUDA_VISIBLE_DEVICES=0,1 lists 2") {
		t.Errorf("3 NCCL ranks on 2 GPUs: %v", err)
	}
	// Two hosts with two IPs each, and two ranks on one GPU host: ports as
	// mlx.launch numbers them, GPUs counted per host, the hostfile's envs.
	hf := launchHostfile{Envs: []string{"A=1"}, Hosts: []launchHost{
		{SSH: "m1", IPs: []string{"10.0.0.1", "10.0.1.1"}}, {SSH: "m2", IPs: []string{"10.0.0.2", "10.0.1.2"}}}}
	p, err := planHosts(hf, "ring", 32323, 0)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(p.ring) != "[[10.0.0.1:32323 10.0.1.1:32324] [10.0.0.2:32325 10.0.1.2:32326]]" {
		t.Errorf("ring over hosts %v", p.ring)
	}
	if e := env(p, 1); e["A"] != "1" || e[mlx.EnvRank] != "1" {
		t.Errorf("rank 1 env %v", e)
	}
	gpuHosts := launchHostfile{Hosts: []launchHost{{SSH: "g1", IPs: []string{"10.0.0.9"}}, {SSH: "g1"}, {SSH: "g2"}}}
	p, err = planHosts(gpuHosts, "nccl", 0, 12345)
	if err != nil {
		t.Fatal(err)
	}
	for r, gpu := range []string{"0", "1", "0"} {
		if e := env(p, r); e["CUDA_VISIBLE_DEVICES"] != gpu || e[mlx.EnvNCCLHost] != "10.0.0.9" || e[mlx.EnvNCCLPort] != "12345" || e[mlx.EnvWorldSize] != "3" {
			t.Errorf("nccl over hosts, rank %d env %v, want GPU %s", r, e, gpu)
		}
	}
}

// TestLaunchBadInput: mistakes are errors that say what is wrong.
func TestLaunchBadInput(t *testing.T) {
	dir := t.TempDir()
	file := func(name, body string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(body), 0o644)
		return p
	}
	ringNoIPs := file("noips.json", `[{"ssh":"a"},{"ssh":"b"}]`)
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"launch", "-n", "2"}, "no command"},
		{[]string{"launch", "-n", "0", "--", "distcheck"}, "-n 0"},
		{[]string{"launch", "-n", "2", "--backend", "mpi", "--", "distcheck"}, `backend "mpi"`},
		{[]string{"launch", "-n", "2", "--rank", "1", "--", "distcheck"}, "need --hostfile"},
		{[]string{"launch", "-n", "2", "--env", "NOEQUALS", "--", "distcheck"}, `--env "NOEQUALS"`},
		{[]string{"launch", "--hostfile", filepath.Join(dir, "missing.json"), "--", "distcheck"}, "missing.json"},
		{[]string{"launch", "--hostfile", file("bad.json", `{"hosts": [`), "--", "distcheck"}, "bad.json"},
		{[]string{"launch", "--hostfile", file("key.json", `{"hosts": [{"ssh":"a"}], "bakend": "ring"}`), "--", "distcheck"}, `unknown field "bakend"`},
		{[]string{"launch", "--hostfile", file("empty.json", `[]`), "--", "distcheck"}, "no hosts"},
		{[]string{"launch", "--hostfile", ringNoIPs, "--backend", "ring", "--rank", "0", "--", "distcheck"}, `no "ips"`},
		{[]string{"launch", "--hostfile", ringNoIPs, "--rank", "2", "--", "distcheck"}, "--rank 2 but hostfile"},
		{[]string{"launch", "-n", "2", "--hostfile", ringNoIPs, "--", "distcheck"}, "exclude each other"},
	}
	for _, c := range cases {
		_, _, err := runCLI(t, c.args...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: error %v, want %q", c.args, err, c.want)
		}
	}
}

// TestMLXLaunchRunsFungtrain: ranks started by MLX's own launcher
// (mlx.launch, from the test venv) join with the variables it sets.
func TestMLXLaunchRunsFungtrain(t *testing.T) {
	launcher := filepath.Join("..", "..", "third_party", "pyenv", "bin", "mlx.launch")
	if _, err := os.Stat(launcher); err != nil {
		t.Fatalf("no mlx.launch in the test venv (./build.sh test installs the mlx wheel into third_party/pyenv): %v", err)
	}
	args, _ := json.Marshal([]string{"distcheck", "--rounds", "1", "--mib", "0.5"})
	c := exec.Command(launcher, "-n", "2", "--backend", "ring", "--starting-port", strconv.Itoa(consecutivePorts(t, 2)), "--", os.Args[0], "-test.run=^$")
	c.Env = append(os.Environ(), cliChildEnv+"="+string(args))
	out, err := c.CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, want := range []string{"rank 0 of 2 (backend ring)", "rank 1 of 2 (backend ring)", "= 3 on every element"} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

// TestLaunchForwardsSIGTERM: SIGTERM to the launcher reaches every rank
// (which could save a checkpoint and exit), and launch exits non-zero.
func TestLaunchForwardsSIGTERM(t *testing.T) {
	script := `trap 'echo "got TERM"; exit 0' TERM; echo ready; sleep 60 & wait`
	args, _ := json.Marshal([]string{"launch", "-n", "2", "--exec", "--grace", "5s", "--", "sh", "-c", script})
	child := exec.Command(os.Args[0], "-test.run=^$")
	child.Env = append(os.Environ(), cliChildEnv+"="+string(args))
	out := &lockedbuf.Buffer{}
	child.Stdout, child.Stderr = out, out
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer child.Process.Kill()
	// "] ready" is a rank's line; launch's own log line quotes the script,
	// "echo ready" included.
	for deadline := time.Now().Add(60 * time.Second); strings.Count(out.String(), "] ready") < 2; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("ranks not ready:\n%s", out)
		}
	}
	sent := time.Now()
	child.Process.Signal(syscall.SIGTERM)
	err := child.Wait()
	if time.Since(sent) > 4*time.Second {
		t.Errorf("launch took %s to stop after SIGTERM", time.Since(sent))
	}
	if err == nil {
		t.Error("launch exited 0 after SIGTERM")
	}
	t.Logf("launch output:\n%s", out)
	for _, want := range []string{"[rank 0] got TERM", "[rank 1] got TERM", "interrupted"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}
