package podrun

import "testing"

func TestExpand(t *testing.T) {
	vars := map[string]string{"POD_NAME": "node-abc", "EMPTY": ""}
	for in, want := range map[string]string{
		"--instance=$(POD_NAME)": "--instance=node-abc",
		"$(POD_NAME)-$(EMPTY)x":  "node-abc-x",
		"$$(POD_NAME)":           "$(POD_NAME)",
		"$(UNDEFINED)":           "$(UNDEFINED)",
		"cost $5":                "cost $5",
		"trailing $":             "trailing $",
		"$(unclosed":             "$(unclosed",
	} {
		if got := expand(in, vars); got != want {
			t.Errorf("expand(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestLocalPath(t *testing.T) {
	m := map[string]string{"/var/lib/countersign": "/tmp/inst", "/var/lib/countersign/flags": "/tmp/flags", "/etc/x/": "/tmp/x"}
	for in, want := range map[string]struct {
		p  string
		ok bool
	}{
		"/var/lib/countersign":              {"/tmp/inst", true},
		"/var/lib/countersign/config.json":  {"/tmp/inst/config.json", true},
		"/var/lib/countersign/flags/f.json": {"/tmp/flags/f.json", true}, // longest mount wins
		"/var/lib/countersignx/config.json": {"/var/lib/countersignx/config.json", false},
		"/etc/x/y":                          {"/tmp/x/y", true},
		"0.0.0.0:7300":                      {"0.0.0.0:7300", false},
	} {
		got, ok := localPath(in, m)
		if got != want.p || ok != want.ok {
			t.Errorf("localPath(%q) = %q, %v; want %q, %v", in, got, ok, want.p, want.ok)
		}
	}
}
