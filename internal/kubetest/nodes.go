package kubetest

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// nodeName is the name of the i-th KWOK node.
func nodeName(i int) string { return fmt.Sprintf("kwok-node-%d", i) }

// kwokNode is a Node object KWOK takes over (kwokNodeAnnotation=fake). It is
// untainted, so every pod may land on it, and large enough that tests never
// hit its capacity.
func kwokNode(name string) *corev1.Node {
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("32"),
		corev1.ResourceMemory: resource.MustParse("256Gi"),
		corev1.ResourcePods:   resource.MustParse("110"),
	}
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name:        name,
			Annotations: map[string]string{kwokNodeAnnotation: "fake"},
			Labels: map[string]string{
				"kubernetes.io/hostname": name,
				"kubernetes.io/os":       "linux",
				"kubernetes.io/arch":     "amd64",
				"type":                   "kwok",
			},
		},
		Status: corev1.NodeStatus{Capacity: capacity, Allocatable: capacity},
	}
}

func (c *Cluster) createNodes(ctx context.Context, n int) error {
	for i := range n {
		if _, err := c.Client.CoreV1().Nodes().Create(ctx, kwokNode(nodeName(i)), metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("kubetest: create node %s: %w", nodeName(i), err)
		}
	}
	return nil
}

func (c *Cluster) nodesReady(n int) func(context.Context) (bool, error) {
	return func(ctx context.Context) (bool, error) {
		for i := range n {
			node, err := c.Client.CoreV1().Nodes().Get(ctx, nodeName(i), metav1.GetOptions{})
			if err != nil {
				return false, nil // transient: retried until the deadline
			}
			if !nodeIsReady(node) {
				return false, nil
			}
		}
		return true, nil
	}
}

func nodeIsReady(n *corev1.Node) bool {
	for _, cond := range n.Status.Conditions {
		if cond.Type == corev1.NodeReady {
			return cond.Status == corev1.ConditionTrue
		}
	}
	return false
}

func (c *Cluster) defaultServiceAccount(ctx context.Context) (bool, error) {
	_, err := c.Client.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
	return err == nil, nil
}
