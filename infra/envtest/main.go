// Command kube-envtest runs a small Kubernetes cluster for tests: an
// embedded etcd and a kube-apiserver, and (unless --apiserver-only) a
// kube-controller-manager and a kube-scheduler in the same process plus KWOK
// as a child process simulating the nodes' kubelets.
//
//	kube-envtest --kubeconfig PATH [--apiserver-only] [--nodes N] [--kwok PATH]
//	             [--exit-on-stdin-eof] [--verbose]
//
// It picks free loopback ports, keeps all of its data in one temporary
// directory, writes an admin kubeconfig to PATH and then prints one line
// containing "ready" on stdout. SIGTERM or SIGINT stop everything and
// remove the temporary directory. Logs go to stderr.
//
// The apiserver runs with RBAC authorization; the admin user of the
// kubeconfig is in system:masters. ServiceAccount tokens can be issued
// through the TokenRequest API and are accepted for authentication.
//
// In cluster mode (the default) the controllers act: Pods are scheduled onto
// the simulated nodes and become Running and Ready, Job pods complete (or
// fail, when their template carries the annotation fleetbus.test/fail),
// Deployments become Available, namespaces finish deleting, owned objects
// are garbage-collected. With --apiserver-only nothing reconciles (Jobs
// never run, garbage collection does not happen, namespaces stay
// Terminating, no "default" ServiceAccount appears in new namespaces).
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"k8s.io/apiserver/pkg/storage/storagebackend"
	certutil "k8s.io/client-go/util/cert"
	kubeapiservertesting "k8s.io/kubernetes/cmd/kube-apiserver/app/testing"
	"k8s.io/kubernetes/test/utils/ktesting"
)

var _ ktesting.TB = (*host)(nil)

const (
	adminUser  = "envtest-admin"
	adminGroup = "system:masters"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	fs := flag.NewFlagSet("kube-envtest", flag.ContinueOnError)
	kubeconfigPath := fs.String("kubeconfig", "", "write the admin kubeconfig to this path (required)")
	exitOnStdinEOF := fs.Bool("exit-on-stdin-eof", false, "shut down when standard input is closed (for a parent process that may die)")
	verbose := fs.Bool("verbose", false, "copy the test server's own log lines to stderr")
	apiserverOnly := fs.Bool("apiserver-only", false, "run only etcd and the apiserver: nothing reconciles")
	nodes := fs.Int("nodes", 2, "number of simulated (KWOK) nodes in cluster mode")
	kwokBinary := fs.String("kwok", "", "the kwok binary (default: kwok next to this program)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *kubeconfigPath == "" || fs.NArg() != 0 || *nodes < 1 {
		fmt.Fprintln(os.Stderr, "usage: kube-envtest --kubeconfig PATH [--apiserver-only | --nodes N (>= 1) --kwok PATH] [--exit-on-stdin-eof] [--verbose]")
		return 2
	}
	kubeconfig, err := filepath.Abs(*kubeconfigPath)
	if err != nil {
		fmt.Fprintf(os.Stderr, "kube-envtest: %v\n", err)
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if *exitOnStdinEOF {
		ctx = cancelOnStdinEOF(ctx)
	}

	root, err := os.MkdirTemp("", "kube-envtest-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "kube-envtest: %v\n", err)
		return 1
	}
	h := newHost(root, *verbose)
	var cluster *clusterOptions
	if !*apiserverOnly {
		cluster = &clusterOptions{nodes: *nodes, kwok: *kwokBinary}
	}
	// A component that dies after the start ends the whole process with its error.
	ctx, fail := context.WithCancelCause(ctx)
	defer fail(nil)
	code := 0
	if err := serve(ctx, h, root, kubeconfig, cluster, fail); err != nil {
		fmt.Fprintf(os.Stderr, "kube-envtest: %v\n", err)
		code = 1
	} else if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		h.fail(cause.Error())
		code = 1
	}
	h.runCleanups()
	if err := os.RemoveAll(root); err != nil {
		fmt.Fprintf(os.Stderr, "kube-envtest: removing %s: %v\n", root, err)
	}
	if code == 0 && h.Failed() {
		code = 1
	}
	return code
}

