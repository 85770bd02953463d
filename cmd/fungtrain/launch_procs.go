package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/fungtrain/fungtrain/internal/atomicfile"
	"github.com/fungtrain/fungtrain/mlx"
)

// selfCommand runs a fungtrain subcommand in a new process (the tests
// replace it: their binary is not fungtrain's).
var selfCommand = func(args []string) *exec.Cmd { return exec.Command(selfPath(), args...) }

func selfPath() string {
	if p, err := os.Executable(); err == nil {
		return p
	}
	return os.Args[0]
}

// startPlan starts the plan's ranks here (and over ssh) and waits for them.
func startPlan(cmd *cobra.Command, f launchFlags, plan launchPlan, args []string) error {
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var hostfileEnv string
	if plan.ring != nil {
		dir, err := os.MkdirTemp("", "fungtrain-launch-")
		if err != nil {
			return fmt.Errorf("launch: %w", err)
		}
		defer os.RemoveAll(dir)
		b, _ := json.Marshal(plan.ring)
		path := filepath.Join(dir, "ring_hosts.json")
		if err := atomicfile.WriteFile(path, b); err != nil {
			return fmt.Errorf("launch: write the ring hostfile: %w", err)
		}
		hostfileEnv = mlx.EnvHostfile + "=" + path
	}
	cwd, err := os.Getwd()
	if err != nil {
		return err
	}
	var procs []*rankProcess
	for _, r := range plan.ranks {
		var c *exec.Cmd
		switch {
		case r.host != "":
			abs, err := filepath.Abs(f.hostfile)
			if err != nil {
				return err
			}
			remote := "cd " + shellJoin([]string{cwd}) + " && exec " + shellJoin(joinCommand(f, abs, r.rank, args))
			c = exec.Command(sshProgram(), "-tt", r.host, remote)
		case f.exec:
			c = exec.Command(args[0], args[1:]...)
		default:
			c = selfCommand(args)
		}
		if c.Env == nil {
			c.Env = os.Environ()
		}
		c.Env = append(c.Env, r.env...)
		if hostfileEnv != "" && r.host == "" {
			c.Env = append(c.Env, hostfileEnv)
		}
		procs = append(procs, &rankProcess{rank: r.rank, host: r.host, cmd: c})
	}
	slog.Info("launch", "backend", plan.backend, "ranks", len(procs), "command", shellJoin(args))
	return runRanks(ctx, procs, cmd.OutOrStdout(), cmd.ErrOrStderr(), f.grace)
}

// sshProgram is the ssh client: $FUNGTRAIN_SSH, or ssh.
func sshProgram() string { return cmpOr(os.Getenv("FUNGTRAIN_SSH"), "ssh") }

// rankProcess is one started rank.
type rankProcess struct {
	rank int
	host string
	cmd  *exec.Cmd
	out  *linePrefixer
	err  *linePrefixer
}

type rankExit struct {
	p   *rankProcess
	err error
}

// runRanks starts the ranks, copies their output line by line with a
// "[rank N] " prefix, and waits. When a rank fails (or the launcher is
// interrupted) the others get SIGTERM and, after grace, SIGKILL; the error
// names the first rank that failed and how.
func runRanks(ctx context.Context, procs []*rankProcess, stdout, stderr io.Writer, grace time.Duration) error {
	var mu sync.Mutex // one line at a time on the launcher's output
	exits := make(chan rankExit, len(procs))
	running := map[*rankProcess]bool{}
	for _, p := range procs {
		prefix := fmt.Sprintf("[rank %d] ", p.rank)
		p.out, p.err = &linePrefixer{mu: &mu, w: stdout, prefix: prefix}, &linePrefixer{mu: &mu, w: stderr, prefix: prefix}
		p.cmd.Stdout, p.cmd.Stderr = p.out, p.err
		p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // its own group: signals reach its children too
		p.cmd.WaitDelay = grace
		if err := p.cmd.Start(); err != nil {
			signalAll(running, syscall.SIGKILL)
			for range running {
				<-exits
			}
			return fmt.Errorf("launch: start rank %d: %w", p.rank, err)
		}
		running[p] = true
		go func() { exits <- rankExit{p, p.cmd.Wait()} }()
	}
	var failure error
	var kill <-chan time.Time
	stopOthers := func(why string) {
		if kill != nil {
			return
		}
		if len(running) > 0 {
			slog.Warn("launch: stopping the ranks still running", "why", why, "ranks", rankList(running), "grace", grace)
		}
		signalAll(running, syscall.SIGTERM)
		kill = time.After(grace)
	}
	for len(running) > 0 {
		select {
		case e := <-exits:
			delete(running, e.p)
			e.p.out.flush()
			e.p.err.flush()
			if e.err != nil && failure == nil {
				failure = fmt.Errorf("launch: rank %d %s", e.p.rank, describeExit(e.err))
				stopOthers(failure.Error())
			}
		case <-ctx.Done():
			if failure == nil {
				failure = errors.New("launch: interrupted; the ranks were sent SIGTERM")
			}
			stopOthers("interrupted")
			ctx = context.Background()
		case <-kill:
			if len(running) > 0 {
				slog.Warn("launch: ranks still running after the grace period: SIGKILL", "ranks", rankList(running))
			}
			signalAll(running, syscall.SIGKILL)
		}
	}
	return failure
}

// signalAll signals the process group of every running rank.
func signalAll(running map[*rankProcess]bool, sig syscall.Signal) {
	for p := range running {
		if p.cmd.Process != nil {
			if err := syscall.Kill(-p.cmd.Process.Pid, sig); err != nil {
				p.cmd.Process.Signal(sig)
			}
		}
	}
}

func rankList(running map[*rankProcess]bool) []int {
	var out []int
	for p := range running {
		out = append(out, p.rank)
	}
	sort.Ints(out)
	return out
}

// describeExit says how a rank ended: "exited with status 3", "was killed
// by signal: killed".
func describeExit(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return "was killed by signal: " + ws.Signal().String()
		}
		return "exited with status " + strconv.Itoa(ee.ExitCode())
	}
	return "failed: " + err.Error()
}

// linePrefixer writes whole lines, each with prefix, to w under mu; a
// partial line waits for its end (or flush).
type linePrefixer struct {
	mu     *sync.Mutex
	w      io.Writer
	prefix string
	buf    []byte
	lock   sync.Mutex
}

func (l *linePrefixer) Write(p []byte) (int, error) {
	l.lock.Lock()
	defer l.lock.Unlock()
	l.buf = append(l.buf, p...)
	i := bytes.LastIndexByte(l.buf, '\n')
	if i < 0 {
		return len(p), nil
	}
	l.emit(l.buf[:i+1])
	l.buf = append(l.buf[:0], l.buf[i+1:]...)
	return len(p), nil
}

func (l *linePrefixer) emit(lines []byte) {
	var out bytes.Buffer
	for len(lines) > 0 {
		i := bytes.IndexByte(lines, '\n')
		out.WriteString(l.prefix)
		out.Write(lines[:i+1])
		lines = lines[i+1:]
	}
	l.mu.Lock()
	l.w.Write(out.Bytes())
	l.mu.Unlock()
}

// flush writes a last line that has no newline.
func (l *linePrefixer) flush() {
	l.lock.Lock()
	defer l.lock.Unlock()
	if len(l.buf) > 0 {
		l.emit(append(l.buf, '\n'))
		l.buf = nil
	}
}
