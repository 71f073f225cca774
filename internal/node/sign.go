package node

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/countersign/countersign/internal/api"
	"github.com/countersign/countersign/internal/keys"
	"github.com/countersign/countersign/internal/sign"
	"github.com/countersign/countersign/internal/store"
)

// MaxIdempotencyKeyLen bounds the Idempotency-Key header.
const MaxIdempotencyKeyLen = 255

func (s *Server) handleSign(w http.ResponseWriter, r *http.Request, tenant string) error {
	idem, err := idempotencyKey(r)
	if err != nil {
		return err
	}
	body, err := s.readBody(w, r)
	if err != nil {
		return err
	}
	var req api.SignRequest
	if err := decodeSignRequest(body, &req); err != nil {
		return err
	}
	status, resp, err := s.signIdempotent(r.Context(), tenant, idem, &req)
	if err != nil {
		return err
	}
	writeJSON(w, status, resp)
	return nil
}

// signIdempotent runs one sign request under the idempotency rules and
// returns the response body to send.
func (s *Server) signIdempotent(ctx context.Context, tenant, idem string, req *api.SignRequest) (int, []byte, error) {
	reqHash := requestHash(req)
	fkey := tenant + "\x00" + idem
	fl, leader := s.flights.join(fkey, reqHash)
	if !leader {
		return s.awaitFlight(ctx, fl, reqHash)
	}
	status, resp, err := s.signOnce(ctx, tenant, idem, reqHash, req)
	s.flights.finish(fkey, fl, status, resp, err)
	return status, resp, err
}

// awaitFlight answers a request whose idempotency key another request of
// this process is running, with that request's outcome.
func (s *Server) awaitFlight(ctx context.Context, fl *flight, reqHash []byte) (int, []byte, error) {
	if !fl.sameRequest(reqHash) {
		return 0, nil, problem(http.StatusUnprocessableEntity, api.TypeIdempotencyMismatch,
			"this Idempotency-Key is being used for a different request")
	}
	select {
	case <-fl.done:
	case <-ctx.Done():
		return 0, nil, problem(http.StatusConflict, api.TypeIdempotencyInFlight,
			"a request with this Idempotency-Key is still being processed; retry with the same key")
	}
	if fl.err != nil {
		return 0, nil, fl.err
	}
	s.metrics.replays.Inc()
	return fl.status, fl.body, nil
}

// signOnce validates, signs and commits. When the store already holds a
// signature for the idempotency key, the fresh signature is discarded (it was
// never persisted nor returned) and the stored one is answered.
func (s *Server) signOnce(ctx context.Context, tenant, idem string, reqHash []byte, req *api.SignRequest) (int, []byte, error) {
	p, status, resp, err := s.prepareSign(ctx, tenant, idem, reqHash, req)
	if err != nil || p == nil {
		return status, resp, err
	}
	wr, err := s.cfg.Committer.Commit(ctx, p.w)
	return s.finishSign(ctx, p, wr, err)
}

// preparedSign is a signature made and not yet committed.
type preparedSign struct {
	reqHash []byte
	w       store.SignatureWrite
}

// prepareSign validates and signs a request and builds its write. It
// returns a nil preparedSign with the answer when the request is answered
// without a commit (a stored signature found on the failure path).
func (s *Server) prepareSign(ctx context.Context, tenant, idem string, reqHash []byte, req *api.SignRequest) (*preparedSign, int, []byte, error) {
	in, err := signInput(req)
	if err != nil {
		return nil, 0, nil, err
	}
	rk, err := s.keys.current(ctx, tenant, req.Key)
	if err != nil {
		// A key that cannot sign now (disabled, provider down) must not
		// turn a replay of an answered request into a failure: the client
		// would believe nothing was signed. Look for the stored answer only
		// on this failure path, so the hot path reads nothing.
		if status, resp, ok := s.storedAnswer(ctx, tenant, idem, reqHash); ok {
			return nil, status, resp, nil
		}
		return nil, 0, nil, err
	}
	now := s.now().UTC().Truncate(time.Microsecond)
	k := sign.Key{Signer: rk.signer, Algorithm: rk.alg, Chain: rk.chain, KeyID: rk.kv.Name + "@v" + strconv.Itoa(rk.kv.Version)}
	if s.cfg.Faults != nil {
		k, in, err = s.cfg.Faults.beforeSign(ctx, req.Format, k, in)
		if err != nil {
			return nil, 0, nil, unavailable("key provider unavailable", 1, err)
		}
	}
	res, err := sign.Sign(req.Format, k, in, now)
	if err != nil {
		return nil, 0, nil, signError(err)
	}
	if s.cfg.Faults != nil {
		res = s.cfg.Faults.afterSign(req.Format, res)
	}
	p := &preparedSign{reqHash: reqHash, w: store.SignatureWrite{Signature: store.Signature{
		ID:              newID("sig_", now),
		TenantID:        tenant,
		IdempotencyKey:  idem,
		RequestHash:     reqHash,
		KeyName:         rk.kv.Name,
		KeyVersion:      rk.kv.Version,
		Format:          string(req.Format),
		Algorithm:       string(rk.alg),
		AlgorithmOID:    res.AlgorithmOID,
		DigestAlgorithm: sign.HashName(res.Hash),
		DigestOID:       res.DigestOID,
		DocumentDigest:  res.Digest,
		DocumentID:      req.DocumentID,
		Signature:       res.Artifact,
		Release:         s.cfg.Release,
		Instance:        s.cfg.Instance,
		SignedAt:        now,
	}}}
	if p.w.Event, err = signatureEvent(&p.w.Signature); err != nil {
		return nil, 0, nil, internalError(err)
	}
	if s.cfg.Faults != nil {
		if err := s.cfg.Faults.beforeCommit(); err != nil {
			return nil, 0, nil, unavailable("signature could not be persisted; retry with the same Idempotency-Key", 1, err)
		}
	}
	return p, 0, nil, nil
}

