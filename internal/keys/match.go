package keys

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
)

// KeyMatches reports whether pub is a key of alg's type and size (an RSA
// key serves both the PKCS#1 v1.5 and the PSS variant of its size).
func KeyMatches(alg Algorithm, pub crypto.PublicKey) bool {
	switch k := pub.(type) {
	case ed25519.PublicKey:
		return alg == Ed25519
	case *ecdsa.PublicKey:
		return (alg == ECDSAP256 && k.Curve == elliptic.P256()) || (alg == ECDSAP384 && k.Curve == elliptic.P384())
	case *rsa.PublicKey:
		switch alg {
		case RSA2048, RSA2048PSS:
			return k.N.BitLen() == 2048
		case RSA3072, RSA3072PSS:
			return k.N.BitLen() == 3072
		}
	}
	return false
}

// samePublicKey compares keys that implement Equal (all stdlib keys do).
func samePublicKey(a, b crypto.PublicKey) bool {
	ea, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ea.Equal(b)
}
