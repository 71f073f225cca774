package store

import "time"

// SettleBatch decides what each write of a group commit becomes, once the
// backend has looked the batch's idempotency keys up under its write lock:
//
//   - a key already signed (existing) is answered with that signature;
//   - a key held by an unsigned async job (heldBy) fails the whole batch
//     with TakenByJobError (the Committer then retries the others alone);
//   - a key repeated within the batch is answered with the first write of
//     it, as the store will hold it (SignedAt at microsecond precision);
//   - every other write is new: fresh lists their indexes in ws, in order,
//     and they take consecutive audit indexes from next.
//
// existing and heldBy are asked by the write's index in ws. Both backends
// share this so that they cannot disagree on an idempotent answer.
func SettleBatch(ws []SignatureWrite, next int64, existing func(i int) (Signature, bool),
	heldBy func(i int) (jobID string, ok bool)) (res []WriteResult, fresh []int, err error) {
	type key struct{ tenant, idem string }
	res = make([]WriteResult, len(ws))
	first := make(map[key]int, len(ws))
	for i := range ws {
		if ex, ok := existing(i); ok {
			res[i] = WriteResult{Existing: &ex}
			continue
		}
		k := key{ws[i].Signature.TenantID, ws[i].Signature.IdempotencyKey}
		if jobID, ok := heldBy(i); ok {
			return nil, nil, TakenByJobError(k.tenant, k.idem, jobID)
		}
		if j, ok := first[k]; ok {
			ex := ws[j].Signature
			ex.AuditIndex = res[j].AuditIndex
			ex.SignedAt = ex.SignedAt.UTC().Truncate(time.Microsecond) // what both backends store
			res[i] = WriteResult{Existing: &ex}
			continue
		}
		first[k] = i
		res[i] = WriteResult{AuditIndex: next}
		fresh = append(fresh, i)
		next++
	}
	return res, fresh, nil
}
