package kubetest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
)

// Namespace creates a namespace named prefix-<random>, waits until its
// default ServiceAccount exists (pods cannot be admitted before) and deletes
// it when t's test ends.
func (c *Cluster) Namespace(t testing.TB, prefix string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	ns, err := c.Client.CoreV1().Namespaces().Create(ctx,
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: prefix + "-"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("kubetest: create namespace %s-*: %v", prefix, err)
	}
	name := ns.Name
	t.Cleanup(func() {
		// t.Context is already cancelled when cleanups run.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(t.Context()), 30*time.Second)
		defer cancel()
		err := c.Client.CoreV1().Namespaces().Delete(ctx, name, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("kubetest: delete namespace %s: %v", name, err)
		}
	})
	for {
		_, err := c.Client.CoreV1().ServiceAccounts(name).Get(ctx, "default", metav1.GetOptions{})
		if err == nil {
			return name
		}
		if !apierrors.IsNotFound(err) {
			t.Fatalf("kubetest: namespace %s: default ServiceAccount: %v", name, err)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("kubetest: namespace %s: default ServiceAccount not created by the controller manager: %v", name, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// ServiceAccountConfig returns a client config, and the path of a kubeconfig
// in Dir, that authenticate as ServiceAccount sa in namespace ns with a
// one-hour token from the TokenRequest API. The ServiceAccount is created
// when missing; it gets no permissions here (RBAC tests bind their own).
func (c *Cluster) ServiceAccountConfig(ctx context.Context, ns, sa string) (*rest.Config, string, error) {
	sas := c.Client.CoreV1().ServiceAccounts(ns)
	_, err := sas.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, "", fmt.Errorf("kubetest: create ServiceAccount %s/%s: %w", ns, sa, err)
	}
	expiry := int64(3600)
	tr, err := sas.CreateToken(ctx, sa, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &expiry},
	}, metav1.CreateOptions{})
	if err != nil {
		return nil, "", fmt.Errorf("kubetest: token for ServiceAccount %s/%s: %w", ns, sa, err)
	}
	cfg := rest.AnonymousClientConfig(c.Config)
	cfg.BearerToken = tr.Status.Token
	user := "system:serviceaccount:" + ns + ":" + sa
	kc, err := renderKubeconfig(c.Config.Host, c.Config.CAData, user, tr.Status.Token, ns)
	if err != nil {
		return nil, "", fmt.Errorf("kubetest: kubeconfig for %s: %w", user, err)
	}
	path := layout{c.Dir}.path("sa-" + ns + "-" + sa + ".kubeconfig")
	if err := os.WriteFile(path, kc, 0o600); err != nil {
		return nil, "", fmt.Errorf("kubetest: %w", err)
	}
	return cfg, path, nil
}

// kubectlPath is /usr/bin/kubectl (1.32 on these machines; it warns about
// the version skew on stderr and works), else kubectl from PATH.
func kubectlPath() (string, error) {
	if fi, err := os.Stat("/usr/bin/kubectl"); err == nil && !fi.IsDir() {
		return "/usr/bin/kubectl", nil
	}
	p, err := exec.LookPath("kubectl")
	if err != nil {
		return "", fmt.Errorf("kubetest: kubectl not found at /usr/bin/kubectl nor in PATH: %w", err)
	}
	return p, nil
}

// Kubectl runs kubectl with the admin kubeconfig and returns its stdout. On
// failure the error carries kubectl's stderr; on success stderr (version
// skew warnings) is dropped.
func (c *Cluster) Kubectl(ctx context.Context, args ...string) ([]byte, error) {
	bin, err := kubectlPath()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, bin, append([]string{"--kubeconfig=" + c.Kubeconfig}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("kubetest: kubectl %s: %w: %s", strings.Join(args, " "), err,
			strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}

// BindClaim does what a cluster's storage provisioner does for the
// PersistentVolumeClaim namespace/claim: it creates a hostPath
// PersistentVolume of size reserved for that claim, named
// "<namespace>-<claim>". The test bed has no provisioner, and a pod whose
// claim is unbound is never scheduled; KWOK runs no container, so the
// path is never touched. A volume already there is left as it is.
func (c *Cluster) BindClaim(ctx context.Context, namespace, claim, size string) (name string, err error) {
	q, err := resource.ParseQuantity(size)
	if err != nil {
		return "", fmt.Errorf("kubetest: volume size %q: %w", size, err)
	}
	name = namespace + "-" + claim
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:               corev1.ResourceList{corev1.ResourceStorage: q},
			AccessModes:            []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			PersistentVolumeSource: corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/var/lib/kubetest/" + name}},
			ClaimRef:               &corev1.ObjectReference{Namespace: namespace, Name: claim},
		},
	}
	if _, err := c.Client.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return "", fmt.Errorf("kubetest: create PersistentVolume %s: %w", name, err)
	}
	return name, nil
}
