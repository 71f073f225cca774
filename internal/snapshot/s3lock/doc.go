// Package s3lock is the S3 Object Lock backend of snapshot.ImmutableStore:
// every object is written once, under a retention lock (COMPLIANCE by
// default, GOVERNANCE optional, optionally with a legal hold), with its
// SHA-256 computed while streaming, sent for the server to verify and kept
// as metadata.
//
// # Invariants
//
//   - A name is owned by its oldest version that is not a delete marker.
//     Put writes with If-None-Match: * and returns snapshot.ErrExists
//     unless the owning version is the one it wrote; Get and Stat read the
//     owning version by its version id. Object Lock protects versions, not
//     names, so a later PUT to the same key (from a writer that lost a
//     race on a server without conditional writes, or anyone else with
//     write access) only adds a version that is ignored, and a delete
//     marker cannot hide an object.
//   - Nothing is stored if the reader fails: Put spools and hashes the
//     whole object before the first request.
//   - Enforcement is proven, not assumed: New (via Check) writes a canary
//     under a short lock and tries to overwrite and delete it. A server
//     that accepts lock headers but lets either happen is reported with
//     ErrUnenforced and is fatal unless AllowUnenforced is set.
//   - Credentials come from the environment or the shared credentials file
//     (EnvCredentials), never from the store URL, and are never logged.
//
// Open parses URLs of the form
//
//	s3://BUCKET/PREFIX?endpoint=HOST:PORT&region=R&mode=compliance&retention=720h
//
// (see ParseURL). docs/snapshots-s3.md describes bucket setup, the
// permissions the credentials need and what the check reports.
package s3lock
