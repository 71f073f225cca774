package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"

	"github.com/countersign/countersign/internal/api"
	"github.com/countersign/countersign/internal/store"
)

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }

func (s *Server) handleListKeys(w http.ResponseWriter, r *http.Request, tenant string) error {
	kvs, err := s.cfg.Store.ListKeys(r.Context(), tenant)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return unavailable("key store unavailable", 1, err)
	}
	byName := map[string][]store.KeyVersion{}
	for _, kv := range kvs {
		byName[kv.Name] = append(byName[kv.Name], kv)
	}
	names := make([]string, 0, len(byName))
	for n := range byName {
		names = append(names, n)
	}
	sort.Strings(names)
	list := api.KeyList{Keys: []api.Key{}}
	for _, n := range names {
		list.Keys = append(list.Keys, keyView(n, byName[n]))
	}
	b, err := jsonMarshal(&list)
	if err != nil {
		return internalError(err)
	}
	writeJSON(w, http.StatusOK, b)
	return nil
}

func (s *Server) handleGetKey(w http.ResponseWriter, r *http.Request, tenant string) error {
	name := r.PathValue("name")
	kvs, err := s.cfg.Store.KeyVersions(r.Context(), tenant, name)
	if errors.Is(err, store.ErrNotFound) || (err == nil && len(kvs) == 0) {
		return problem(http.StatusNotFound, api.TypeKeyNotFound, fmt.Sprintf("no key %q", name))
	}
	if err != nil {
		return unavailable("key store unavailable", 1, err)
	}
	k := keyView(name, kvs)
	b, err := jsonMarshal(&k)
	if err != nil {
		return internalError(err)
	}
	writeJSON(w, http.StatusOK, b)
	return nil
}

func keyView(name string, kvs []store.KeyVersion) api.Key {
	sort.Slice(kvs, func(i, j int) bool { return kvs[i].Version < kvs[j].Version })
	k := api.Key{Name: name}
	for _, kv := range kvs {
		k.Versions = append(k.Versions, api.KeyVersion{
			Version: kv.Version, Algorithm: kv.Algorithm, State: kv.State,
			PublicKeyPEM: kv.PublicKeyPEM, CertChainPEM: kv.CertChainPEM, CreatedAt: kv.CreatedAt.UTC(),
		})
		k.CurrentVersion = kv.Version
	}
	return k
}
