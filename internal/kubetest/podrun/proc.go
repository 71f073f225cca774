package podrun

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// proc is one running container.
type proc struct {
	pod, pool, url string
	grace          time.Duration
	cmd            *exec.Cmd
	failed         bool // could not be started; kept so it is not retried
	exited         atomic.Bool
	killed         atomic.Bool
	waitDone       chan struct{}
}

// stop sends SIGTERM and, after grace, SIGKILL, and waits for the exit.
func (p *proc) stop(grace time.Duration) {
	if p.failed || p.cmd == nil {
		return
	}
	if grace <= 0 {
		grace = 30 * time.Second
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.waitDone:
	case <-time.After(grace):
		p.killed.Store(true)
		p.cmd.Process.Kill()
		<-p.waitDone
	}
}

// run starts the pod's container as a process.
func (r *Runner) run(ctx context.Context, pod *corev1.Pod) (*proc, error) {
	var c *corev1.Container
	for i := range pod.Spec.Containers {
		if pod.Spec.Containers[i].Name == r.cfg.Container {
			c = &pod.Spec.Containers[i]
		}
	}
	if c == nil {
		return nil, fmt.Errorf("no container %q", r.cfg.Container)
	}
	// The image must be the binary, pinned by its digest.
	_, dig, ok := strings.Cut(c.Image, "@sha256:")
	if !ok || dig != r.digest {
		return nil, fmt.Errorf("image %s is not pinned to the binary's digest sha256:%s (an image pull would fail)", c.Image, r.digest)
	}
	dir := filepath.Join(r.cfg.Dir, pod.Name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	mounts, err := r.mounts(ctx, pod, c, dir)
	if err != nil {
		return nil, err
	}
	env, err := r.env(ctx, pod, c)
	if err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	listen := "127.0.0.1:" + strconv.Itoa(port)
	args := append(append([]string(nil), tail(c.Command)...), c.Args...)
	vars := map[string]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		vars[k] = v
	}
	for i, a := range args {
		a = expand(a, vars)
		if i > 0 && args[i-1] == "--listen" {
			a = listen
		} else if strings.HasPrefix(a, "--listen=") {
			a = "--listen=" + listen
		}
		if k, v, ok := strings.Cut(a, "="); ok && strings.HasPrefix(k, "--") {
			if lp, ok := localPath(v, mounts); ok {
				a = k + "=" + lp
			}
		} else if lp, ok := localPath(a, mounts); ok {
			a = lp
		}
		args[i] = a
	}
	logf, err := os.Create(filepath.Join(dir, "container.log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(r.cfg.Binary, args...)
	cmd.Env = append(append(os.Environ(), env...), r.cfg.Env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	grace := 30 * time.Second
	if g := pod.Spec.TerminationGracePeriodSeconds; g != nil {
		grace = time.Duration(*g) * time.Second
	}
	p := &proc{pod: pod.Name, pool: pod.Labels[r.cfg.PoolLabel], url: "http://" + listen, grace: grace, cmd: cmd, waitDone: make(chan struct{})}
	go func() {
		cmd.Wait()
		logf.Close()
		p.exited.Store(true)
		close(p.waitDone)
	}()
	r.log.Info("podrun: started", "pod", pod.Name, "pool", p.pool, "url", p.url, "args", args)
	return p, nil
}

// mounts lays the container's volume mounts out under dir/root, as the
// kubelet would in the container's file system, and returns mountPath →
// local path: emptyDirs as fresh directories, ConfigMaps and Secrets
// written out from the API (a subPath mount as the one key's file), a
// Secret mount named in Config.Mounts as a link to that local directory.
// Mounts are laid out parents first, so a subPath file lands inside the
// emptyDir it is mounted into.
func (r *Runner) mounts(ctx context.Context, pod *corev1.Pod, c *corev1.Container, dir string) (map[string]string, error) {
	vols := map[string]corev1.Volume{}
	for _, v := range pod.Spec.Volumes {
		vols[v.Name] = v
	}
	ms := append([]corev1.VolumeMount(nil), c.VolumeMounts...)
	sort.Slice(ms, func(i, j int) bool { return len(ms[i].MountPath) < len(ms[j].MountPath) })
	root := filepath.Join(dir, "root")
	out := map[string]string{}
	for _, m := range ms {
		v, ok := vols[m.Name]
		if !ok {
			return nil, fmt.Errorf("volume mount %s names no volume", m.Name)
		}
		target := filepath.Join(root, filepath.Clean("/"+m.MountPath))
		out[m.MountPath] = target
		var data map[string][]byte
		switch {
		case v.EmptyDir != nil:
			if err := os.MkdirAll(target, 0o700); err != nil {
				return nil, err
			}
			continue
		case v.Secret != nil:
			if local, ok := r.cfg.Mounts[m.MountPath]; ok {
				if err := os.MkdirAll(filepath.Dir(target), 0o700); err != nil {
					return nil, err
				}
				if err := os.Symlink(local, target); err != nil {
					return nil, err
				}
				continue
			}
			sec, err := r.cfg.Client.CoreV1().Secrets(pod.Namespace).Get(ctx, v.Secret.SecretName, metav1.GetOptions{})
			if err != nil {
				return nil, fmt.Errorf("secret volume %s: %w", m.Name, err)
			}
			data = sec.Data
		case v.ConfigMap != nil:
			cm, err := r.cfg.Client.CoreV1().ConfigMaps(pod.Namespace).Get(ctx, v.ConfigMap.Name, metav1.GetOptions{})
			if err != nil {
				return nil, fmt.Errorf("configmap volume %s: %w", m.Name, err)
			}
			data = map[string][]byte{}
			for k, val := range cm.Data {
				data[k] = []byte(val)
			}
			for k, val := range cm.BinaryData {
				data[k] = val
			}
		default:
			return nil, fmt.Errorf("volume %s: only secret, configMap and emptyDir volumes are run here", m.Name)
		}
		if err := writeVolume(target, m.SubPath, data); err != nil {
			return nil, fmt.Errorf("volume %s at %s: %w", m.Name, m.MountPath, err)
		}
	}
	return out, nil
}

// writeVolume writes a ConfigMap's or Secret's keys as files in dir, or
// the one key subPath as the file target.
func writeVolume(target, subPath string, data map[string][]byte) error {
	if subPath != "" {
		val, ok := data[subPath]
		if !ok {
			return fmt.Errorf("no key %q", subPath)
		}
		if err := os.MkdirAll(filepath.Dir(target), 0o700); err != nil {
			return err
		}
		return os.WriteFile(target, val, 0o600)
	}
	if err := os.MkdirAll(target, 0o700); err != nil {
		return err
	}
	for k, val := range data {
		if err := os.WriteFile(filepath.Join(target, filepath.Base(k)), val, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// env resolves the container's environment as the kubelet does, for the
// sources Countersign's manifests use.
func (r *Runner) env(ctx context.Context, pod *corev1.Pod, c *corev1.Container) ([]string, error) {
	var out []string
	vars := map[string]string{}
	for _, e := range c.Env {
		val := e.Value
		switch src := e.ValueFrom; {
		case src == nil:
			val = expand(val, vars)
		case src.FieldRef != nil:
			switch src.FieldRef.FieldPath {
			case "metadata.name":
				val = pod.Name
			case "metadata.namespace":
				val = pod.Namespace
			case "status.podIP":
				val = "127.0.0.1"
			default:
				if k, ok := fieldKey(src.FieldRef.FieldPath, "metadata.annotations"); ok {
					val = pod.Annotations[k]
					break
				}
				if k, ok := fieldKey(src.FieldRef.FieldPath, "metadata.labels"); ok {
					val = pod.Labels[k]
					break
				}
				return nil, fmt.Errorf("env %s: field %s is not run here", e.Name, src.FieldRef.FieldPath)
			}
		case src.SecretKeyRef != nil:
			s, err := r.cfg.Client.CoreV1().Secrets(pod.Namespace).Get(ctx, src.SecretKeyRef.Name, metav1.GetOptions{})
			if err != nil {
				if src.SecretKeyRef.Optional != nil && *src.SecretKeyRef.Optional {
					continue
				}
				return nil, fmt.Errorf("env %s: %w", e.Name, err)
			}
			val = string(s.Data[src.SecretKeyRef.Key])
		case src.ConfigMapKeyRef != nil:
			cm, err := r.cfg.Client.CoreV1().ConfigMaps(pod.Namespace).Get(ctx, src.ConfigMapKeyRef.Name, metav1.GetOptions{})
			if err != nil {
				if src.ConfigMapKeyRef.Optional != nil && *src.ConfigMapKeyRef.Optional {
					continue
				}
				return nil, fmt.Errorf("env %s: %w", e.Name, err)
			}
			val = cm.Data[src.ConfigMapKeyRef.Key]
		default:
			return nil, fmt.Errorf("env %s: source is not run here", e.Name)
		}
		vars[e.Name] = val
		out = append(out, e.Name+"="+val)
	}
	return out, nil
}

// expand replaces $(NAME) with vars[NAME] where defined and $$ with $, as
// the kubelet expands container args and env.
func expand(s string, vars map[string]string) string {
	if !strings.Contains(s, "$") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			if end := strings.IndexByte(s[i:], ')'); end > 0 {
				if v, ok := vars[s[i+2:i+end]]; ok {
					b.WriteString(v)
					i += end
					continue
				}
			}
			b.WriteByte('$')
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}

// tail drops the command's executable (the image's countersign binary).
func tail(cmd []string) []string {
	if len(cmd) == 0 {
		return nil
	}
	return cmd[1:]
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	if a, ok := ln.Addr().(*net.TCPAddr); ok {
		return a.Port, nil
	}
	return 0, errors.New("podrun: no TCP port")
}

// fieldKey parses a downward API path such as
// metadata.annotations['countersign.dev/release'].
func fieldKey(path, prefix string) (string, bool) {
	rest, ok := strings.CutPrefix(path, prefix+"['")
	if !ok {
		return "", false
	}
	return strings.CutSuffix(rest, "']")
}
