package httproute

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/countersign/countersign/internal/fleet"
)

// field is one leaf of a route as a plan names it.
type field struct {
	rule  int // index in spec.rules; -1 for metadata
	path  string
	value string
}

// flatten lists the fields of the rules and of the annotations named that
// the router changes: each backendRef (its port and weight, as the API
// defaults them), the headers RequestHeaderModifier filters set, and the
// annotations. A backendRef is keyed by its Service name ("ns/name" when
// in another namespace; "Kind/name" when not a Service).
func flatten(rules []any, annotations map[string]string, keys []string) map[string]field {
	out := map[string]field{}
	for i, r := range rules {
		rule, _ := r.(map[string]any)
		base := fmt.Sprintf("spec.rules[%d]", i)
		refs, _ := rule["backendRefs"].([]any)
		for _, rv := range refs {
			ref, _ := rv.(map[string]any)
			p := base + ".backendRefs[" + refKey(ref) + "]"
			out[p] = field{rule: i, path: p, value: refValue(ref)}
		}
		filters, _ := rule["filters"].([]any)
		for _, fv := range filters {
			fm, _ := fv.(map[string]any)
			if t, _ := fm["type"].(string); t != "RequestHeaderModifier" {
				continue
			}
			m, _ := fm["requestHeaderModifier"].(map[string]any)
			set, _ := m["set"].([]any)
			for _, h := range set {
				hm, _ := h.(map[string]any)
				name, _ := hm["name"].(string)
				value, _ := hm["value"].(string)
				p := base + ".filters[RequestHeaderModifier].set[" + name + "]"
				out[p] = field{rule: i, path: p, value: value}
			}
		}
	}
	for _, k := range keys {
		if v, ok := annotations[k]; ok {
			p := "metadata.annotations[" + k + "]"
			out[p] = field{rule: -1, path: p, value: v}
		}
	}
	return out
}

func refKey(ref map[string]any) string {
	name, _ := ref["name"].(string)
	if ns, _ := ref["namespace"].(string); ns != "" {
		name = ns + "/" + name
	}
	kind, _ := ref["kind"].(string)
	if group, _ := ref["group"].(string); group != "" {
		kind += "." + group
	}
	if kind != "" && kind != "Service" {
		name = kind + "/" + name
	}
	return name
}

func refValue(ref map[string]any) string {
	port := ""
	if p, ok := asInt(ref["port"]); ok {
		port = strconv.FormatInt(p, 10)
	}
	return "port=" + port + " weight=" + strconv.FormatInt(refWeight(ref), 10)
}

// diff lists the changes from one flattened route to another, ordered by
// rule, then path, with metadata last. A backendRef kept in a rule shows
// its weight (and port) change, e.g.
// spec.rules[0].backendRefs[countersign-node-canary].weight 0 → 10; one
// added or removed shows as the whole ref ("port=8080 weight=1" ↔ "").
func diff(kind, namespace, name string, from, to map[string]field) []fleet.Change {
	paths := map[string]field{}
	for p, f := range from {
		paths[p] = f
	}
	for p, f := range to {
		paths[p] = f
	}
	order := slices.SortedFunc(maps.Values(paths), func(a, b field) int {
		ra, rb := a.rule, b.rule
		if ra < 0 {
			ra = 1 << 30
		}
		if rb < 0 {
			rb = 1 << 30
		}
		return cmp.Or(cmp.Compare(ra, rb), strings.Compare(a.path, b.path))
	})
	var out []fleet.Change
	add := func(field, a, b string) {
		out = append(out, fleet.Change{Kind: kind, Namespace: namespace, Name: name, Field: field, From: a, To: b})
	}
	for _, f := range order {
		a, inA := from[f.path]
		b, inB := to[f.path]
		switch {
		case inA && inB && a.value == b.value:
		case inA && inB && strings.Contains(f.path, ".backendRefs["):
			pa, wa, _ := strings.Cut(a.value, " ")
			pb, wb, _ := strings.Cut(b.value, " ")
			if pa != pb {
				add(f.path+".port", strings.TrimPrefix(pa, "port="), strings.TrimPrefix(pb, "port="))
			}
			if wa != wb {
				add(f.path+".weight", strings.TrimPrefix(wa, "weight="), strings.TrimPrefix(wb, "weight="))
			}
		default:
			add(f.path, a.value, b.value)
		}
	}
	return out
}
