package keys

import (
	"context"
	"fmt"
)

// Freeze stops key creation, import, rotation, state changes and
// destruction (invariant 4: keys stay put during an incident). Operations
// carrying WithCompromise still proceed. Freezing twice records both calls.
func (m *Manager) Freeze(ctx context.Context, actor, reason string) error {
	return m.setFrozen(ctx, true, actor, reason)
}

// Unfreeze lifts the freeze.
func (m *Manager) Unfreeze(ctx context.Context, actor, reason string) error {
	return m.setFrozen(ctx, false, actor, reason)
}

// Frozen reports whether key operations are frozen.
func (m *Manager) Frozen(ctx context.Context) (bool, error) {
	v, err := m.cfg.Store.Setting(ctx, SettingFrozen)
	if err != nil {
		return false, fmt.Errorf("keys: read freeze setting: %w", err)
	}
	return v == "true", nil
}

func (m *Manager) setFrozen(ctx context.Context, frozen bool, actor, reason string) error {
	typ, value := EventKeysUnfrozen, "false"
	if frozen {
		typ, value = EventKeysFrozen, "true"
	}
	if reason == "" {
		return fmt.Errorf("keys: %s: a reason is required", typ)
	}
	details := map[string]any{"reason": reason}
	if id, ok := CompromiseFrom(ctx); ok {
		details[compromiseDetail] = id
	}
	ev, err := m.event(ctx, typ, actor, "", "keys", details)
	if err != nil {
		return err
	}
	if err := m.cfg.Store.SetSetting(ctx, SettingFrozen, value, ev); err != nil {
		return fmt.Errorf("keys: %s: %w", typ, err)
	}
	m.log.InfoContext(ctx, "key freeze changed", "event", typ, "actor", actor, "reason", reason)
	return nil
}

// checkFrozen fails closed: if the freeze state cannot be read, nothing
// changes. A declared compromise passes (and is logged).
func (m *Manager) checkFrozen(ctx context.Context, op, subject string) error {
	frozen, err := m.Frozen(ctx)
	if err != nil {
		return fmt.Errorf("keys: %s %s: %w", op, subject, err)
	}
	if !frozen {
		return nil
	}
	if id, ok := CompromiseFrom(ctx); ok {
		m.log.WarnContext(ctx, "key operation during freeze under declared compromise", "op", op, "subject", subject, "incident", id)
		return nil
	}
	return fmt.Errorf("keys: %s %s: %w (declare a compromise to proceed)", op, subject, ErrFrozen)
}
