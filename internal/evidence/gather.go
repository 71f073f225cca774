package evidence

import (
	"context"
	"errors"
	"fmt"

	"github.com/countersign/countersign/internal/auditlog"
	"github.com/countersign/countersign/internal/store"
)

// Source is what Gather reads (store.Store).
type Source interface {
	auditlog.Reader
	SignatureByID(ctx context.Context, id string) (store.Signature, error)
	KeyVersions(ctx context.Context, tenantID, name string) ([]store.KeyVersion, error)
}

// Gather fills c's Signatures, Proofs and Keys from src for every
// remediated signature of c.Report (each with a tlog-proof against the
// latest checkpoint, which must cover it).
func Gather(ctx context.Context, src Source, c *Contents) error {
	if c.Report == nil || c.Report.Signatures == nil {
		return nil
	}
	if c.Proofs == nil {
		c.Proofs = map[string]auditlog.Proof{}
	}
	type ref struct {
		tenant, name string
		version      int
	}
	keys := map[ref]bool{}
	for _, t := range c.Report.Signatures.Remediation {
		for _, d := range t.Documents {
			s, err := src.SignatureByID(ctx, d.SignatureID)
			if err != nil {
				return fmt.Errorf("evidence: signature %s: %w", d.SignatureID, err)
			}
			c.Signatures = append(c.Signatures, s)
			p, err := auditlog.ProveIndex(ctx, src, s.AuditIndex)
			if err != nil {
				return fmt.Errorf("evidence: proof of signature %s: %w", s.ID, err)
			}
			c.Proofs[s.ID] = p
			keys[ref{s.TenantID, s.KeyName, s.KeyVersion}] = true
		}
	}
	for k := range keys {
		vs, err := src.KeyVersions(ctx, k.tenant, k.name)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("evidence: key %s/%s: %w", k.tenant, k.name, err)
		}
		for _, kv := range vs {
			if kv.Version == k.version {
				c.Keys = append(c.Keys, kv)
			}
		}
	}
	return nil
}
