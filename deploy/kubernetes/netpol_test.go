package manifests

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// peer is one end of a flow: a pod (in our namespace or another) or an
// address outside the cluster's pods.
type peer struct {
	name      string
	namespace string            // "" for an external address
	nsLabels  map[string]string // of its namespace
	labels    map[string]string // of the pod
	ports     []corev1.ContainerPort
	ip        netip.Addr // external addresses only
}

func (p peer) external() bool { return p.namespace == "" }

// flow is "src → dst:port/proto" in the matrix's notation.
type flow struct {
	src, dst string
	port     int32
	proto    corev1.Protocol
}

func (f flow) String() string { return fmt.Sprintf("%s → %s:%d/%s", f.src, f.dst, f.port, f.proto) }

// externalPorts are probed towards addresses outside the cluster's pods.
var externalPorts = []int32{22, 53, 80, 443, 4222, 5432, 6443, 7300, 8080, 9092, 9093}

// queuePorts are the queue's ports: NATS, or Kafka's plaintext and TLS
// listeners (component kafka).
func queuePorts(o overlay) []int32 {
	if o.kafka {
		return []int32{9092, 9093}
	}
	return []int32{4222}
}

// wantFlows is the NetworkPolicy matrix of docs/kubernetes.md: every flow
// allowed; anything else between the peers of peersOf is denied.
func wantFlows(o overlay) []flow {
	gatewayAPI := o.gatewayAPI
	tcp := func(src, dst string, port int32) flow { return flow{src, dst, port, corev1.ProtocolTCP} }
	var f []flow
	for _, c := range []string{"node", "gateway", "control"} {
		if c == "gateway" && gatewayAPI {
			continue // no gateway pod
		}
		f = append(f, flow{c, "kube-dns", 53, corev1.ProtocolUDP}, flow{c, "kube-dns", 53, corev1.ProtocolTCP})
	}
	f = append(f,
		tcp("control", "node-stable", 7300), tcp("control", "node-canary", 7300),
		tcp("control", "maintenance", 8080),
		tcp("node", "external", 5432),
		tcp("control", "external", 5432),
		tcp("control", "external", 443), tcp("control", "external", 6443),
	)
	for _, p := range queuePorts(o) {
		f = append(f, tcp("node", "external", p), tcp("control", "external", p))
	}
	if gatewayAPI {
		return append(f,
			tcp("gateway-implementation", "node-stable", 7300), tcp("gateway-implementation", "node-canary", 7300),
			tcp("gateway-implementation", "maintenance", 8080))
	}
	return append(f,
		tcp("gateway", "node-stable", 7300), tcp("gateway", "node-canary", 7300),
		tcp("control", "gateway", 7400), tcp("control", "gateway", 7401),
		tcp("gateway", "external", 5432),
		// The data port is the front door: any client outside the namespace
		// may connect (our own pods only as their egress allows).
		tcp("external", "gateway", 7400), tcp("other-namespace", "gateway", 7400),
		tcp("gateway-implementation", "gateway", 7400), tcp("kube-dns", "gateway", 7400))
}

// peersOf is every pod of the overlay plus the outside world.
func peersOf(r *rendered) []peer {
	ours := map[string]string{"kubernetes.io/metadata.name": Namespace}
	var ps []peer
	for _, d := range r.deployments {
		name := strings.TrimPrefix(d.Name, "countersign-")
		var ports []corev1.ContainerPort
		for _, c := range d.Spec.Template.Spec.Containers {
			ports = append(ports, c.Ports...)
		}
		ps = append(ps, peer{name: name, namespace: Namespace, nsLabels: ours, labels: d.Spec.Template.Labels, ports: ports})
	}
	return append(ps,
		peer{name: "kube-dns", namespace: "kube-system", nsLabels: map[string]string{"kubernetes.io/metadata.name": "kube-system"},
			labels: map[string]string{"k8s-app": "kube-dns"}, ports: []corev1.ContainerPort{
				{ContainerPort: 53, Protocol: corev1.ProtocolUDP}, {ContainerPort: 53, Protocol: corev1.ProtocolTCP}}},
		peer{name: "gateway-implementation", namespace: "gateway-system",
			nsLabels: map[string]string{"kubernetes.io/metadata.name": "gateway-system", "countersign.dev/gateway-implementation": "true"},
			labels:   map[string]string{"app": "proxy"}},
		peer{name: "other-namespace", namespace: "elsewhere", nsLabels: map[string]string{"kubernetes.io/metadata.name": "elsewhere"},
			labels: map[string]string{labelName: "countersign", labelComponent: "control"}}, // same labels, wrong namespace
		peer{name: "external", ip: netip.MustParseAddr("203.0.113.10")},
	)
}