// finishSign turns the outcome of p's commit into the answer.
func (s *Server) finishSign(ctx context.Context, p *preparedSign, wr store.WriteResult, err error) (int, []byte, error) {
	sig := &p.w.Signature
	if errors.Is(err, store.ErrIdempotencyTaken) {
		return 0, nil, s.keyHeldByJob(ctx, sig.TenantID, sig.IdempotencyKey, err) // async.go
	}
	if err != nil {
		// The outcome is unknown to us (the commit may or may not have
		// landed); a retry with the same key resolves it either way.
		return 0, nil, unavailable("signature could not be persisted; retry with the same Idempotency-Key", 1, err)
	}
	if wr.Existing != nil {
		if !bytes.Equal(wr.Existing.RequestHash, p.reqHash) {
			return 0, nil, problem(http.StatusUnprocessableEntity, api.TypeIdempotencyMismatch,
				"this Idempotency-Key was already used for a different request")
		}
		s.metrics.replays.Inc()
		return http.StatusOK, renderSignature(wr.Existing), nil
	}
	sig.AuditIndex = wr.AuditIndex
	s.metrics.signatures.WithLabelValues(sig.Format, sig.Algorithm).Inc()
	return http.StatusOK, renderSignature(sig), nil
}

// idempotencyReader is the optional store capability storedAnswer uses.
type idempotencyReader interface {
	SignatureByIdempotencyKey(ctx context.Context, tenantID, key string) (store.Signature, error)
}

// storedAnswer returns the stored response for a replayed request whose
// signature already exists. It reports false when there is none, when it
// was made for another request (the caller's error then stands), or when
// the store cannot say.
func (s *Server) storedAnswer(ctx context.Context, tenant, idem string, reqHash []byte) (int, []byte, bool) {
	r, ok := s.cfg.Store.(idempotencyReader)
	if !ok {
		return 0, nil, false
	}
	sig, err := r.SignatureByIdempotencyKey(ctx, tenant, idem)
	if err != nil || !bytes.Equal(sig.RequestHash, reqHash) {
		return 0, nil, false
	}
	s.metrics.replays.Inc()
	return http.StatusOK, renderSignature(&sig), true
}

func signError(err error) error {
	switch {
	case errors.Is(err, sign.ErrDigestOnly):
		return &httpError{Problem: api.NewProblem(http.StatusUnprocessableEntity, api.TypeUnsupported, err.Error()), Err: err}
	case errors.Is(err, sign.ErrUnsupported), errors.Is(err, sign.ErrInput):
		return &httpError{Problem: api.NewProblem(http.StatusUnprocessableEntity, api.TypeUnsupported, err.Error()), Err: err}
	case errors.Is(err, keys.ErrUnsupported):
		// The key's provider cannot make this kind of signature (an HSM
		// without Ed25519ph, for the raw format): a retry never helps.
		return &httpError{Problem: api.NewProblem(http.StatusUnprocessableEntity, api.TypeUnsupported, err.Error()), Err: err}
	}
	// Anything else is the key provider failing (an HSM timing out, a
	// session gone): nothing was persisted, the client may retry.
	return unavailable("signing failed in the key provider; retry with the same Idempotency-Key", 1, err)
}

