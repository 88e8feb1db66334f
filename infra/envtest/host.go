package main

import (
	"fmt"
	"os"
	"strings"
	"sync"
)

// host is the test handle handed to the apiserver test-server helper
// (it satisfies k8s.io/kubernetes/test/utils/ktesting.TB). It is not a
// *testing.T: there is no test runner. Cleanups run in reverse order when
// the process shuts down; a fatal error runs them and exits.
type host struct {
	root    string
	verbose bool

	mu       sync.Mutex
	cleanups []func()
	failed   bool
	closing  bool
	recent   []string // the last log lines, shown when something fails
	tempDirs int
}

const recentLines = 200

func newHost(root string, verbose bool) *host {
	return &host{root: root, verbose: verbose}
}

func (h *host) log(line string) {
	line = strings.TrimRight(line, "\n")
	h.mu.Lock()
	if len(h.recent) == recentLines {
		h.recent = h.recent[1:]
	}
	h.recent = append(h.recent, line)
	h.mu.Unlock()
	if h.verbose {
		fmt.Fprintln(os.Stderr, line)
	}
}

func (h *host) fail(line string) {
	h.mu.Lock()
	h.failed = true
	recent := append([]string(nil), h.recent...)
	h.mu.Unlock()
	if !h.verbose && len(recent) > 0 {
		fmt.Fprintln(os.Stderr, "kube-envtest: recent log lines:")
		for _, l := range recent {
			fmt.Fprintln(os.Stderr, "  "+l)
		}
	}
	fmt.Fprintln(os.Stderr, "kube-envtest: error: "+strings.TrimRight(line, "\n"))
}

// runCleanups runs the registered cleanups, newest first. Cleanups added
// while it runs are run too.
func (h *host) runCleanups() {
	h.mu.Lock()
	h.closing = true
	h.mu.Unlock()
	for {
		h.mu.Lock()
		n := len(h.cleanups)
		if n == 0 {
			h.mu.Unlock()
			return
		}
		f := h.cleanups[n-1]
		h.cleanups = h.cleanups[:n-1]
		h.mu.Unlock()
		f()
	}
}

// exitNow ends the process after a fatal error: cleanups run unless the
// error came from a cleanup itself.
func (h *host) exitNow() {
	h.mu.Lock()
	closing := h.closing
	h.mu.Unlock()
	if !closing {
		h.runCleanups()
	}
	_ = os.RemoveAll(h.root)
	os.Exit(1)
}

func (h *host) Attr(key, value string) { h.log(fmt.Sprintf("attr %s=%s", key, value)) }
func (h *host) Chdir(dir string) {
	old, err := os.Getwd()
	if err != nil {
		h.Fatal(err)
	}
	if err := os.Chdir(dir); err != nil {
		h.Fatal(err)
	}
	h.Cleanup(func() { _ = os.Chdir(old) })
}
func (h *host) Cleanup(f func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.cleanups = append(h.cleanups, f)
}
func (h *host) Error(args ...any)                 { h.fail(fmt.Sprintln(args...)) }
func (h *host) Errorf(format string, args ...any) { h.fail(fmt.Sprintf(format, args...)) }
func (h *host) Fail()                             { h.fail("failed") }
func (h *host) FailNow()                          { h.fail("failed"); h.exitNow() }
func (h *host) Failed() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.failed
}
func (h *host) Fatal(args ...any)                 { h.fail(fmt.Sprintln(args...)); h.exitNow() }
func (h *host) Fatalf(format string, args ...any) { h.fail(fmt.Sprintf(format, args...)); h.exitNow() }
func (h *host) Helper()                           {}
func (h *host) Log(args ...any)                   { h.log(fmt.Sprintln(args...)) }
func (h *host) Logf(format string, args ...any)   { h.log(fmt.Sprintf(format, args...)) }
func (h *host) Name() string                      { return "kube-envtest" }
func (h *host) Setenv(key, value string) {
	old, had := os.LookupEnv(key)
	if err := os.Setenv(key, value); err != nil {
		h.Fatal(err)
	}
	h.Cleanup(func() {
		if had {
			_ = os.Setenv(key, old)
		} else {
			_ = os.Unsetenv(key)
		}
	})
}
func (h *host) Skip(args ...any)                 { h.Fatal(append([]any{"skip requested:"}, args...)...) }
func (h *host) Skipf(format string, args ...any) { h.Fatalf("skip requested: "+format, args...) }
func (h *host) SkipNow()                         { h.Fatal("skip requested") }
func (h *host) Skipped() bool                    { return false }
func (h *host) TempDir() string {
	h.mu.Lock()
	h.tempDirs++
	n := h.tempDirs
	h.mu.Unlock()
	dir, err := os.MkdirTemp(h.root, fmt.Sprintf("tmp%03d-", n))
	if err != nil {
		h.Fatal(err)
	}
	return dir
}