func TestNetworkPolicyMatrix(t *testing.T) {
	for _, o := range overlays {
		t.Run(o.dir, func(t *testing.T) {
			r := render(t, o)
			want := map[string]bool{}
			for _, f := range wantFlows(o) {
				want[matrixKey(f)] = true
			}
			peers := peersOf(r)
			got := map[string]bool{}
			for _, src := range peers {
				for _, dst := range peers {
					if src.name == dst.name && !src.external() {
						continue
					}
					var targets []corev1.ContainerPort
					if dst.external() {
						for _, p := range externalPorts {
							targets = append(targets, corev1.ContainerPort{ContainerPort: p, Protocol: corev1.ProtocolTCP})
						}
					} else {
						targets = dst.ports
					}
					for _, p := range targets {
						if src.namespace != Namespace && dst.namespace != Namespace {
							continue // neither end is ours: no policy of ours applies
						}
						f := flow{src.name, dst.name, p.ContainerPort, protocolOf(p.Protocol)}
						if allowed(r, src, dst, f.port, f.proto) {
							got[matrixKey(f)] = true
						}
					}
				}
			}
			for _, k := range slices.Sorted(maps.Keys(got)) {
				if !want[k] {
					t.Errorf("allowed but not in the matrix: %s", k)
				}
			}
			for _, k := range slices.Sorted(maps.Keys(want)) {
				if !got[k] {
					t.Errorf("in the matrix but denied: %s", k)
				}
			}
		})
	}
}

// matrixKey folds the two pools into "node" as a source (they carry the
// same policies) and keeps them apart as destinations.
func matrixKey(f flow) string {
	if strings.HasPrefix(f.src, "node-") {
		f.src = "node"
	}
	return f.String()
}

func protocolOf(p corev1.Protocol) corev1.Protocol {
	if p == "" {
		return corev1.ProtocolTCP
	}
	return p
}

// allowed evaluates the NetworkPolicy semantics for one connection: the
// destination's ingress policies (when it is one of our pods) and the
// source's egress policies (likewise) must both admit it.
func allowed(r *rendered, src, dst peer, port int32, proto corev1.Protocol) bool {
	if dst.namespace == Namespace && !admits(r, networkingv1.PolicyTypeIngress, dst, src, dst, port, proto) {
		return false
	}
	if src.namespace == Namespace && !admits(r, networkingv1.PolicyTypeEgress, src, dst, dst, port, proto) {
		return false
	}
	return true
}

// admits reports whether the policies of direction dir that select pod let
// it talk to other (port resolved against dst's named ports). A pod no
// policy of that direction selects is not isolated.
func admits(r *rendered, dir networkingv1.PolicyType, pod, other, dst peer, port int32, proto corev1.Protocol) bool {
	isolated := false
	for _, np := range r.netpols {
		if !slices.Contains(np.Spec.PolicyTypes, dir) || !selects(np.Spec.PodSelector, pod.labels) {
			continue
		}
		isolated = true
		if dir == networkingv1.PolicyTypeIngress {
			for _, rule := range np.Spec.Ingress {
				if peersMatch(rule.From, other, np.Namespace) && portsMatch(rule.Ports, dst, port, proto) {
					return true
				}
			}
		} else {
			for _, rule := range np.Spec.Egress {
				if peersMatch(rule.To, other, np.Namespace) && portsMatch(rule.Ports, dst, port, proto) {
					return true
				}
			}
		}
	}
	return !isolated
}

func selects(sel metav1.LabelSelector, l map[string]string) bool {
	s, err := metav1.LabelSelectorAsSelector(&sel)
	if err != nil {
		panic(fmt.Sprintf("selector %s: %v", mustJSON(sel), err))
	}
	return s.Matches(labels.Set(l))
}

func peersMatch(peers []networkingv1.NetworkPolicyPeer, p peer, policyNS string) bool {
	if len(peers) == 0 {
		return true
	}
	for _, np := range peers {
		switch {
		case np.IPBlock != nil:
			if p.external() && ipBlockHas(*np.IPBlock, p.ip) {
				return true
			}
		case p.external():
			// Pod and namespace selectors never match an outside address.
		case np.NamespaceSelector == nil:
			if p.namespace == policyNS && selects(*np.PodSelector, p.labels) {
				return true
			}
		default:
			if selects(*np.NamespaceSelector, p.nsLabels) && (np.PodSelector == nil || selects(*np.PodSelector, p.labels)) {
				return true
			}
		}
	}
	return false
}