// signInput validates the document/digest part of a request.
func signInput(req *api.SignRequest) (sign.Input, error) {
	if req.Key == "" {
		return sign.Input{}, problem(http.StatusBadRequest, api.TypeMalformed, `"key" is required`)
	}
	switch req.Format {
	case api.FormatCMS, api.FormatJWS, api.FormatRaw:
	default:
		return sign.Input{}, problem(http.StatusBadRequest, api.TypeMalformed, fmt.Sprintf(`"format" must be "cms", "jws" or "raw", not %q`, req.Format))
	}
	if len(req.DocumentID) > 256 {
		return sign.Input{}, problem(http.StatusBadRequest, api.TypeMalformed, `"document_id" is longer than 256 bytes`)
	}
	return inputOf(req.Document, req.Digest)
}

func inputOf(doc []byte, dg *api.Digest) (sign.Input, error) {
	switch {
	case doc != nil && dg != nil:
		return sign.Input{}, problem(http.StatusBadRequest, api.TypeMalformed, `give either "document" or "digest", not both`)
	case doc == nil && dg == nil:
		return sign.Input{}, problem(http.StatusBadRequest, api.TypeMalformed, `one of "document" or "digest" is required`)
	case dg != nil:
		h, err := sign.HashByName(dg.Alg)
		if err != nil {
			return sign.Input{}, problem(http.StatusBadRequest, api.TypeMalformed, fmt.Sprintf(`"digest.alg" must be sha256, sha384 or sha512, not %q`, dg.Alg))
		}
		if len(dg.Value) != h.Size() {
			return sign.Input{}, problem(http.StatusBadRequest, api.TypeMalformed, fmt.Sprintf(`"digest.value" must be %d bytes for %s, got %d`, h.Size(), dg.Alg, len(dg.Value)))
		}
		return sign.Input{Digest: dg.Value, Hash: h}, nil
	default:
		return sign.Input{Document: doc}, nil
	}
}

func idempotencyKey(r *http.Request) (string, error) {
	k := r.Header.Get("Idempotency-Key")
	return k, checkIdempotencyKey(k)
}

func checkIdempotencyKey(k string) error {
	if k == "" {
		return problem(http.StatusBadRequest, api.TypeIdempotencyMissing, "an Idempotency-Key is required for signing")
	}
	if len(k) > MaxIdempotencyKeyLen {
		return problem(http.StatusBadRequest, api.TypeMalformed, fmt.Sprintf("Idempotency-Key is longer than %d bytes", MaxIdempotencyKeyLen))
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x20 || k[i] > 0x7e {
			return problem(http.StatusBadRequest, api.TypeMalformed, "Idempotency-Key must be printable ASCII")
		}
	}
	return nil
}

// readBody reads the whole body, bounded by the document limit (base64
// makes a document 4/3 larger, plus room for the JSON around it).
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	return s.readBodyLimit(w, r, s.cfg.MaxDocumentBytes/3*4+64<<10)
}

func (s *Server) readBodyLimit(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return nil, problem(http.StatusRequestEntityTooLarge, api.TypeTooLarge,
			fmt.Sprintf("request body exceeds %d bytes (documents up to %d bytes)", limit, s.cfg.MaxDocumentBytes))
	}
	if err != nil {
		return nil, problem(http.StatusBadRequest, api.TypeMalformed, "reading request body: "+err.Error())
	}
	return body, nil
}

// decodeStrict decodes one JSON object, refusing unknown fields and
// trailing data, with a client-facing message.
func decodeStrict(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return problem(http.StatusBadRequest, api.TypeMalformed, "invalid JSON body: "+err.Error())
	}
	if dec.More() {
		return problem(http.StatusBadRequest, api.TypeMalformed, "invalid JSON body: trailing data after the object")
	}
	return nil
}

// requestHash fingerprints the meaning of a sign request (not its JSON
// spelling), so the same request sent alone, in a batch, or re-serialised by
// another client matches its idempotency record.
func requestHash(req *api.SignRequest) []byte {
	h := sha256.New()
	field := func(b []byte) {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(b)))
		h.Write(n[:])
		h.Write(b)
	}
	field([]byte("countersign.sign.v1"))
	field([]byte(req.Key))
	field([]byte(req.Format))
	field([]byte(req.DocumentID))
	if req.Digest != nil {
		field([]byte("digest"))
		field([]byte(req.Digest.Alg))
		field(req.Digest.Value)
	} else {
		field([]byte("document"))
		field(req.Document)
	}
	return h.Sum(nil)
}

// EncodeArtifact renders an artifact as the API carries it: the compact JWS
// as is, DER and raw signatures in base64.
func EncodeArtifact(f api.Format, artifact []byte) string {
	if f == api.FormatJWS {
		return string(artifact)
	}
	return base64.StdEncoding.EncodeToString(artifact)
}

// DecodeArtifact is the inverse of EncodeArtifact.
func DecodeArtifact(f api.Format, s string) ([]byte, error) {
	if f == api.FormatJWS {
		return []byte(s), nil
	}
	return base64.StdEncoding.DecodeString(s)
}