func serve(ctx context.Context, h *host, root, kubeconfig string, cluster *clusterOptions, fail context.CancelCauseFunc) error {
	// Everything the test-server helpers create with os.MkdirTemp("", ...)
	// lands below root and is removed with it.
	if err := os.Setenv("TMPDIR", root); err != nil {
		return err
	}
	// The apiserver test helper resolves its own source directory (for
	// certificate fixtures, unused here because a serving certificate is
	// passed explicitly); with -trimpath that path is relative unless these
	// two variables make it absolute.
	if err := os.Setenv("TEST_SRCDIR", filepath.Join(root, "src")); err != nil {
		return err
	}
	if err := os.Setenv("TEST_WORKSPACE", "kube-envtest"); err != nil {
		return err
	}

	etcdURL, err := startEtcd(h, filepath.Join(root, "etcd"))
	if err != nil {
		return fmt.Errorf("etcd: %w", err)
	}

	pki := filepath.Join(root, "pki")
	if err := os.MkdirAll(pki, 0o700); err != nil {
		return err
	}
	certFile, keyFile, caPEM, err := writeServingCert(pki)
	if err != nil {
		return fmt.Errorf("serving certificate: %w", err)
	}
	token, err := randomToken()
	if err != nil {
		return err
	}
	tokenFile := filepath.Join(pki, "tokens.csv")
	tokenLine := fmt.Sprintf("%s,%s,%s,%q\n", token, adminUser, adminUser, adminGroup)
	if err := os.WriteFile(tokenFile, []byte(tokenLine), 0o600); err != nil {
		return err
	}

	storageConfig := storagebackend.NewDefaultConfig("/registry", nil)
	storageConfig.Transport.ServerList = []string{etcdURL}

	opts := kubeapiservertesting.NewDefaultTestServerOptions()
	// The helper's teardown would otherwise scrape metrics and check
	// invariants meant for Kubernetes' own test suites.
	opts.DisableInvariantChecks = true
	flags := []string{
		"--authorization-mode=RBAC",
		"--token-auth-file=" + tokenFile,
		// The helper points --peer-ca-file (for the peer proxy, on by
		// default) at <cert-dir>/apiserver.crt, so the serving pair lives
		// there under that name.
		"--cert-dir=" + pki,
		"--tls-cert-file=" + certFile,
		"--tls-private-key-file=" + keyFile,
	}
	server, err := kubeapiservertesting.StartTestServer(h, opts, flags, storageConfig)
	if err != nil {
		return fmt.Errorf("kube-apiserver: %w", err)
	}
	h.Cleanup(server.TearDownFn)

	serverURL := "https://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(server.ServerOpts.SecureServing.BindPort))
	if err := writeKubeconfig(kubeconfig, serverURL, caPEM, token); err != nil {
		return fmt.Errorf("kubeconfig: %w", err)
	}
	h.Cleanup(func() { _ = os.Remove(kubeconfig) })

	mode := "apiserver-only"
	if cluster != nil {
		mode = "cluster"
		if err := startCluster(ctx, h, root, kubeconfig, *cluster, fail); err != nil {
			return err
		}
	}

	if ctx.Err() == nil {
		fmt.Printf("kube-envtest ready mode=%s server=%s kubeconfig=%s\n", mode, serverURL, kubeconfig)
		_ = os.Stdout.Sync()
		<-ctx.Done()
	}
	fmt.Fprintln(os.Stderr, "kube-envtest: shutting down")
	return nil
}

