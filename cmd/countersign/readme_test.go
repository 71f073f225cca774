package main

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestReadmeCommands keeps the README true: every countersign command in
// its "Signing by hand" block must be run by testdata/script/readme.txtar
// (with the port replaced), so a command cannot be documented without
// being tested.
func TestReadmeCommands(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	script, err := os.ReadFile("testdata/script/readme.txtar")
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(readme), "## Signing by hand")
	if !ok {
		t.Fatal(`README has no "## Signing by hand" section`)
	}
	block := regexp.MustCompile("(?s)```\n(.*?)```").FindStringSubmatch(after)
	if block == nil {
		t.Fatal("no code block in the README's signing section")
	}
	norm := func(s string) string {
		s = strings.ReplaceAll(s, "127.0.0.1:$PORT", "127.0.0.1:7300")
		s = strings.TrimPrefix(s, "exec ")
		return strings.Join(strings.Fields(s), " ")
	}
	lines := map[string]bool{}
	for _, l := range strings.Split(string(script), "\n") {
		lines[norm(l)] = true
	}
	n := 0
	for _, cmd := range strings.Split(strings.TrimSpace(block[1]), "\n") {
		cmd = norm(cmd)
		if cmd == "" {
			continue
		}
		n++
		found := lines[cmd]
		if !found {
			// Flags appended for speed in the test (e.g. a shorter crypto
			// measurement) are allowed after the README's own words.
			for l := range lines {
				if strings.HasPrefix(l, cmd+" ") {
					found = true
				}
			}
		}
		if !found {
			t.Errorf("README command not run by readme.txtar: %s", cmd)
		}
	}
	if n < 5 {
		t.Errorf("found only %d commands in the README block", n)
	}
}
