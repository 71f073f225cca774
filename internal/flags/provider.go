package flags

import (
	"context"
	"errors"
	"sync/atomic"

	"github.com/open-feature/flagd/core/pkg/model"
	"github.com/open-feature/go-sdk/openfeature"
)

// ProviderName is the name the provider reports in OpenFeature metadata.
const ProviderName = "countersign-flagd-file"

// eventBuffer is how many provider events may wait for the SDK to read them.
const eventBuffer = 64

// Provider is an OpenFeature provider that evaluates the flagd definitions
// currently in force. It is safe for concurrent use; a reload swaps the
// definitions atomically, so an evaluation sees either the old set or the
// new one, never a mix.
type Provider struct {
	cur     atomic.Pointer[definition]
	events  chan openfeature.Event
	dropped atomic.Int64
}

var (
	_ openfeature.FeatureProvider = (*Provider)(nil)
	_ openfeature.EventHandler    = (*Provider)(nil)
)

func newProvider(d *definition) *Provider {
	p := &Provider{events: make(chan openfeature.Event, eventBuffer)}
	p.cur.Store(d)
	return p
}

// Metadata names the provider.
func (p *Provider) Metadata() openfeature.Metadata { return openfeature.Metadata{Name: ProviderName} }

// Hooks returns no provider hooks.
func (p *Provider) Hooks() []openfeature.Hook { return nil }

// EventChannel delivers PROVIDER_CONFIGURATION_CHANGED after a reload that
// changed flags, PROVIDER_STALE when a changed file was refused (the last
// good definitions stay in force), and PROVIDER_READY when a good file is
// loaded after a refused one.
func (p *Provider) EventChannel() <-chan openfeature.Event { return p.events }

// DroppedEvents counts events discarded because nobody read the channel.
func (p *Provider) DroppedEvents() int64 { return p.dropped.Load() }

// emit never blocks a reload: an event nobody reads is counted and dropped.
func (p *Provider) emit(t openfeature.EventType, d openfeature.ProviderEventDetails) {
	select {
	case p.events <- openfeature.Event{ProviderName: ProviderName, EventType: t, ProviderEventDetails: d}:
	default:
		p.dropped.Add(1)
	}
}

// BooleanEvaluation resolves a boolean flag.
func (p *Provider) BooleanEvaluation(ctx context.Context, flag string, def bool, ec openfeature.FlattenedContext) openfeature.BoolResolutionDetail {
	v, variant, reason, meta, err := p.cur.Load().eval.ResolveBooleanValue(ctx, "", flag, ec)
	return detail(def, v, variant, reason, meta, err)
}

// StringEvaluation resolves a string flag.
func (p *Provider) StringEvaluation(ctx context.Context, flag string, def string, ec openfeature.FlattenedContext) openfeature.StringResolutionDetail {
	v, variant, reason, meta, err := p.cur.Load().eval.ResolveStringValue(ctx, "", flag, ec)
	return detail(def, v, variant, reason, meta, err)
}

// FloatEvaluation resolves a numeric flag.
func (p *Provider) FloatEvaluation(ctx context.Context, flag string, def float64, ec openfeature.FlattenedContext) openfeature.FloatResolutionDetail {
	v, variant, reason, meta, err := p.cur.Load().eval.ResolveFloatValue(ctx, "", flag, ec)
	return detail(def, v, variant, reason, meta, err)
}

// IntEvaluation resolves a numeric flag, truncated to an integer.
func (p *Provider) IntEvaluation(ctx context.Context, flag string, def int64, ec openfeature.FlattenedContext) openfeature.IntResolutionDetail {
	v, variant, reason, meta, err := p.cur.Load().eval.ResolveIntValue(ctx, "", flag, ec)
	return detail(def, v, variant, reason, meta, err)
}

// ObjectEvaluation resolves a flag of any type.
func (p *Provider) ObjectEvaluation(ctx context.Context, flag string, def any, ec openfeature.FlattenedContext) openfeature.InterfaceResolutionDetail {
	av := p.cur.Load().eval.ResolveAsAnyValue(ctx, "", flag, ec)
	return detail(def, av.Value, av.Variant, av.Reason, av.Metadata, av.Error)
}

// detail maps a flagd resolution onto OpenFeature's. Whenever flagd has no
// value to give (an error, a disabled flag, targeting that falls through with
// no default variant) the caller's default is returned.
func detail[T any](def, v T, variant, reason string, meta map[string]any, err error) openfeature.GenericResolutionDetail[T] {
	d := openfeature.GenericResolutionDetail[T]{Value: v, ProviderResolutionDetail: openfeature.ProviderResolutionDetail{
		Reason: openfeature.Reason(reason), Variant: variant, FlagMetadata: openfeature.FlagMetadata(meta),
	}}
	switch {
	case err != nil:
		d.Value = def
		d.Variant = ""
		d.Reason = openfeature.ErrorReason
		d.ResolutionError = resolutionError(err)
	case reason == model.DisabledReason:
		d.Value = def
		d.Variant = ""
	case reason == model.FallbackReason:
		d.Value = def
		d.Variant = ""
		d.Reason = openfeature.DefaultReason
	}
	return d
}

// resolutionError maps flagd's error codes (carried as error text) to
// OpenFeature resolution errors.
func resolutionError(err error) openfeature.ResolutionError {
	code := err.Error()
	msg := model.GetErrorMessage(code)
	switch code {
	case model.FlagNotFoundErrorCode:
		return openfeature.NewFlagNotFoundResolutionError(msg)
	case model.TypeMismatchErrorCode:
		return openfeature.NewTypeMismatchResolutionError(msg)
	case model.ParseErrorCode:
		return openfeature.NewParseErrorResolutionError(msg)
	case model.InvalidContextCode:
		return openfeature.NewInvalidContextResolutionError(msg)
	default:
		return openfeature.NewGeneralResolutionError(msg, errors.New(code))
	}
}
