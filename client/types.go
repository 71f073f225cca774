package client

import "github.com/countersign/countersign/internal/api"

// The wire types, re-exported so programs outside this module can name them
// (the definitions live in the internal api package shared with the server).
type (
	Format            = api.Format
	Digest            = api.Digest
	SignRequest       = api.SignRequest
	SignResponse      = api.SignResponse
	VerifyRequest     = api.VerifyRequest
	VerifyResponse    = api.VerifyResponse
	Key               = api.Key
	KeyVersion        = api.KeyVersion
	KeyList           = api.KeyList
	BatchSignRequest  = api.BatchSignRequest
	BatchSignItem     = api.BatchSignItem
	BatchSignResponse = api.BatchSignResponse
	BatchSignResult   = api.BatchSignResult
	// Problem is an RFC 9457 error answered by the server; match on Type.
	Problem = api.Problem
)

// Formats.
const (
	FormatCMS = api.FormatCMS
	FormatJWS = api.FormatJWS
	FormatRaw = api.FormatRaw
)

// Problem types a caller may want to handle.
const (
	TypeMalformed           = api.TypeMalformed
	TypeUnauthorized        = api.TypeUnauthorized
	TypeKeyNotFound         = api.TypeKeyNotFound
	TypeKeyDisabled         = api.TypeKeyDisabled
	TypeTooLarge            = api.TypeTooLarge
	TypeIdempotencyMismatch = api.TypeIdempotencyMismatch
	TypeIdempotencyInFlight = api.TypeIdempotencyInFlight
	TypeUnsupported         = api.TypeUnsupported
	TypeMaintenance         = api.TypeMaintenance
	TypeUnavailable         = api.TypeUnavailable
)
