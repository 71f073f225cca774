package kubetest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"
)

// gatewayAPIModule holds the CRDs InstallGatewayAPI applies, at the version
// tools/kube/go.mod selects (the same as the main module's types).
const gatewayAPIModule = "sigs.k8s.io/gateway-api"

var crdResource = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// InstallGatewayAPI applies the standard channel of gateway-api v1.6.3
// (config/crd/standard: the CRDs and their safe-upgrades admission policy)
// with server-side apply and waits until every CRD is Established. Later
// calls on the same cluster return at once.
func (c *Cluster) InstallGatewayAPI(ctx context.Context) error {
	c.gatewayMu.Lock()
	defer c.gatewayMu.Unlock()
	if c.gatewayInstalled {
		return nil
	}
	mod, err := moduleDir(gatewayAPIModule)
	if err != nil {
		return err
	}
	objs, err := readManifests(filepath.Join(mod, "config", "crd", "standard"))
	if err != nil {
		return err
	}
	dyn, err := dynamic.NewForConfig(c.Config)
	if err != nil {
		return fmt.Errorf("kubetest: dynamic client: %w", err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(c.Client.Discovery()))
	var crds []string
	for _, o := range objs {
		gvk := o.GroupVersionKind()
		m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			return fmt.Errorf("kubetest: gateway-api %s %s: %w", gvk.Kind, o.GetName(), err)
		}
		var ri dynamic.ResourceInterface = dyn.Resource(m.Resource)
		if m.Scope.Name() == meta.RESTScopeNameNamespace {
			ns := o.GetNamespace()
			if ns == "" {
				ns = "default"
			}
			ri = dyn.Resource(m.Resource).Namespace(ns)
		}
		if _, err := ri.Apply(ctx, o.GetName(), o, metav1.ApplyOptions{FieldManager: "kubetest", Force: true}); err != nil {
			return fmt.Errorf("kubetest: apply gateway-api %s %s: %w", gvk.Kind, o.GetName(), err)
		}
		if m.Resource == crdResource {
			crds = append(crds, o.GetName())
		}
	}
	if len(crds) == 0 {
		return fmt.Errorf("kubetest: no CustomResourceDefinition in %s/config/crd/standard", mod)
	}
	for _, name := range crds {
		if err := waitEstablished(ctx, dyn, name); err != nil {
			return err
		}
	}
	c.gatewayInstalled = true
	return nil
}

func waitEstablished(ctx context.Context, dyn dynamic.Interface, name string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		u, err := dyn.Resource(crdResource).Get(ctx, name, metav1.GetOptions{})
		if err == nil && crdEstablished(u) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kubetest: CRD %s not Established (last error: %v): %w", name, err, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func crdEstablished(u *unstructured.Unstructured) bool {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		m, ok := c.(map[string]any)
		if ok && m["type"] == "Established" && m["status"] == "True" {
			return true
		}
	}
	return false
}

// readManifests decodes every object of every *.yaml file in dir, in file
// name order; documents without a kind (kustomization files) are skipped.
func readManifests(dir string) ([]*unstructured.Unstructured, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return nil, fmt.Errorf("kubetest: %w", err)
	}
	sort.Strings(files)
	var objs []*unstructured.Unstructured
	for _, f := range files {
		r, err := os.Open(f)
		if err != nil {
			return nil, fmt.Errorf("kubetest: %w", err)
		}
		dec := utilyaml.NewYAMLOrJSONDecoder(r, 4096)
		for {
			var m map[string]any
			if err := dec.Decode(&m); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				r.Close()
				return nil, fmt.Errorf("kubetest: %s: %w", f, err)
			}
			u := &unstructured.Unstructured{Object: m}
			if len(m) == 0 || u.GetKind() == "" || u.GetKind() == "Kustomization" {
				continue
			}
			objs = append(objs, u)
		}
		r.Close()
	}
	return objs, nil
}
