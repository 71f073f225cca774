//go:build cgo

package pkcs11

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"unsafe"

	p11 "github.com/miekg/pkcs11"

	"github.com/countersign/countersign/internal/keys"
)

// Ed25519 keys are handled here, on raw PKCS#11 calls, because crypto11
// has no EdDSA support ("unsupported key type: 40"). The PKCS#11 3.0
// values below are not named in miekg/pkcs11 v1.1.2.
const (
	ckkECEdwards            = 0x40   // CKK_EC_EDWARDS
	ckmECEdwardsKeyPairGen  = 0x1055 // CKM_EC_EDWARDS_KEY_PAIR_GEN
	ckmEdDSA                = 0x1057 // CKM_EDDSA
	edSessionsDefault       = 4
	ed25519PublicKeyDERSize = 2 + ed25519.PublicKeySize
)

// ed25519Params is CKA_EC_PARAMS for Ed25519: the DER OID 1.3.101.112
// (id-Ed25519, RFC 8410), one of the two forms PKCS#11 3.0 allows.
var ed25519Params = []byte{0x06, 0x03, 0x2b, 0x65, 0x70}

var (
	// errUnsupportedKeyType marks a key pair crypto11 cannot use.
	errUnsupportedKeyType = errors.New("pkcs11: key type not supported by crypto11")
	// errNotEdwards marks a key pair that is not an Ed25519 key either.
	errNotEdwards = errors.New("pkcs11: not an Ed25519 key")
)

// edRaw is the provider's raw PKCS#11 access for Ed25519. It never
// initialises or finalises the module: crypto11 does both (its Context
// holds the module initialised), and a raw handle on the same library
// shares that state. When crypto11 re-configures after a token failure,
// the sessions opened here die with the old ones; the next call fails with
// a recoverable code and reopens them after Provider.reconnect.
type edRaw struct {
	mu   sync.Mutex // guards every field
	mod  *p11.Ctx
	slot uint
	gen  uint64 // the crypto11 generation the sessions were opened under
	idle []p11.SessionHandle
}

// edSession runs fn on a logged-in session of the token, retrying once
// after a recoverable failure (as Provider.do does for crypto11 calls).
func (p *Provider) edSession(op string, fn func(mod *p11.Ctx, sh p11.SessionHandle) error) error {
	err := p.edTry(fn)
	if err == nil || !recoverable(err) {
		return wrap(op, err)
	}
	p.ed.mu.Lock()
	gen := p.ed.gen
	p.ed.dropLocked()
	p.ed.mu.Unlock()
	if rerr := p.reconnect(gen); rerr != nil {
		return fmt.Errorf("%w (recovery failed: %w)", wrap(op, err), rerr)
	}
	return wrap(op, p.edTry(fn))
}

func (p *Provider) edTry(fn func(mod *p11.Ctx, sh p11.SessionHandle) error) error {
	mod, sh, err := p.edGet()
	if err != nil {
		return err
	}
	err = fn(mod, sh)
	if err != nil && recoverable(err) {
		_ = mod.CloseSession(sh) // dead or suspect: never pooled again
		return err
	}
	p.ed.mu.Lock()
	if len(p.ed.idle) < p.edMaxIdle() {
		p.ed.idle = append(p.ed.idle, sh)
		sh = 0
	}
	p.ed.mu.Unlock()
	if sh != 0 {
		_ = mod.CloseSession(sh)
	}
	return err
}

func (p *Provider) edMaxIdle() int {
	if p.cfg.MaxSessions > 0 {
		return p.cfg.MaxSessions
	}
	return edSessionsDefault
}

