package kube

import (
	"fmt"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// ClientFromKubeconfig builds a client as kubectl would: from the
// kubeconfig at path (empty: $KUBECONFIG, then ~/.kube/config, then the
// pod's ServiceAccount when running in a cluster), using context (empty:
// the kubeconfig's current context). It also returns the REST config, for
// clients of other API groups (Gateway API).
func ClientFromKubeconfig(path, context string) (kubernetes.Interface, *rest.Config, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if path != "" {
		rules.ExplicitPath = path
	}
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: context})
	cfg, err := cc.ClientConfig()
	if err != nil {
		return nil, nil, fmt.Errorf("fleet/kube: kubeconfig %q context %q: %w", path, context, err)
	}
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("fleet/kube: client for %s: %w", cfg.Host, err)
	}
	return c, cfg, nil
}