// startEtcd starts a single-member etcd on free loopback ports and returns
// its client URL. Ports are picked by binding and releasing them, so a
// start can lose a race; it is retried a few times.
func startEtcd(h *host, dir string) (string, error) {
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		ports, err := freePorts(2)
		if err != nil {
			return "", err
		}
		clientURL := url.URL{Scheme: "http", Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))}
		peerURL := url.URL{Scheme: "http", Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[1]))}

		cfg := embed.NewConfig()
		cfg.Name = "kube-envtest"
		cfg.Dir = dir
		// A throw-away single member: durability on crash does not matter.
		cfg.UnsafeNoFsync = true
		cfg.ListenClientUrls = []url.URL{clientURL}
		cfg.AdvertiseClientUrls = []url.URL{clientURL}
		cfg.ListenPeerUrls = []url.URL{peerURL}
		cfg.AdvertisePeerUrls = []url.URL{peerURL}
		cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
		// Errors only; raised to fatal just before Close, which otherwise
		// logs every listener it closes as an error.
		level := zap.NewAtomicLevelAt(zapcore.ErrorLevel)
		zcfg := zap.NewProductionConfig()
		zcfg.Level = level
		zcfg.OutputPaths = []string{"stderr"}
		zcfg.ErrorOutputPaths = []string{"stderr"}
		lg, err := zcfg.Build()
		if err != nil {
			return "", err
		}
		cfg.Logger = "zap"
		cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(lg.Named("etcd"))

		if err := os.RemoveAll(dir); err != nil {
			return "", err
		}
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return "", err
		}
		e, err := embed.StartEtcd(cfg)
		if err != nil {
			lastErr = err
			continue
		}
		select {
		case <-e.Server.ReadyNotify():
		case <-time.After(60 * time.Second):
			e.Server.Stop()
			e.Close()
			return "", errors.New("etcd took too long to start")
		}
		h.Cleanup(func() {
			level.SetLevel(zapcore.FatalLevel)
			e.Close()
		})
		go func() {
			if err, ok := <-e.Err(); ok && err != nil {
				fmt.Fprintf(os.Stderr, "kube-envtest: etcd: %v\n", err)
			}
		}()
		return clientURL.String(), nil
	}
	return "", lastErr
}

func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// writeServingCert writes a serving certificate for 127.0.0.1 and localhost
// (signed by a fresh self-signed CA) and returns the CA in PEM form.
func writeServingCert(dir string) (certFile, keyFile string, caPEM []byte, err error) {
	certPEM, keyPEM, err := certutil.GenerateSelfSignedCertKey(
		"127.0.0.1",
		[]net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("10.0.0.1")},
		[]string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"},
	)
	if err != nil {
		return "", "", nil, err
	}
	// certPEM is the serving certificate followed by the CA that signed it.
	var blocks []*pem.Block
	for rest := certPEM; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		blocks = append(blocks, b)
	}
	if len(blocks) < 2 {
		return "", "", nil, fmt.Errorf("expected a certificate and its CA, got %d PEM blocks", len(blocks))
	}
	certFile = filepath.Join(dir, "apiserver.crt")
	keyFile = filepath.Join(dir, "apiserver.key")
	if err := os.WriteFile(certFile, certPEM, 0o600); err != nil {
		return "", "", nil, err
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		return "", "", nil, err
	}
	return certFile, keyFile, pem.EncodeToMemory(blocks[len(blocks)-1]), nil
}

func randomToken() (string, error) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// writeKubeconfig writes the kubeconfig as JSON, which every YAML reader
// accepts and which needs no YAML library to read back.
func writeKubeconfig(path, server string, caPEM []byte, token string) error {
	const name = "envtest"
	cfg := map[string]any{
		"apiVersion": "v1",
		"kind":       "Config",
		"clusters": []any{map[string]any{
			"name": name,
			"cluster": map[string]any{
				"server":                     server,
				"certificate-authority-data": base64.StdEncoding.EncodeToString(caPEM),
			},
		}},
		"users": []any{map[string]any{
			"name": adminUser,
			"user": map[string]any{"token": token},
		}},
		"contexts": []any{map[string]any{
			"name":    name,
			"context": map[string]any{"cluster": name, "user": adminUser, "namespace": "default"},
		}},
		"current-context": name,
		"preferences":     map[string]any{},
	}
	data, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(data, '\n'), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func cancelOnStdinEOF(parent context.Context) context.Context {
	ctx, cancel := context.WithCancel(parent)
	go func() {
		_, _ = io.Copy(io.Discard, bufio.NewReader(os.Stdin))
		fmt.Fprintln(os.Stderr, "kube-envtest: standard input closed")
		cancel()
	}()
	return ctx
}