// edGet returns an idle session or opens and logs in a new one, making
// sure crypto11 holds the module initialised first.
func (p *Provider) edGet() (*p11.Ctx, p11.SessionHandle, error) {
	_, gen, err := p.current()
	if err != nil {
		return nil, 0, err
	}
	e := &p.ed
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.gen != gen {
		e.dropLocked()
		e.gen = gen
	}
	if e.mod == nil {
		mod := p11.New(p.cfg.ModulePath)
		if mod == nil {
			return nil, 0, fmt.Errorf("pkcs11: load module %s", p.cfg.ModulePath)
		}
		slot, err := findSlot(mod, p.cfg.TokenLabel)
		if err != nil {
			mod.Destroy()
			return nil, 0, err
		}
		e.mod, e.slot = mod, slot
	}
	if n := len(e.idle); n > 0 {
		sh := e.idle[n-1]
		e.idle = e.idle[:n-1]
		return e.mod, sh, nil
	}
	sh, err := e.mod.OpenSession(e.slot, p11.CKF_SERIAL_SESSION|p11.CKF_RW_SESSION)
	if err != nil {
		return nil, 0, err
	}
	// Login state belongs to the application, not the session: crypto11
	// has logged in already, so the token normally answers "already".
	if err := e.mod.Login(sh, p11.CKU_USER, p.pin); err != nil && !isCode(err, p11.CKR_USER_ALREADY_LOGGED_IN) {
		_ = e.mod.CloseSession(sh)
		return nil, 0, err
	}
	return e.mod, sh, nil
}

// dropLocked forgets the sessions and the slot (slot numbers change when a
// token is re-initialised). e.mu must be held.
func (e *edRaw) dropLocked() {
	if e.mod == nil {
		return
	}
	for _, sh := range e.idle {
		_ = e.mod.CloseSession(sh)
	}
	e.idle = nil
	e.mod.Destroy() // dlclose: the library stays loaded while crypto11 holds it
	e.mod = nil
}

// edClose releases the raw sessions before crypto11 finalises the module.
func (p *Provider) edClose() {
	p.ed.mu.Lock()
	p.ed.dropLocked()
	p.ed.mu.Unlock()
}

func findSlot(mod *p11.Ctx, label string) (uint, error) {
	slots, err := mod.GetSlotList(true)
	if err != nil {
		return 0, err
	}
	for _, s := range slots {
		ti, err := mod.GetTokenInfo(s)
		if err != nil {
			continue
		}
		if strings.TrimRight(ti.Label, " \x00") == label {
			return s, nil
		}
	}
	return 0, fmt.Errorf("pkcs11: no token labelled %q", label)
}

func isCode(err error, code uint) bool {
	var e p11.Error
	return errors.As(err, &e) && uint(e) == code
}

// generateEd25519 makes an Ed25519 key pair on the token: the private key
// sensitive and not extractable, both halves with CKA_ID id and label.
func (p *Provider) generateEd25519(id []byte, label string) (ed25519.PublicKey, error) {
	var pub ed25519.PublicKey
	err := p.edSession("generate "+string(keys.Ed25519), func(mod *p11.Ctx, sh p11.SessionHandle) error {
		pubT := []*p11.Attribute{
			p11.NewAttribute(p11.CKA_CLASS, p11.CKO_PUBLIC_KEY),
			p11.NewAttribute(p11.CKA_KEY_TYPE, ckkECEdwards),
			p11.NewAttribute(p11.CKA_TOKEN, true),
			p11.NewAttribute(p11.CKA_VERIFY, true),
			p11.NewAttribute(p11.CKA_EC_PARAMS, ed25519Params),
			p11.NewAttribute(p11.CKA_ID, id),
			p11.NewAttribute(p11.CKA_LABEL, label),
		}
		privT := []*p11.Attribute{
			p11.NewAttribute(p11.CKA_CLASS, p11.CKO_PRIVATE_KEY),
			p11.NewAttribute(p11.CKA_KEY_TYPE, ckkECEdwards),
			p11.NewAttribute(p11.CKA_TOKEN, true),
			p11.NewAttribute(p11.CKA_PRIVATE, true),
			p11.NewAttribute(p11.CKA_SIGN, true),
			p11.NewAttribute(p11.CKA_SENSITIVE, true),
			p11.NewAttribute(p11.CKA_EXTRACTABLE, false),
			p11.NewAttribute(p11.CKA_ID, id),
			p11.NewAttribute(p11.CKA_LABEL, label),
		}
		pubH, _, err := mod.GenerateKeyPair(sh, []*p11.Mechanism{p11.NewMechanism(ckmECEdwardsKeyPairGen, nil)}, pubT, privT)
		if err != nil {
			return err
		}
		pub, err = readEd25519Public(mod, sh, pubH)
		return err
	})
	return pub, err
}

