package flags

import (
	"context"
	"log/slog"
)

// Resolution is the outcome of one evaluation, for callers that stamp or
// report which variant was in force (e.g. on a signature, or in drift
// evidence).
type Resolution struct {
	Flag    string
	Value   any
	Variant string // empty when the caller's default was used
	Reason  string // OpenFeature reason: STATIC, TARGETING_MATCH, SPLIT, DEFAULT, DISABLED, ERROR
	Code    string // OpenFeature error code with Reason ERROR, e.g. FLAG_NOT_FOUND, TYPE_MISMATCH
	Err     error  // non-nil with Reason ERROR
}

// Bool evaluates a boolean flag; def is returned when the flag is
// disabled, missing or not boolean.
func (s *Set) Bool(ctx context.Context, flag string, def bool, ec EvalContext) bool {
	d, err := s.client.BooleanValueDetails(ctx, flag, def, ec.openfeature())
	s.logErr(ctx, flag, err)
	return d.Value
}

// String evaluates a string flag; def is returned when the flag is
// disabled, missing or not a string.
func (s *Set) String(ctx context.Context, flag, def string, ec EvalContext) string {
	d, err := s.client.StringValueDetails(ctx, flag, def, ec.openfeature())
	s.logErr(ctx, flag, err)
	return d.Value
}

// Int evaluates a numeric flag as an integer; def is returned when the
// flag is disabled, missing or not a number.
func (s *Set) Int(ctx context.Context, flag string, def int64, ec EvalContext) int64 {
	d, err := s.client.IntValueDetails(ctx, flag, def, ec.openfeature())
	s.logErr(ctx, flag, err)
	return d.Value
}

// Float evaluates a numeric flag; def is returned when the flag is
// disabled, missing or not a number.
func (s *Set) Float(ctx context.Context, flag string, def float64, ec EvalContext) float64 {
	d, err := s.client.FloatValueDetails(ctx, flag, def, ec.openfeature())
	s.logErr(ctx, flag, err)
	return d.Value
}

// Evaluate resolves a flag of any type and says how. Value is nil when the
// flag is disabled or could not be resolved.
func (s *Set) Evaluate(ctx context.Context, flag string, ec EvalContext) Resolution {
	d, err := s.client.ObjectValueDetails(ctx, flag, nil, ec.openfeature())
	return Resolution{Flag: flag, Value: d.Value, Variant: d.Variant, Reason: string(d.Reason),
		Code: string(d.ErrorCode), Err: err}
}

// logErr reports an evaluation that fell back to the caller's default
// because of an error (a disabled flag is not an error).
func (s *Set) logErr(ctx context.Context, flag string, err error) {
	if err != nil {
		s.log.LogAttrs(ctx, slog.LevelWarn, "flag evaluation fell back to default", slog.String("flag", flag), slog.Any("err", err))
	}
}
