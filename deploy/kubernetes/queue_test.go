package manifests

import (
	"bytes"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// How the pods name their queue: NATS in base, Kafka with component kafka.
// The binaries refuse to start when $COUNTERSIGN_QUEUE_URL and
// $COUNTERSIGN_NATS_URL (or --queue-url and --nats) name different
// queues, so a container carries one or the other, never both.
const (
	natsEnv     = "COUNTERSIGN_NATS_URL"
	natsSecret  = "countersign-nats"
	kafkaEnv    = "COUNTERSIGN_QUEUE_URL"
	kafkaSecret = "countersign-kafka"
	queueKey    = "url"
)

// TestQueueWiring checks which queue the node pools and the control plane
// are given, and that nothing else is given one.
func TestQueueWiring(t *testing.T) {
	for _, o := range overlays {
		t.Run(o.dir, func(t *testing.T) {
			r := render(t, o)
			wantEnv, wantSecret, otherEnv := natsEnv, natsSecret, kafkaEnv
			if o.kafka {
				wantEnv, wantSecret, otherEnv = kafkaEnv, kafkaSecret, natsEnv
			}
			users := 0
			for _, d := range r.deployments {
				comp := d.Labels[labelComponent]
				for _, c := range slices.Concat(d.Spec.Template.Spec.InitContainers, d.Spec.Template.Spec.Containers) {
					where := "Deployment " + d.Name + " container " + c.Name
					if n := countEnv(c, otherEnv); n > 0 {
						t.Errorf("%s: env %s set; want only %s (two queue variables naming different queues stop the binary)", where, otherEnv, wantEnv)
					}
					uses := (comp == "node" || comp == "control") && c.Name == comp
					if !uses {
						if countEnv(c, wantEnv) > 0 {
							t.Errorf("%s: env %s set, but only the nodes and the control plane use the queue", where, wantEnv)
						}
						continue
					}
					users++
					checkQueueEnv(t, r, where, c, wantEnv, wantSecret)
					checkQueueArgs(t, where, c)
				}
			}
			if users != 3 {
				t.Errorf("%d containers given the queue, want 3 (two node pools and the control plane)", users)
			}
			if o.kafka && bytes.Contains(r.yaml, []byte(natsSecret)) {
				t.Errorf("the rendered manifests still refer to the Secret %s; with component kafka it is not needed", natsSecret)
			}
			if !o.kafka && bytes.Contains(r.yaml, []byte(kafkaSecret)) {
				t.Errorf("the rendered manifests refer to the Secret %s without component kafka", kafkaSecret)
			}
		})
	}
}

func countEnv(c corev1.Container, name string) int {
	n := 0
	for _, e := range c.Env {
		if e.Name == name {
			n++
		}
	}
	return n
}

// checkQueueEnv: the URL (which may carry credentials) comes from the key
// url of the queue's Secret (in overlay dev, the one it generates, whose
// name kustomize suffixes with a hash).
func checkQueueEnv(t *testing.T, r *rendered, where string, c corev1.Container, name, secret string) {
	t.Helper()
	if n := countEnv(c, name); n != 1 {
		t.Errorf("%s: env %s set %d times, want once", where, name, n)
		return
	}
	for _, e := range c.Env {
		if e.Name != name {
			continue
		}
		ref := (*corev1.SecretKeySelector)(nil)
		if e.ValueFrom != nil {
			ref = e.ValueFrom.SecretKeyRef
		}
		named := ref != nil && (ref.Name == secret || strings.HasPrefix(ref.Name, secret+"-") &&
			slices.ContainsFunc(r.secrets, func(s corev1.Secret) bool { return s.Name == ref.Name }))
		if e.Value != "" || !named || ref.Key != queueKey || (ref.Optional != nil && *ref.Optional) {
			t.Errorf("%s: env %s is %s, want it from the key %s of the Secret %s (not optional)", where, name, mustJSON(e), queueKey, secret)
		}
	}
}

// checkQueueArgs: the nodes and the control plane take the queue URL from
// their environment (the default of --nats and --queue-url), never from
// an argument, so that its credentials never reach a command line, where
// anyone who may list processes on the node reads them.
func checkQueueArgs(t *testing.T, where string, c corev1.Container) {
	t.Helper()
	var queueArgs []string
	for _, a := range c.Args {
		if strings.HasPrefix(a, "--nats=") || strings.HasPrefix(a, "--queue-url=") ||
			strings.Contains(a, "$("+natsEnv+")") || strings.Contains(a, "$("+kafkaEnv+")") {
			queueArgs = append(queueArgs, a)
		}
	}
	if len(queueArgs) > 0 {
		t.Errorf("%s: queue arguments %q, want none (the URL comes from the environment)", where, queueArgs)
	}
	secretEnv := map[string]bool{}
	for _, e := range c.Env {
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			secretEnv[e.Name] = true
		}
	}
	for _, a := range c.Args {
		for _, m := range varRefRE.FindAllStringSubmatch(a, -1) {
			if secretEnv[m[1]] {
				t.Errorf("%s: argument %q expands the Secret value $(%s) onto the command line", where, a, m[1])
			}
		}
	}
}
