package manifests

import (
	"fmt"
	"maps"
	"slices"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
)

// contractRules is the control plane's Role, exactly: "group/resource" →
// verbs.
var contractRules = map[string][]string{
	"apps/deployments":                     {"get", "list", "watch", "patch"},
	"apps/replicasets":                     {"get", "list", "watch", "patch"},
	"/pods":                                {"get", "list", "watch"},
	"/configmaps":                          {"get", "list", "watch", "create", "patch"},
	"gateway.networking.k8s.io/httproutes": {"get", "list", "watch", "patch"},
}

// normalizeRules flattens RBAC rules to "group/resource" → sorted verbs,
// refusing what the contract never uses (resourceNames, non-resource URLs,
// wildcards).
func normalizeRules(rules []rbacv1.PolicyRule) (map[string][]string, error) {
	out := map[string][]string{}
	for _, r := range rules {
		if len(r.ResourceNames) > 0 || len(r.NonResourceURLs) > 0 {
			return nil, fmt.Errorf("rule %s: resourceNames and nonResourceURLs are not part of the contract", mustJSON(r))
		}
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				for _, v := range r.Verbs {
					if g == "*" || res == "*" || v == "*" {
						return nil, fmt.Errorf("rule %s: wildcard", mustJSON(r))
					}
					k := g + "/" + res
					if !slices.Contains(out[k], v) {
						out[k] = append(out[k], v)
					}
				}
			}
		}
	}
	for k := range out {
		slices.Sort(out[k])
	}
	return out, nil
}

func sortedContract() map[string][]string {
	want := map[string][]string{}
	for k, v := range contractRules {
		want[k] = slices.Sorted(slices.Values(v))
	}
	return want
}

func TestControlRoleIsTheContract(t *testing.T) {
	for _, o := range overlays {
		t.Run(o.dir, func(t *testing.T) {
			r := render(t, o)
			if len(r.roles) != 1 || r.roles[0].Name != "countersign-control" {
				t.Fatalf("Roles %v, want exactly countersign-control", names(r.roles, func(x rbacv1.Role) string { return x.Name }))
			}
			got, err := normalizeRules(r.roles[0].Rules)
			if err != nil {
				t.Fatal(err)
			}
			if want := sortedContract(); !maps.EqualFunc(got, want, slices.Equal) {
				t.Errorf("Role countersign-control rules\n got %v\nwant %v", got, want)
			}
			if len(r.roleBindings) != 1 {
				t.Fatalf("%d RoleBindings, want 1", len(r.roleBindings))
			}
			b := r.roleBindings[0]
			wantSubj := []rbacv1.Subject{{Kind: "ServiceAccount", Name: "countersign-control", Namespace: Namespace}}
			if b.Name != "countersign-control" || b.RoleRef != (rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "countersign-control"}) ||
				!slices.Equal(b.Subjects, wantSubj) {
				t.Errorf("RoleBinding %s: roleRef %s subjects %s; want Role countersign-control bound to ServiceAccount %s/countersign-control only",
					b.Name, mustJSON(b.RoleRef), mustJSON(b.Subjects), Namespace)
			}
		})
	}
}
