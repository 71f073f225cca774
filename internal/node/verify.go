package node

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/countersign/countersign/internal/api"
	"github.com/countersign/countersign/internal/sign"
)

// handleVerify checks a signature against the tenant's stored public keys.
// It never needs a private key: disabled and destroyed versions still verify.
func (s *Server) handleVerify(w http.ResponseWriter, r *http.Request, tenant string) error {
	body, err := s.readBody(w, r)
	if err != nil {
		return err
	}
	var req api.VerifyRequest
	if err := decodeStrict(body, &req); err != nil {
		return err
	}
	if req.Key == "" {
		return problem(http.StatusBadRequest, api.TypeMalformed, `"key" is required`)
	}
	switch req.Format {
	case api.FormatCMS, api.FormatJWS, api.FormatRaw:
	default:
		return problem(http.StatusBadRequest, api.TypeMalformed, fmt.Sprintf(`"format" must be "cms", "jws" or "raw", not %q`, req.Format))
	}
	in, err := inputOf(req.Document, req.Digest)
	if err != nil {
		return err
	}
	artifact, err := DecodeArtifact(req.Format, req.Signature)
	if err != nil || len(artifact) == 0 {
		return problem(http.StatusBadRequest, api.TypeMalformed, `"signature" is not valid base64`)
	}
	vs, err := s.keys.versions(r.Context(), tenant, req.Key)
	if errors.Is(err, errKeyNotFound) {
		return problem(http.StatusNotFound, api.TypeKeyNotFound, fmt.Sprintf("no key %q", req.Key))
	}
	if err != nil {
		return unavailable("key store unavailable", 1, err)
	}
	resp := api.VerifyResponse{Key: req.Key}
	var firstErr error
	// Newest first: the common case is a recent signature.
	for i := len(vs) - 1; i >= 0; i-- {
		rk := vs[i]
		if req.KeyVersion != 0 && rk.kv.Version != req.KeyVersion {
			continue
		}
		if rk.pub == nil {
			continue
		}
		err := sign.Verify(req.Format, artifact, in, sign.VerifyKey{Public: rk.pub, Algorithm: rk.alg, Chain: rk.chain})
		if err == nil {
			resp.Valid, resp.KeyVersion, resp.Algorithm, resp.Reason = true, rk.kv.Version, string(rk.alg), ""
			break
		}
		if firstErr == nil {
			firstErr = err
			resp.KeyVersion, resp.Algorithm = rk.kv.Version, string(rk.alg)
		}
	}
	if !resp.Valid {
		switch {
		case firstErr != nil:
			resp.Reason = firstErr.Error()
		case req.KeyVersion != 0:
			return problem(http.StatusNotFound, api.TypeKeyNotFound, fmt.Sprintf("key %q has no version %d", req.Key, req.KeyVersion))
		default:
			resp.Reason = "no version of the key has public material"
		}
		if req.KeyVersion == 0 && len(vs) > 1 {
			resp.KeyVersion, resp.Algorithm = 0, ""
			resp.Reason = fmt.Sprintf("no version of the key verifies the signature (newest: %v)", firstErr)
		}
	}
	b, err := jsonMarshal(&resp)
	if err != nil {
		return internalError(err)
	}
	writeJSON(w, http.StatusOK, b)
	return nil
}