// readEd25519Public reads CKA_EC_POINT: PKCS#11 3.0 says a DER OCTET STRING
// (04 20 + 32 bytes); some tokens give the 32 bytes alone.
func readEd25519Public(mod *p11.Ctx, sh p11.SessionHandle, h p11.ObjectHandle) (ed25519.PublicKey, error) {
	attrs, err := mod.GetAttributeValue(sh, h, []*p11.Attribute{p11.NewAttribute(p11.CKA_EC_POINT, nil)})
	if err != nil {
		return nil, err
	}
	pt := attrs[0].Value
	switch {
	case len(pt) == ed25519PublicKeyDERSize && pt[0] == 0x04 && pt[1] == ed25519.PublicKeySize:
		pt = pt[2:]
	case len(pt) == ed25519.PublicKeySize:
	default:
		return nil, fmt.Errorf("pkcs11: CKA_EC_POINT of %d bytes is not an Ed25519 public key", len(pt))
	}
	return ed25519.PublicKey(bytes.Clone(pt)), nil
}

// findObject returns the handle of the object of class with CKA_ID id, or
// found false.
func findObject(mod *p11.Ctx, sh p11.SessionHandle, class uint, id []byte) (h p11.ObjectHandle, found bool, err error) {
	if err := mod.FindObjectsInit(sh, []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, class), p11.NewAttribute(p11.CKA_ID, id)}); err != nil {
		return 0, false, err
	}
	hs, _, err := mod.FindObjects(sh, 1)
	if ferr := mod.FindObjectsFinal(sh); err == nil {
		err = ferr
	}
	if err != nil || len(hs) == 0 {
		return 0, false, err
	}
	return hs[0], true, nil
}

// findEd25519 finds the Ed25519 key pair with CKA_ID id: ErrNotFound when
// there is no private key with that id, errNotEdwards when there is one of
// another type.
func (p *Provider) findEd25519(u URI) (priv p11.ObjectHandle, pub ed25519.PublicKey, err error) {
	err = p.edSession("find key "+u.String(), func(mod *p11.Ctx, sh p11.SessionHandle) error {
		h, ok, err := findObject(mod, sh, p11.CKO_PRIVATE_KEY, u.ID)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%w: %s", ErrNotFound, u)
		}
		attrs, err := mod.GetAttributeValue(sh, h, []*p11.Attribute{p11.NewAttribute(p11.CKA_KEY_TYPE, nil)})
		if err != nil {
			return err
		}
		if kt, err := ulong(attrs[0].Value); err != nil || kt != ckkECEdwards {
			return errNotEdwards
		}
		pubH, ok, err := findObject(mod, sh, p11.CKO_PUBLIC_KEY, u.ID)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%w: %s has no public key object", ErrNotFound, u)
		}
		priv = h
		pub, err = readEd25519Public(mod, sh, pubH)
		return err
	})
	return priv, pub, err
}

