package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/countersign/countersign/client"
	"github.com/countersign/countersign/internal/api"
	"github.com/countersign/countersign/internal/keys"
	"github.com/countersign/countersign/internal/node"
	"github.com/countersign/countersign/internal/pki"
	"github.com/countersign/countersign/internal/sign"
)

func init() {
	register("sign", "sign a document through a node or the gateway", runSign)
	register("verify", "verify a signature, online (--server) or offline (--cert/--pubkey)", runVerify)
}

// readToken takes the API token from a file or COUNTERSIGN_TOKEN, never
// from a flag value (flags show up in process listings and shell history).
func readToken(env *cliEnv, file string) (string, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("read token: %w", err)
		}
		return strings.TrimSpace(string(b)), nil
	}
	if t := env.getenv("COUNTERSIGN_TOKEN"); t != "" {
		return t, nil
	}
	return "", usageError("no API token: give --token-file or set COUNTERSIGN_TOKEN")
}

func runSign(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlagSet(env, "sign", "--server URL --token-file F --key K --format cms|jws|raw --in doc --out sig")
	server := fs.String("server", "http://127.0.0.1:7300", "node or gateway URL")
	tokenFile := fs.String("token-file", "", "file holding the API token (or env COUNTERSIGN_TOKEN)")
	key := fs.String("key", "default", "key name")
	format := fs.String("format", "cms", "cms | jws | raw")
	in := fs.String("in", "", "document to sign (- for stdin)")
	out := fs.String("out", "", "where to write the signature (DER for cms, compact JWS for jws, bytes for raw); default stdout")
	docID := fs.String("document-id", "", "optional document identifier recorded with the signature")
	idem := fs.String("idempotency-key", "", "idempotency key (default: SHA-256 of key, format and document, so re-running the same command never signs twice)")
	meta := fs.String("meta", "", "write the full JSON response (key version, algorithm, audit index...) to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *in == "" {
		return usageError("--in is required")
	}
	doc, err := readInput(env, *in)
	if err != nil {
		return err
	}
	token, err := readToken(env, *tokenFile)
	if err != nil {
		return err
	}
	c, err := client.New(*server, token)
	if err != nil {
		return err
	}
	if *idem == "" {
		h := sha256.New()
		fmt.Fprintf(h, "%s\x00%s\x00%s\x00", *key, *format, *docID)
		h.Write(doc)
		*idem = fmt.Sprintf("cli-%x", h.Sum(nil))
	}
	resp, err := c.Sign(ctx, client.SignRequest{Key: *key, Format: client.Format(*format), Document: doc, DocumentID: *docID}, client.WithIdempotencyKey(*idem))
	if err != nil {
		return err
	}
	art, err := node.DecodeArtifact(resp.Format, resp.Signature)
	if err != nil {
		return fmt.Errorf("decode signature from server: %w", err)
	}
	if err := writeOutput(env, *out, art); err != nil {
		return err
	}
	if *meta != "" {
		b, _ := json.MarshalIndent(resp, "", "  ")
		if err := os.WriteFile(*meta, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	fmt.Fprintf(env.stderr, "signed: id=%s key=%s@v%d alg=%s digest=%s audit_index=%d release=%s\n",
		resp.ID, resp.Key, resp.KeyVersion, resp.Algorithm, resp.DigestAlgorithm, resp.AuditIndex, resp.Release)
	return nil
}

func runVerify(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlagSet(env, "verify", "(--server URL --token-file F --key K | --cert chain.pem | --pubkey key.pem) --format F --in doc --sig sig")
	server := fs.String("server", "", "verify online through this node or gateway")
	tokenFile := fs.String("token-file", "", "file holding the API token (or env COUNTERSIGN_TOKEN), with --server")
	key := fs.String("key", "default", "key name, with --server")
	keyVersion := fs.Int("key-version", 0, "key version, with --server (0: any)")
	certFile := fs.String("cert", "", "offline: PEM certificate chain of the signer, leaf first")
	caFile := fs.String("ca", "", "offline: PEM CA certificates the signer certificate must chain to (cms)")
	pubFile := fs.String("pubkey", "", "offline: PEM public key of the signer")
	algName := fs.String("alg", "", "offline: expected algorithm (default: from the key; rsa keys default to rsa-*-pkcs1, use rsa-2048-pss etc. for PSS)")
	format := fs.String("format", "cms", "cms | jws | raw")
	in := fs.String("in", "", "the signed document")
	sigFile := fs.String("sig", "", "the signature file as 'sign --out' wrote it")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *in == "" || *sigFile == "" {
		return usageError("--in and --sig are required")
	}
	doc, err := readInput(env, *in)
	if err != nil {
		return err
	}
	art, err := os.ReadFile(*sigFile)
	if err != nil {
		return err
	}
	f := api.Format(*format)
	if f == api.FormatJWS {
		art = []byte(strings.TrimSpace(string(art)))
	}
	if *server != "" {
		token, err := readToken(env, *tokenFile)
		if err != nil {
			return err
		}
		c, err := client.New(*server, token)
		if err != nil {
			return err
		}
		resp, err := c.Verify(ctx, client.VerifyRequest{Key: *key, KeyVersion: *keyVersion, Format: f, Signature: node.EncodeArtifact(f, art), Document: doc})
		if err != nil {
			return err
		}
		if !resp.Valid {
			return &exitError{code: 1, err: fmt.Errorf("INVALID: %s", resp.Reason)}
		}
		fmt.Fprintf(env.stdout, "valid: key %s@v%d (%s)\n", resp.Key, resp.KeyVersion, resp.Algorithm)
		return nil
	}
	vk := sign.VerifyKey{}
	switch {
	case *certFile != "":
		b, err := os.ReadFile(*certFile)
		if err != nil {
			return err
		}
		if vk.Chain, err = pki.ParseChainPEM(string(b)); err != nil {
			return err
		}
		vk.Public = vk.Chain[0].PublicKey
	case *pubFile != "":
		b, err := os.ReadFile(*pubFile)
		if err != nil {
			return err
		}
		if vk.Public, err = pki.ParsePublicKeyPEM(string(b)); err != nil {
			return err
		}
	default:
		return usageError("give --server, --cert or --pubkey")
	}
	if *caFile != "" {
		b, err := os.ReadFile(*caFile)
		if err != nil {
			return err
		}
		vk.Roots = x509.NewCertPool()
		if !vk.Roots.AppendCertsFromPEM(b) {
			return fmt.Errorf("%s: no PEM certificates", *caFile)
		}
	}
	if *algName != "" {
		if vk.Algorithm, err = keys.ParseAlgorithm(*algName); err != nil {
			return usageError("%v", err)
		}
	} else if vk.Algorithm, err = algorithmOf(vk.Public); err != nil {
		return err
	}
	if err := sign.Verify(f, art, sign.Input{Document: doc}, vk); err != nil {
		return &exitError{code: 1, err: fmt.Errorf("INVALID: %w", err)}
	}
	fmt.Fprintf(env.stdout, "valid: %s signature by a %s key\n", f, vk.Algorithm)
	return nil
}

// algorithmOf infers the algorithm of a public key (RSA: PKCS#1 v1.5).
func algorithmOf(pub crypto.PublicKey) (keys.Algorithm, error) {
	switch k := pub.(type) {
	case ed25519.PublicKey:
		return keys.Ed25519, nil
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return keys.ECDSAP256, nil
		case elliptic.P384():
			return keys.ECDSAP384, nil
		}
	case *rsa.PublicKey:
		switch k.N.BitLen() {
		case 2048:
			return keys.RSA2048, nil
		case 3072:
			return keys.RSA3072, nil
		}
	}
	return "", errors.New("unsupported public key type; give --alg")
}

func readInput(env *cliEnv, path string) ([]byte, error) {
	if path == "-" {
		b, err := readAllLimit(env.stdin, node.DefaultMaxDocumentBytes+1)
		if err != nil {
			return nil, err
		}
		return b, nil
	}
	return os.ReadFile(path)
}

func writeOutput(env *cliEnv, path string, b []byte) error {
	if path == "" || path == "-" {
		_, err := env.stdout.Write(b)
		return err
	}
	return os.WriteFile(path, b, 0o644)
}
