package kube

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"

	"github.com/countersign/countersign/internal/fleet"
)

// diffObjects lists the fields that differ between two states of one
// object (before is nil when the object does not exist yet), as
// fleet.Change values sorted by field. Fields the server keeps for itself
// (managedFields, resourceVersion, generation, status...) are left out;
// ConfigMap data shows as digests, not contents.
func diffObjects(kind, namespace, name string, before, after any) ([]fleet.Change, error) {
	b, err := flattenObject(kind, before)
	if err != nil {
		return nil, err
	}
	a, err := flattenObject(kind, after)
	if err != nil {
		return nil, err
	}
	var out []fleet.Change
	for _, k := range slices.Sorted(maps.Keys(union(a, b))) {
		if a[k] != b[k] {
			out = append(out, fleet.Change{Kind: kind, Namespace: namespace, Name: name, Field: k, From: b[k], To: a[k]})
		}
	}
	return out, nil
}

func union(a, b map[string]string) map[string]bool {
	u := map[string]bool{}
	for k := range a {
		u[k] = true
	}
	for k := range b {
		u[k] = true
	}
	return u
}

// ignored are paths the server sets, or that name the object itself.
var ignored = map[string]bool{
	"kind": true, "apiVersion": true, "status": true,
	"metadata.managedFields": true, "metadata.resourceVersion": true, "metadata.generation": true,
	"metadata.uid": true, "metadata.creationTimestamp": true, "metadata.name": true,
	"metadata.namespace": true, "metadata.selfLink": true,
}

// flattenObject turns an API object into field path → value. A nil
// object (or nil pointer) has no fields.
func flattenObject(kind string, obj any) (map[string]string, error) {
	out := map[string]string{}
	raw, err := json.Marshal(obj)
	if err != nil {
		return nil, fmt.Errorf("fleet/kube: encode %s: %w", kind, err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("fleet/kube: decode %s: %w", kind, err)
	}
	flatten("", "", v, out)
	if kind == "ConfigMap" {
		for k, val := range out {
			if strings.HasPrefix(k, "data[") || strings.HasPrefix(k, "binaryData[") {
				out[k] = fmt.Sprintf("sha256:%s (%d bytes)", sha256Hex([]byte(val)), len(val))
			}
		}
	}
	return out, nil
}

// stringMaps hold user keys (with dots and slashes): their keys are shown
// in brackets, as list items keyed by name are.
var stringMaps = map[string]bool{
	"annotations": true, "labels": true, "data": true, "binaryData": true, "nodeSelector": true, "matchLabels": true,
}

var identRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// flatten walks v. Leaves are scalars and lists of scalars (as JSON, so
// "args" is one field); lists of objects with unique names are indexed by
// name ("containers[node]"), other lists by position. Null is absent.
func flatten(path, parent string, v any, out map[string]string) {
	if ignored[path] {
		return
	}
	switch x := v.(type) {
	case nil:
	case map[string]any:
		if len(x) == 0 {
			out[path] = "{}"
		}
		for k, val := range x {
			flatten(joinPath(path, parent, k), k, val, out)
		}
	case []any:
		if len(x) == 0 {
			out[path] = "[]"
			return
		}
		if names, ok := itemNames(x); ok {
			for i, item := range x {
				flatten(path+"["+names[i]+"]", "", item, out)
			}
			return
		}
		if scalars(x) {
			b, _ := json.Marshal(x) // decoded JSON re-encodes
			out[path] = string(b)
			return
		}
		for i, item := range x {
			flatten(fmt.Sprintf("%s[%d]", path, i), "", item, out)
		}
	case string:
		out[path] = x
	default:
		out[path] = fmt.Sprint(x)
	}
}

func joinPath(path, parent, key string) string {
	if stringMaps[parent] || !identRE.MatchString(key) {
		return path + "[" + key + "]"
	}
	if path == "" {
		return key
	}
	return path + "." + key
}

// itemNames returns the "name" of every item when all are objects with a
// distinct name (containers, env, volumes, ports).
func itemNames(items []any) ([]string, bool) {
	names := make([]string, len(items))
	seen := map[string]bool{}
	for i, it := range items {
		m, ok := it.(map[string]any)
		if !ok {
			return nil, false
		}
		n, ok := m["name"].(string)
		if !ok || seen[n] {
			return nil, false
		}
		seen[n], names[i] = true, n
	}
	return names, true
}

func scalars(items []any) bool {
	for _, it := range items {
		switch it.(type) {
		case map[string]any, []any:
			return false
		}
	}
	return true
}