// destroyEd25519 deletes both objects with CKA_ID id; absent ones are fine.
func (p *Provider) destroyEd25519(u URI) error {
	return p.edSession("delete key "+u.String(), func(mod *p11.Ctx, sh p11.SessionHandle) error {
		for _, class := range []uint{p11.CKO_PRIVATE_KEY, p11.CKO_PUBLIC_KEY} {
			h, ok, err := findObject(mod, sh, class, u.ID)
			if err != nil {
				return err
			}
			if ok {
				if err := mod.DestroyObject(sh, h); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// ulong decodes a CK_ULONG attribute value (native byte order and size).
func ulong(b []byte) (uint, error) {
	switch len(b) {
	case 8:
		return uint(binary.NativeEndian.Uint64(b)), nil
	case 4:
		return uint(binary.NativeEndian.Uint32(b)), nil
	}
	return 0, fmt.Errorf("pkcs11: CK_ULONG of %d bytes", len(b))
}

// eddsaPrehashParams is CK_EDDSA_PARAMS{phFlag: CK_TRUE, ulContextDataLen:
// 0, pContextData: NULL} in the platform's C layout: a CK_BBOOL padded to
// the alignment of the CK_ULONG that follows, then a null pointer.
func eddsaPrehashParams() []byte {
	ulSize := int(unsafe.Sizeof(uint(0)))     // CK_ULONG is unsigned long
	ptrSize := int(unsafe.Sizeof(uintptr(0))) // CK_VOID_PTR
	b := make([]byte, ulSize+ulSize+ptrSize)
	b[0] = 1
	return b
}

// edSigner is an Ed25519 key on the token.
type edSigner struct {
	p   *Provider
	uri URI
	pub ed25519.PublicKey

	mu   sync.Mutex // guards priv
	priv p11.ObjectHandle
}

func (s *edSigner) Public() crypto.PublicKey { return s.pub }

// Sign makes a pure Ed25519 signature of message (opts.HashFunc() == 0),
// or an Ed25519ph one of a SHA-512 digest (*ed25519.Options with Hash
// crypto.SHA512), with CKM_EDDSA. Contexts (Ed25519ctx) are refused. Every
// signature is verified against the public key before it is returned: a
// token that ignores CK_EDDSA_PARAMS (SoftHSM2 2.6 signs pure Ed25519
// whatever it is asked) or a faulty signature is an error, never a
// signature that will not verify.
func (s *edSigner) Sign(_ io.Reader, message []byte, opts crypto.SignerOpts) ([]byte, error) {
	ph := false
	switch o := opts.(type) {
	case *ed25519.Options:
		if o.Context != "" {
			return nil, fmt.Errorf("pkcs11: Ed25519 with a context: %w", keys.ErrUnsupported)
		}
		switch o.Hash {
		case crypto.Hash(0):
		case crypto.SHA512:
			ph = true
		default:
			return nil, fmt.Errorf("pkcs11: Ed25519 over %v: %w", o.Hash, keys.ErrUnsupported)
		}
	default:
		if opts != nil && opts.HashFunc() != 0 {
			return nil, fmt.Errorf("pkcs11: Ed25519 signs the message itself, not a %v digest: %w", opts.HashFunc(), keys.ErrUnsupported)
		}
	}
	if ph && len(message) != crypto.SHA512.Size() {
		return nil, fmt.Errorf("pkcs11: Ed25519ph wants a SHA-512 digest, not %d bytes", len(message))
	}
	var params []byte
	if ph {
		params = eddsaPrehashParams()
	}
	var sig []byte
	sign := func(mod *p11.Ctx, sh p11.SessionHandle) error {
		s.mu.Lock()
		priv := s.priv
		s.mu.Unlock()
		if err := mod.SignInit(sh, []*p11.Mechanism{p11.NewMechanism(ckmEdDSA, params)}, priv); err != nil {
			return err
		}
		var err error
		sig, err = mod.Sign(sh, message)
		return err
	}
	err := s.p.edTry(sign)
	if err != nil && recoverable(err) {
		// Handles die with the sessions of a re-configured module: find the
		// key again and retry once, as the crypto11 signer does.
		priv, _, ferr := s.p.findEd25519(s.uri)
		if ferr != nil {
			return nil, fmt.Errorf("%w (recovery failed: %w)", wrap("sign with "+s.uri.String(), err), ferr)
		}
		s.mu.Lock()
		s.priv = priv
		s.mu.Unlock()
		err = s.p.edTry(sign)
	}
	if err != nil {
		return nil, wrap("sign with "+s.uri.String(), err)
	}
	vopts := &ed25519.Options{}
	if ph {
		vopts.Hash = crypto.SHA512
	}
	if ed25519.VerifyWithOptions(s.pub, message, sig, vopts) != nil {
		if ph {
			return nil, fmt.Errorf("pkcs11: token %q did not make an Ed25519ph signature with %s (it may not support CK_EDDSA_PARAMS; use pure Ed25519, e.g. the jws or cms format): %w",
				s.p.cfg.TokenLabel, s.uri, keys.ErrUnsupported)
		}
		return nil, fmt.Errorf("pkcs11: token %q returned an Ed25519 signature with %s that does not verify", s.p.cfg.TokenLabel, s.uri)
	}
	return sig, nil
}
