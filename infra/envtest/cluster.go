package main

// Cluster mode: the parts of a Kubernetes cluster that act. Beside the
// apiserver, kube-controller-manager and kube-scheduler run in this process
// (the same k8s.io/kubernetes build, so no version skew and no second copy of
// the API machinery), and KWOK runs as a child process in place of kubelets:
// it drives Node and Pod status through the stages in kwok/stages.yaml.
// Together they give tests Deployments that become Available, Jobs that
// complete (or fail when asked), namespaces that finish deleting and garbage
// collection of owned objects.

import (
	"bufio"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apiserver/pkg/util/compatibility"
	utilfeature "k8s.io/apiserver/pkg/util/feature"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	basecompatibility "k8s.io/component-base/compatibility"
	logsapi "k8s.io/component-base/logs/api/v1"

	kcmapp "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	kcmoptions "k8s.io/kubernetes/cmd/kube-controller-manager/app/options"
	schedapp "k8s.io/kubernetes/cmd/kube-scheduler/app"
	schedoptions "k8s.io/kubernetes/cmd/kube-scheduler/app/options"
)

// kwokStages is the KWOK stage configuration: how simulated nodes and pods
// move through their lifecycle. See kwok/README.md.
//
//go:embed kwok/stages.yaml
var kwokStages []byte

const (
	// kwokNodeAnnotation marks the nodes KWOK manages (and only those).
	kwokNodeAnnotation = "kwok.x-k8s.io/node"
	kwokNodeValue      = "fake"
	componentTimeout   = 90 * time.Second
)

func init() {
	// The apiserver, controller-manager and scheduler each apply the
	// process-wide logging configuration; in one process that must be
	// allowed when it does not change.
	logsapi.ReapplyHandling = logsapi.ReapplyHandlingIgnoreUnchanged
}

type clusterOptions struct {
	nodes int
	kwok  string // path of the kwok binary
}

// startCluster starts the acting parts against the running apiserver whose
// admin kubeconfig is at kubeconfig, and returns once the nodes are Ready
// and the controllers have done their first work. Everything started is
// stopped by h's cleanups. A component that dies later cancels `fail`.
func startCluster(ctx context.Context, h *host, root, kubeconfig string, opts clusterOptions, fail context.CancelCauseFunc) error {
	restConfig, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return fmt.Errorf("reading %s: %w", kubeconfig, err)
	}
	client, err := kubernetes.NewForConfig(restConfig)
	if err != nil {
		return err
	}
	if err := startControllerManager(ctx, h, kubeconfig, fail); err != nil {
		return fmt.Errorf("kube-controller-manager: %w", err)
	}
	if err := startScheduler(ctx, h, kubeconfig, fail); err != nil {
		return fmt.Errorf("kube-scheduler: %w", err)
	}
	if err := startKWOK(h, root, kubeconfig, opts.kwok, fail); err != nil {
		return fmt.Errorf("kwok: %w", err)
	}
	names, err := createNodes(ctx, client, opts.nodes)
	if err != nil {
		return fmt.Errorf("creating nodes: %w", err)
	}
	waitCtx, cancel := context.WithTimeout(ctx, componentTimeout)
	defer cancel()
	if err := waitNodesReady(waitCtx, client, names); err != nil {
		return err
	}
	// The ServiceAccount controller gives every namespace its "default"
	// ServiceAccount, without which no Pod is admitted: wait for its first one.
	return wait.PollUntilContextCancel(waitCtx, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		_, err := client.CoreV1().ServiceAccounts(metav1.NamespaceDefault).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	})
}

// freshComponentGlobals gives a component its own feature-gate and version
// registry, as the components' own test servers do, so that several
// components can be configured in one process.
func freshComponentGlobals() (basecompatibility.ComponentGlobalsRegistry, error) {
	featureGate := utilfeature.DefaultMutableFeatureGate.DeepCopy()
	effectiveVersion := compatibility.DefaultBuildEffectiveVersion()
	registry := basecompatibility.NewComponentGlobalsRegistry()
	if err := registry.Register(basecompatibility.DefaultKubeComponent, effectiveVersion, featureGate); err != nil {
		return nil, err
	}
	return registry, nil
}

func startControllerManager(ctx context.Context, h *host, kubeconfig string, fail context.CancelCauseFunc) error {
	s, err := kcmoptions.NewKubeControllerManagerOptions()
	if err != nil {
		return err
	}
	if s.ComponentGlobalsRegistry, err = freshComponentGlobals(); err != nil {
		return err
	}
	all, disabled, aliases := kcmapp.KnownControllers(), kcmapp.ControllersDisabledByDefault(), kcmapp.ControllerAliases()
	named := s.Flags(all, disabled, aliases)
	fs := pflag.NewFlagSet("kube-controller-manager", pflag.ContinueOnError)
	for _, f := range named.FlagSets {
		fs.AddFlagSet(f)
	}
	err = fs.Parse([]string{
		"--kubeconfig=" + kubeconfig,
		"--leader-elect=false",
		// No serving endpoint: nothing scrapes it, and a fixed port would
		// collide with another cluster on the same machine.
		"--secure-port=0",
		// Every controller runs with the admin credentials. Without a
		// private key the legacy token-Secret controller stays off; Pods
		// get their tokens from the TokenRequest API instead.
		"--use-service-account-credentials=false",
		"--controllers=*",
		// Faster than a real cluster's defaults, so tests see effects soon.
		"--concurrent-gc-syncs=5",
		"--node-monitor-period=2s",
	})
	if err != nil {
		return err
	}
	if err := s.ComponentGlobalsRegistry.Set(); err != nil {
		return err
	}
	s.ParsedFlags = &named
	config, err := s.Config(ctx, all, disabled, aliases)
	if err != nil {
		return err
	}
	runComponent(ctx, h, "kube-controller-manager", fail, func(ctx context.Context) error {
		return kcmapp.Run(ctx, config.Complete())
	})
	return nil
}

