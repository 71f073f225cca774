package auditlog

import (
	"compress/gzip"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/tlog"
)

// PathPrefix is where the node mounts Handler; it is also the tlog-tiles
// prefix of the log (checkpoint at PathPrefix+"checkpoint").
const PathPrefix = "/v1/audit/"

// Cache-Control values, per C2SP tlog-tiles: the checkpoint is mutable,
// full tiles and bundles never change.
const (
	cacheCheckpoint = "public, max-age=1"
	cacheImmutable  = "public, max-age=31536000, immutable"
	cachePartial    = "public, max-age=60"
)

// InclusionProof is the JSON body of GET /v1/audit/proof/inclusion.
type InclusionProof struct {
	Index  int64    `json:"index"`
	Size   int64    `json:"size"`
	Hashes []string `json:"hashes"` // base64, leaf's sibling first
}

// ConsistencyProof is the JSON body of GET /v1/audit/proof/consistency.
type ConsistencyProof struct {
	Old    int64    `json:"old"`
	New    int64    `json:"new"`
	Hashes []string `json:"hashes"` // base64
}

// Handler serves the read API, unauthenticated and cacheable:
//
//	GET /v1/audit/checkpoint
//	GET /v1/audit/tile/<L>/<N>[.p/<W>]
//	GET /v1/audit/tile/entries/<N>[.p/<W>]
//	GET /v1/audit/proof/inclusion?index=N&size=M
//	GET /v1/audit/proof/consistency?old=A&new=B
//
// Everything is bounded by the latest signed checkpoint.
func Handler(r Reader, logger *slog.Logger) http.Handler {
	if logger == nil {
		logger = slog.Default()
	}
	// Proofs read upper tree hashes through a cache; tiles and bundles
	// are read from the store as they are.
	h := &handler{src: StoreSource{R: r}, r: newHashCache(r), log: logger}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+PathPrefix+"checkpoint", h.static)
	mux.HandleFunc("GET "+PathPrefix+"tile/", h.static)
	mux.HandleFunc("GET "+PathPrefix+"proof/inclusion", h.inclusion)
	mux.HandleFunc("GET "+PathPrefix+"proof/consistency", h.consistency)
	return mux
}

type handler struct {
	src StoreSource
	r   Reader
	log *slog.Logger
}

func (h *handler) static(w http.ResponseWriter, req *http.Request) {
	p := strings.TrimPrefix(req.URL.Path, PathPrefix)
	data, err := h.src.Fetch(req.Context(), p)
	if err != nil {
		h.fail(w, req, err)
		return
	}
	switch {
	case p == "checkpoint":
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", cacheCheckpoint)
	case IsFull(p):
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Cache-Control", cacheImmutable)
	default:
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Cache-Control", cachePartial)
	}
	if strings.HasPrefix(p, "tile/entries/") {
		w.Header().Add("Vary", "Accept-Encoding")
		if strings.Contains(req.Header.Get("Accept-Encoding"), "gzip") {
			w.Header().Set("Content-Encoding", "gzip")
			zw := gzip.NewWriter(w)
			if _, err := zw.Write(data); err == nil {
				zw.Close()
			}
			return
		}
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	w.Write(data)
}

func (h *handler) inclusion(w http.ResponseWriter, req *http.Request) {
	index, err1 := queryInt(req, "index")
	size, err2 := queryInt(req, "size")
	if err := errors.Join(err1, err2); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	p, err := ProveInclusion(req.Context(), h.r, index, size)
	if err != nil {
		h.fail(w, req, err)
		return
	}
	h.json(w, InclusionProof{Index: index, Size: size, Hashes: encodeHashes(p)})
}

func (h *handler) consistency(w http.ResponseWriter, req *http.Request) {
	old, err1 := queryInt(req, "old")
	nw, err2 := queryInt(req, "new")
	if err := errors.Join(err1, err2); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	p, err := ProveConsistency(req.Context(), h.r, old, nw)
	if err != nil {
		h.fail(w, req, err)
		return
	}
	h.json(w, ConsistencyProof{Old: old, New: nw, Hashes: encodeHashes(p)})
}

func (h *handler) json(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	// A proof between two sizes never changes once both are checkpointed.
	w.Header().Set("Cache-Control", cacheImmutable)
	json.NewEncoder(w).Encode(v)
}

func (h *handler) fail(w http.ResponseWriter, req *http.Request, err error) {
	w.Header().Set("Cache-Control", "no-store")
	switch {
	case errors.Is(err, ErrNotFound), errors.Is(err, ErrNoCheckpoint):
		http.Error(w, err.Error(), http.StatusNotFound)
	default:
		h.log.ErrorContext(req.Context(), "audit read API", "path", req.URL.Path, "err", err)
		http.Error(w, "internal error reading the audit log", http.StatusInternalServerError)
	}
}

func queryInt(req *http.Request, name string) (int64, error) {
	v := req.URL.Query().Get(name)
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, errors.New("query parameter " + name + " must be a non-negative integer, got " + strconv.Quote(v))
	}
	return n, nil
}

func encodeHashes(hs []tlog.Hash) []string {
	out := make([]string, len(hs))
	for i, h := range hs {
		out[i] = base64.StdEncoding.EncodeToString(h[:])
	}
	return out
}

// DecodeHashes decodes the base64 hashes of a proof response.
func DecodeHashes(ss []string) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(ss))
	for i, s := range ss {
		raw, err := base64.StdEncoding.DecodeString(s)
		if err != nil || len(raw) != tlog.HashSize {
			return nil, errors.New("auditlog: proof hash " + strconv.Itoa(i) + " is not base64 SHA-256")
		}
		out[i] = tlog.Hash(raw)
	}
	return out, nil
}