func ipBlockHas(b networkingv1.IPBlock, ip netip.Addr) bool {
	pfx, err := netip.ParsePrefix(b.CIDR)
	if err != nil || !pfx.Contains(ip) {
		return false
	}
	for _, e := range b.Except {
		if x, err := netip.ParsePrefix(e); err == nil && x.Contains(ip) {
			return false
		}
	}
	return true
}

func portsMatch(ports []networkingv1.NetworkPolicyPort, dst peer, port int32, proto corev1.Protocol) bool {
	if len(ports) == 0 {
		return true
	}
	for _, p := range ports {
		if protocolOf(ptrOr(p.Protocol)) != proto {
			continue
		}
		if p.Port == nil {
			return true
		}
		lo := int32(-1)
		if p.Port.Type == intstr.Int {
			lo = p.Port.IntVal
		} else {
			for _, cp := range dst.ports {
				if cp.Name == p.Port.StrVal && protocolOf(cp.Protocol) == proto {
					lo = cp.ContainerPort
				}
			}
		}
		hi := lo
		if p.EndPort != nil {
			hi = *p.EndPort
		}
		if lo >= 0 && port >= lo && port <= hi {
			return true
		}
	}
	return false
}

func ptrOr(p *corev1.Protocol) corev1.Protocol {
	if p == nil {
		return ""
	}
	return *p
}

func TestEveryDeploymentHasABudgetAndAPolicy(t *testing.T) {
	for _, o := range overlays {
		t.Run(o.dir, func(t *testing.T) {
			r := render(t, o)
			denyAll := false
			for _, np := range r.netpols {
				if len(np.Spec.PodSelector.MatchLabels)+len(np.Spec.PodSelector.MatchExpressions) == 0 {
					denyAll = denyAll || (len(np.Spec.Ingress) == 0 && len(np.Spec.Egress) == 0 &&
						slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) &&
						slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeEgress))
				}
			}
			if !denyAll {
				t.Error("no default-deny NetworkPolicy (empty podSelector, Ingress and Egress, no rules)")
			}
			for _, d := range r.deployments {
				tl := d.Spec.Template.Labels
				var budgets []string
				for _, pdb := range r.pdbs {
					if pdb.Spec.Selector != nil && selects(*pdb.Spec.Selector, tl) {
						budgets = append(budgets, pdb.Name)
						checkBudget(t, d.Name, replicasOf(d.Spec.Replicas), pdb.Spec.MinAvailable, pdb.Spec.MaxUnavailable, o.production)
					}
				}
				if len(budgets) != 1 {
					t.Errorf("Deployment %s: PodDisruptionBudgets %v, want exactly one", d.Name, budgets)
				}
				var own []string
				for _, np := range r.netpols {
					sel := np.Spec.PodSelector
					if len(sel.MatchLabels)+len(sel.MatchExpressions) > 0 && selects(sel, tl) &&
						slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) &&
						slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeEgress) {
						own = append(own, np.Name)
					}
				}
				if len(own) != 1 {
					t.Errorf("Deployment %s: NetworkPolicies of its own (Ingress and Egress) %v, want exactly one", d.Name, own)
				}
			}
		})
	}
}

func replicasOf(p *int32) int {
	if p == nil {
		return 1
	}
	return int(*p)
}

// checkBudget: a budget must let a drain proceed (one eviction allowed at
// the declared size), and in production keep two serving where there are
// three.
func checkBudget(t *testing.T, name string, replicas int, minAvail, maxUnavail *intstr.IntOrString, production bool) {
	t.Helper()
	switch {
	case (minAvail == nil) == (maxUnavail == nil):
		t.Errorf("PDB of %s: set exactly one of minAvailable and maxUnavailable", name)
	case minAvail != nil:
		if minAvail.Type != intstr.Int || int(minAvail.IntVal) >= replicas || minAvail.IntVal < 1 {
			t.Errorf("PDB of %s: minAvailable %s with %d replicas; want an integer in [1, replicas-1] so drains proceed", name, minAvail.String(), replicas)
		}
		if production && replicas >= 3 && minAvail.IntVal < 2 {
			t.Errorf("PDB of %s: minAvailable %d with %d replicas in production, want 2 or more", name, minAvail.IntVal, replicas)
		}
	default:
		if maxUnavail.Type != intstr.Int || maxUnavail.IntVal < 1 {
			t.Errorf("PDB of %s: maxUnavailable %s, want an integer >= 1", name, maxUnavail.String())
		}
	}
}