func startScheduler(ctx context.Context, h *host, kubeconfig string, fail context.CancelCauseFunc) error {
	registry, err := freshComponentGlobals()
	if err != nil {
		return err
	}
	opts := schedoptions.NewOptionsWithComponentGlobalsRegistry(registry)
	fs := pflag.NewFlagSet("kube-scheduler", pflag.ContinueOnError)
	for _, f := range opts.Flags.FlagSets {
		fs.AddFlagSet(f)
	}
	err = fs.Parse([]string{
		"--kubeconfig=" + kubeconfig,
		"--leader-elect=false",
		"--secure-port=0",
	})
	if err != nil {
		return err
	}
	if err := registry.Set(); err != nil {
		return err
	}
	if opts.InformerName, err = cache.NewInformerName("kube-scheduler"); err != nil {
		return err
	}
	cc, sched, err := schedapp.Setup(ctx, opts)
	if err != nil {
		return err
	}
	runComponent(ctx, h, "kube-scheduler", fail, func(ctx context.Context) error {
		return schedapp.Run(ctx, cc, sched)
	})
	return nil
}

// runComponent runs a component until shutdown. Its cleanup stops it and
// waits for it; if it ends by itself before that, the whole process fails.
func runComponent(ctx context.Context, h *host, name string, fail context.CancelCauseFunc, run func(context.Context) error) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		err := run(ctx)
		if ctx.Err() == nil {
			if err == nil {
				err = errors.New("stopped by itself")
			}
			fail(fmt.Errorf("%s: %w", name, err))
		}
	}()
	h.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			h.log(name + " did not stop within 10s")
		}
	})
}

// startKWOK writes the stage configuration and runs kwok as a child process
// that manages only nodes annotated kwok.x-k8s.io/node=fake.
func startKWOK(h *host, root, kubeconfig, binary string, fail context.CancelCauseFunc) error {
	if binary == "" {
		self, err := os.Executable()
		if err != nil {
			return err
		}
		binary = filepath.Join(filepath.Dir(self), "kwok")
	}
	if _, err := os.Stat(binary); err != nil {
		return fmt.Errorf("%s not found (build it with infra/envtest/build.sh, or pass --kwok PATH, or use --apiserver-only)", binary)
	}
	stages := filepath.Join(root, "kwok-stages.yaml")
	if err := os.WriteFile(stages, kwokStages, 0o600); err != nil {
		return err
	}
	cmd := exec.Command(binary,
		"--kubeconfig="+kubeconfig,
		"--config="+stages,
		"--manage-all-nodes=false",
		"--manage-nodes-with-annotation-selector="+kwokNodeAnnotation+"="+kwokNodeValue,
		// Private addresses that nothing on this machine listens on.
		"--cidr=10.244.0.0/16",
		"--node-ip=10.96.0.10",
	)
	cmd.Env = append(os.Environ(), "HOME="+root) // kwok keeps a small state dir under $HOME
	output, err := cmd.StderrPipe()
	if err != nil {
		return err
	}
	cmd.Stdout = nil
	// The child must never outlive this process, even after a SIGKILL.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	go copyLines(h, "kwok: ", output)
	exited := make(chan struct{})
	stopping := make(chan struct{})
	go func() {
		err := cmd.Wait()
		close(exited)
		select {
		case <-stopping:
		default:
			fail(fmt.Errorf("kwok exited: %v", err))
		}
	}()
	h.Cleanup(func() {
		close(stopping)
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	return nil
}

func copyLines(h *host, prefix string, r io.Reader) {
	scanner := bufio.NewScanner(r)
	scanner.Buffer(make([]byte, 64*1024), 1024*1024)
	for scanner.Scan() {
		h.log(prefix + scanner.Text())
	}
}

// createNodes registers the simulated nodes. Their capacity is generous
// (tests never wait on resources) but finite, so resource requests are real.
func createNodes(ctx context.Context, client kubernetes.Interface, count int) ([]string, error) {
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("32"),
		corev1.ResourceMemory: resource.MustParse("256Gi"),
		corev1.ResourcePods:   resource.MustParse("250"),
	}
	names := make([]string, 0, count)
	for i := 0; i < count; i++ {
		name := "kwok-node-" + strconv.Itoa(i)
		node := &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{
				Name:        name,
				Annotations: map[string]string{kwokNodeAnnotation: kwokNodeValue},
				Labels: map[string]string{
					"kubernetes.io/hostname": name,
					"kubernetes.io/os":       "linux",
					"kubernetes.io/arch":     "amd64",
					"type":                   "kwok",
				},
			},
			Status: corev1.NodeStatus{Capacity: capacity, Allocatable: capacity},
		}
		_, err := client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return nil, err
		}
		names = append(names, name)
	}
	return names, nil
}

func waitNodesReady(ctx context.Context, client kubernetes.Interface, names []string) error {
	err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		for _, name := range names {
			node, err := client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
			if err != nil || !nodeReady(node) {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("nodes %v did not become Ready within %s (is kwok running?)", names, componentTimeout)
	}
	return nil
}

func nodeReady(node *corev1.Node) bool {
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
