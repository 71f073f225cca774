package httproute

import (
	"strconv"
	"strings"

	"github.com/countersign/countersign/internal/gateway"
	"github.com/countersign/countersign/internal/traffic"
	"k8s.io/apimachinery/pkg/runtime"
)

// The gate's rendering: which rules go to the maintenance Service, and the
// RequestHeaderModifier that tells it the Retry-After. Pure, like rules.go.

// withGate returns the rules with the gate g applied: while g is on, every
// rule that can carry a write (every rule, with BlockReads) routes only to
// the maintenance Service and sets RetryAfterHeader; a gated rule the gate
// no longer covers is routed to the pools again, split by w. Pool rules the
// gate does not cover, and other rules, are unchanged.
func (l *layout) withGate(rt *route, g gateway.Gate, w map[string]int) []any {
	out := make([]any, len(rt.rules))
	for i, r := range rt.rules {
		rule := runtime.DeepCopyJSONValue(r).(map[string]any)
		if k := rt.kinds[i]; k != otherRule {
			switch cover := g.On && (g.BlockReads || rt.writes[i]); {
			case cover:
				rule["backendRefs"] = []any{map[string]any{"name": l.maintenance.Service, "port": int64(l.maintenance.Port), "weight": int64(1)}}
				setRetryHeader(rule, g.RetryAfter)
			case k == gatedRule:
				refs := make([]any, 0, len(l.pools))
				for _, p := range l.poolNames() {
					refs = append(refs, l.poolRef(p, w[p]))
				}
				rule["backendRefs"] = refs
				removeRetryHeader(rule)
			}
		}
		out[i] = rule
	}
	return out
}

// setRetryHeader makes the rule set RetryAfterHeader to secs, in its
// RequestHeaderModifier (a rule may have only one) or a new one.
func setRetryHeader(rule map[string]any, secs int) {
	entry := map[string]any{"name": traffic.RetryAfterHeader, "value": strconv.Itoa(secs)}
	f := headerFilter(rule)
	if f == nil {
		filters, _ := rule["filters"].([]any)
		rule["filters"] = append(filters, map[string]any{"type": "RequestHeaderModifier",
			"requestHeaderModifier": map[string]any{"set": []any{entry}}})
		return
	}
	set, _ := f["set"].([]any)
	for i, h := range set {
		if name, _ := h.(map[string]any)["name"].(string); strings.EqualFold(name, traffic.RetryAfterHeader) {
			set[i] = entry
			return
		}
	}
	f["set"] = append(set, entry)
}

// removeRetryHeader undoes setRetryHeader, dropping what becomes empty.
func removeRetryHeader(rule map[string]any) {
	filters, _ := rule["filters"].([]any)
	kept := filters[:0]
	for _, fv := range filters {
		fm, _ := fv.(map[string]any)
		if t, _ := fm["type"].(string); t == "RequestHeaderModifier" {
			m, _ := fm["requestHeaderModifier"].(map[string]any)
			set, _ := m["set"].([]any)
			var rest []any
			for _, h := range set {
				if name, _ := h.(map[string]any)["name"].(string); !strings.EqualFold(name, traffic.RetryAfterHeader) {
					rest = append(rest, h)
				}
			}
			if len(rest) == 0 {
				delete(m, "set")
			} else {
				m["set"] = rest
			}
			if len(m) == 0 {
				continue
			}
		}
		kept = append(kept, fv)
	}
	if len(kept) == 0 {
		delete(rule, "filters")
	} else {
		rule["filters"] = kept
	}
}

// retryAfterOf is the Retry-After a gated rule asks the maintenance
// backend for, 0 when it sets none (the backend's default applies).
func retryAfterOf(rule map[string]any) int {
	f := headerFilter(rule)
	if f == nil {
		return 0
	}
	set, _ := f["set"].([]any)
	for _, h := range set {
		hm, _ := h.(map[string]any)
		if name, _ := hm["name"].(string); strings.EqualFold(name, traffic.RetryAfterHeader) {
			v, _ := hm["value"].(string)
			if n, err := strconv.Atoi(v); err == nil && n >= 1 && n <= traffic.MaxRetryAfter {
				return n
			}
		}
	}
	return 0
}

// hasRetryHeader reports whether the rule sets RetryAfterHeader: the mark
// of a rule the gate sent to the maintenance Service.
func hasRetryHeader(rule map[string]any) bool {
	set, _ := headerFilter(rule)["set"].([]any)
	for _, h := range set {
		hm, _ := h.(map[string]any)
		if name, _ := hm["name"].(string); strings.EqualFold(name, traffic.RetryAfterHeader) {
			return true
		}
	}
	return false
}

// headerFilter returns the rule's RequestHeaderModifier, or nil.
func headerFilter(rule map[string]any) map[string]any {
	filters, _ := rule["filters"].([]any)
	for _, f := range filters {
		fm, _ := f.(map[string]any)
		if t, _ := fm["type"].(string); t == "RequestHeaderModifier" {
			m, _ := fm["requestHeaderModifier"].(map[string]any)
			return m
		}
	}
	return nil
}
