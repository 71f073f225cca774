package postgres

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/countersign/countersign/internal/store"
)

// TestKeyLookupsProbeTheIndex checks that CommitSignatures' key lookups
// probe the unique (tenant_id, idempotency_key) index for every key, in
// the plans PostgreSQL really runs them with: a generic plan made while the
// tables were empty and kept while they grew to 50,000 rows (a node's
// pooled connection caches its prepared statements' generic plan, and table
// growth does not invalidate it), and custom plans on the grown tables
// before and after ANALYZE. Written as IN (SELECT * FROM unnest(...)), the
// signature lookup's generic plan made on an empty table was a hash join
// over a sequential scan, so every later batch commit read every signature
// ever made.
func TestKeyLookupsProbeTheIndex(t *testing.T) {
	ctx := t.Context()
	s := openTest(t, store.Options{Migrate: true})
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	exec := func(q string) {
		t.Helper()
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	const rows = 50000
	tenants, keys := make([]string, 256), make([]string, 256)
	for i := range keys {
		tenants[i], keys[i] = "ten_dev", fmt.Sprintf("0190f3a2-%012x", rows+i+1)
	}
	// EXPLAIN EXECUTE takes no bind parameters: literal arrays (the keys
	// are hex and dashes).
	args := "'{" + strings.Join(tenants, ",") + "}', '{" + strings.Join(keys, ",") + "}'"
	lookups := map[string]string{"signatures": existingSignaturesSQL, "jobs": jobKeysSQL}
	check := func(when string, stmt, rel string) {
		t.Helper()
		var plan []byte
		if err := conn.QueryRow(ctx, "EXPLAIN (FORMAT JSON) EXECUTE "+stmt+"("+args+")").Scan(&plan); err != nil {
			t.Fatal(err)
		}
		if scans := scansOf(t, plan, rel); len(scans) == 0 || strings.Contains(strings.Join(scans, ","), "Seq Scan") {
			t.Errorf("%s lookup, %s: reads %s by %v, want index probes only:\n%s", rel, when, rel, scans, plan)
		}
	}

	exec("SET plan_cache_mode = force_generic_plan")
	for rel, q := range lookups {
		exec("PREPARE generic_" + rel + "(text[], text[]) AS " + q)
		check("generic plan on empty tables", "generic_"+rel, rel)
	}
	exec(fmt.Sprintf(`INSERT INTO signatures (id, tenant_id, idempotency_key, request_hash, key_name, key_version, format,
		algorithm, algorithm_oid, digest_algorithm, digest_oid, document_digest, document_id, signature, release,
		instance, audit_index, signed_at)
		SELECT 'sig_' || lpad(to_hex(i), 16, '0'), 'ten_dev', '0190f3a2-' || lpad(to_hex(i), 12, '0'), '\x00', 'default', 1,
			'raw', 'ecdsa-p256', '1.2.840.10045.4.3.2', 'sha256', '2.16.840.1.101.3.4.2.1', '\x00', '', '\x00',
			'v1', 'node-1', 1000000000 + i, now()
		FROM generate_series(1, %d) AS i`, rows))
	exec(fmt.Sprintf(`INSERT INTO jobs (id, tenant_id, idempotency_key, request_hash, request, state, release, instance, accepted_at)
		SELECT 'job_' || lpad(to_hex(i), 16, '0'), 'ten_dev', 'job-' || lpad(to_hex(i), 12, '0'), '\x00', '\x00',
			'signed', 'v1', 'node-1', now()
		FROM generate_series(1, %d) AS i`, rows))
	for rel := range lookups {
		check("the empty tables' generic plan, kept after they grew", "generic_"+rel, rel)
	}

	exec("SET plan_cache_mode = force_custom_plan")
	for rel, q := range lookups {
		exec("PREPARE custom_" + rel + "(text[], text[]) AS " + q)
		check("custom plan, grown tables never analyzed", "custom_"+rel, rel)
	}
	exec("ANALYZE signatures")
	exec("ANALYZE jobs")
	for rel := range lookups {
		check("custom plan, grown tables analyzed", "custom_"+rel, rel)
	}
}

// scansOf returns the node types of the plan's scans of relation rel.
func scansOf(t *testing.T, planJSON []byte, rel string) []string {
	t.Helper()
	var doc []struct{ Plan map[string]any }
	if err := json.Unmarshal(planJSON, &doc); err != nil || len(doc) != 1 {
		t.Fatalf("EXPLAIN output %s: %v", planJSON, err)
	}
	var scans []string
	var walk func(n map[string]any)
	walk = func(n map[string]any) {
		if n["Relation Name"] == rel {
			scans = append(scans, fmt.Sprint(n["Node Type"]))
		}
		children, _ := n["Plans"].([]any)
		for _, c := range children {
			if m, ok := c.(map[string]any); ok {
				walk(m)
			}
		}
	}
	walk(doc[0].Plan)
	return scans
}
