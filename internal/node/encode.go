package node

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"strconv"
	"time"

	"github.com/countersign/countersign/internal/api"
	"github.com/countersign/countersign/internal/auditlog"
	"github.com/countersign/countersign/internal/store"
)

// The sign path renders two JSON documents per signature: the response
// (api.SignResponse) and the audit entry (auditlog's canonical leaf). Both
// are written here by appending to one pre-sized buffer, without
// reflection or the intermediate map the generic encoders need; the output
// is byte for byte what encoding/json and auditlog.Event.Record produce
// (encode_test.go checks this, including hostile strings), so stored
// entries and replayed responses do not depend on which path made them.

// appendJSONString appends s as encoding/json would (HTML-safe escaping,
// invalid UTF-8 replaced). Strings of plain printable ASCII, the usual
// case, are copied as they are; anything else takes encoding/json itself.
func appendJSONString(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			b, _ := json.Marshal(s) // a string always encodes
			return append(dst, b...)
		}
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"')
}

// appendJSONTime appends t as time.Time's MarshalJSON does, or reports
// false for the years it refuses (outside 0..9999).
func appendJSONTime(dst []byte, t time.Time) ([]byte, bool) {
	if y := t.Year(); y < 0 || y > 9999 {
		return dst, false
	}
	dst = append(dst, '"')
	dst = t.AppendFormat(dst, time.RFC3339Nano)
	return append(dst, '"'), true
}

// signatureEvent builds the audit event committed with a signature. It binds
// the artifact's SHA-256, so a changed signature row no longer matches its
// leaf. Entry is byte for byte what auditlog.Event.Record makes of the
// equivalent Event (encode_test.go's signatureEventGeneric).
func signatureEvent(sig *store.Signature) (store.AuditEvent, error) {
	t := sig.SignedAt.UTC().Truncate(time.Microsecond)
	art := sha256.Sum256(sig.Signature)
	idem := sha256.Sum256([]byte(sig.IdempotencyKey))
	actor := "tenant:" + sig.TenantID
	subject := "signature:" + sig.ID
	const typ = "signature.created"

	b := make([]byte, 0, 640+len(sig.DocumentID)+len(sig.KeyName)+2*len(sig.TenantID))
	b = append(b, `{"v":`...)
	b = strconv.AppendInt(b, auditlog.EntryVersion, 10)
	b = append(b, `,"type":"`+typ+`","time":`...)
	b = appendJSONString(b, t.Format(time.RFC3339Nano))
	b = append(b, `,"actor":`...)
	b = appendJSONString(b, actor)
	if sig.TenantID != "" {
		b = append(b, `,"tenant":`...)
		b = appendJSONString(b, sig.TenantID)
	}
	if sig.Release != "" {
		b = append(b, `,"release":`...)
		b = appendJSONString(b, sig.Release)
	}
	if sig.Instance != "" {
		b = append(b, `,"instance":`...)
		b = appendJSONString(b, sig.Instance)
	}
	b = append(b, `,"subject":`...)
	b = appendJSONString(b, subject)
	// Details, keys in sorted order as encoding/json emits a map.
	b = append(b, `,"details":{"algorithm":`...)
	b = appendJSONString(b, sig.Algorithm)
	b = append(b, `,"algorithm_oid":`...)
	b = appendJSONString(b, sig.AlgorithmOID)
	b = append(b, `,"artifact_sha256":"`...)
	b = hex.AppendEncode(b, art[:])
	b = append(b, `","digest_algorithm":`...)
	b = appendJSONString(b, sig.DigestAlgorithm)
	b = append(b, `,"digest_oid":`...)
	b = appendJSONString(b, sig.DigestOID)
	b = append(b, `,"document_digest":"`...)
	b = base64.StdEncoding.AppendEncode(b, sig.DocumentDigest)
	b = append(b, `","document_id":`...)
	b = appendJSONString(b, sig.DocumentID)
	b = append(b, `,"format":`...)
	b = appendJSONString(b, sig.Format)
	b = append(b, `,"idempotency_key_sha256":"`...)
	b = hex.AppendEncode(b, idem[:])
	b = append(b, `","key":`...)
	b = appendJSONString(b, sig.KeyName)
	b = append(b, `,"key_version":`...)
	b = strconv.AppendInt(b, int64(sig.KeyVersion), 10)
	b = append(b, "}}"...)
	return store.AuditEvent{Time: t, Type: typ, Actor: actor, TenantID: sig.TenantID,
		Release: sig.Release, Instance: sig.Instance, Subject: subject, Entry: b}, nil
}

// renderSignature is the one place a sign response is rendered, from the
// stored record only, so a replay is byte-identical to the first answer.
// The bytes are json.Marshal of signResponse(sig).
func renderSignature(sig *store.Signature) []byte {
	signedAt := sig.SignedAt.UTC().Truncate(time.Microsecond)
	art := EncodeArtifact(api.Format(sig.Format), sig.Signature)
	b := make([]byte, 0, 448+len(art)+len(sig.DocumentID)+len(sig.KeyName))
	b = append(b, `{"id":`...)
	b = appendJSONString(b, sig.ID)
	b = append(b, `,"format":`...)
	b = appendJSONString(b, sig.Format)
	b = append(b, `,"signature":`...)
	b = appendJSONString(b, art)
	b = append(b, `,"key":`...)
	b = appendJSONString(b, sig.KeyName)
	b = append(b, `,"key_version":`...)
	b = strconv.AppendInt(b, int64(sig.KeyVersion), 10)
	b = append(b, `,"algorithm":`...)
	b = appendJSONString(b, sig.Algorithm)
	b = append(b, `,"algorithm_oid":`...)
	b = appendJSONString(b, sig.AlgorithmOID)
	b = append(b, `,"digest_algorithm":`...)
	b = appendJSONString(b, sig.DigestAlgorithm)
	b = append(b, `,"digest_oid":`...)
	b = appendJSONString(b, sig.DigestOID)
	b = append(b, `,"document_digest":"`...)
	b = base64.StdEncoding.AppendEncode(b, sig.DocumentDigest)
	b = append(b, '"')
	if sig.DocumentID != "" {
		b = append(b, `,"document_id":`...)
		b = appendJSONString(b, sig.DocumentID)
	}
	b = append(b, `,"release":`...)
	b = appendJSONString(b, sig.Release)
	b = append(b, `,"instance":`...)
	b = appendJSONString(b, sig.Instance)
	b = append(b, `,"audit_index":`...)
	b = strconv.AppendInt(b, sig.AuditIndex, 10)
	b = append(b, `,"signed_at":`...)
	b, ok := appendJSONTime(b, signedAt)
	if !ok {
		return renderSignatureGeneric(sig)
	}
	return append(b, '}')
}

// signResponse is the API view of a stored signature.
func signResponse(sig *store.Signature) api.SignResponse {
	return api.SignResponse{
		ID:              sig.ID,
		Format:          api.Format(sig.Format),
		Signature:       EncodeArtifact(api.Format(sig.Format), sig.Signature),
		Key:             sig.KeyName,
		KeyVersion:      sig.KeyVersion,
		Algorithm:       sig.Algorithm,
		AlgorithmOID:    sig.AlgorithmOID,
		DigestAlgorithm: sig.DigestAlgorithm,
		DigestOID:       sig.DigestOID,
		DocumentDigest:  base64.StdEncoding.EncodeToString(sig.DocumentDigest),
		DocumentID:      sig.DocumentID,
		Release:         sig.Release,
		Instance:        sig.Instance,
		AuditIndex:      sig.AuditIndex,
		SignedAt:        sig.SignedAt.UTC().Truncate(time.Microsecond),
	}
}

// renderSignatureGeneric is renderSignature through encoding/json: the
// definition the fast path must match, and its path for a time outside
// years 0..9999, which no clock gives.
func renderSignatureGeneric(sig *store.Signature) []byte {
	resp := signResponse(sig)
	b, err := json.Marshal(&resp)
	if err != nil {
		panic("node: marshal SignResponse: " + err.Error()) // only a time outside years 0..9999 fails
	}
	return b
}
