package symkey

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding"
	"hash"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/sas"
)

// A register whose registration ID has no individual enrollment tries every
// symmetric-key group: for each, the device key HMAC(group key, ID) and the
// token's HMAC under it, with the primary and the secondary key. That is
// the cost of refusing an unknown device, so it is kept to the hashing
// itself: the groups' keys are decoded once and pre-keyed (the SHA-256
// states after key⊕ipad and key⊕opad), for as long as the store's groups
// version says the groups are unchanged, and a scan allocates nothing per
// group.

// groupCache holds the prepared symmetric-key groups. The zero value is
// ready to use.
type groupCache struct {
	mu  sync.Mutex // one preparation at a time
	cur atomic.Pointer[symGroups]
}

// symGroups are the symmetric-key groups at one groups version, their keys
// pre-keyed. Immutable: scans on any number of goroutines share it.
type symGroups struct {
	version int64
	groups  []dps.Group // the store's, read-only
	keys    [][2]*hmacKey
}

func prepareSymGroups(version int64, groups []dps.Group) *symGroups {
	set := &symGroups{version: version, groups: groups, keys: make([][2]*hmacKey, len(groups))}
	for i := range groups {
		sk := groups[i].Attestation.SymmetricKey
		if sk == nil {
			continue
		}
		for j, k := range []dps.Key{sk.PrimaryKey, sk.SecondaryKey} {
			if raw, err := sas.DecodeKey(string(k)); k != "" && err == nil {
				set.keys[i][j] = newHMACKey(raw)
			}
		}
	}
	return set
}

// groups returns the prepared groups, current as of this call.
func (a *Attestor) groups(ctx context.Context) (*symGroups, error) {
	c := &a.cache
	v, err := a.o.Store.GroupsVersion(ctx)
	if err != nil {
		return nil, err
	}
	if cur := c.cur.Load(); cur != nil && cur.version == v {
		return cur, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if cur := c.cur.Load(); cur != nil && cur.version == v {
		return cur, nil
	}
	// Read after the version: the groups are at least as new as v, so the
	// set is never older than its label (at worst prepared once more).
	groups, err := a.o.Store.Groups(ctx, dps.AttestationSymmetricKey)
	if err != nil {
		return nil, err
	}
	set := prepareSymGroups(v, groups)
	c.cur.Store(set)
	return set, nil
}

// match finds the first group (in ID order), for the registration ID as
// sent and then lower-cased if that differs, whose primary or secondary
// derived key signed tok; the device's keys are derived with the ID that
// matched.
func (set *symGroups) match(tok sas.Token, regID string) (dps.Attested, bool) {
	h := newHasher()
	msg := []byte(tok.RawResource + "\n" + tok.RawExpiry)
	ids := []string{regID}
	if l := strings.ToLower(regID); l != regID {
		ids = append(ids, l)
	}
	for _, id := range ids {
		idb := []byte(id)
		for i, keys := range set.keys {
			for _, k := range keys {
				if k == nil {
					continue
				}
				h.keyed(k, idb, &h.dk)
				h.plain(&h.dk, msg, &h.sig)
				if !hmac.Equal(h.sig[:], tok.Signature) {
					continue
				}
				g := set.groups[i] // a copy: the store's groups are shared
				at := dps.Attested{Group: &g, Proof: dps.Proof{Type: dps.AttestationSymmetricKey}, Hub: dps.HubAuth{Type: dps.HubAuthSAS}}
				for j, k := range keys {
					if k != nil {
						h.keyed(k, idb, &h.dk)
						setKey(&at.Hub, j, h.dk[:])
					}
				}
				return at, true
			}
		}
	}
	return dps.Attested{}, false
}

// hmacKey is an HMAC-SHA256 key prepared once: the marshaled SHA-256 states
// after absorbing key⊕ipad and key⊕opad. It is immutable; a computation
// restores a state into its own hasher.
type hmacKey struct {
	inner, outer []byte
}

func newHMACKey(key []byte) *hmacKey {
	if len(key) > sha256.BlockSize {
		sum := sha256.Sum256(key)
		key = sum[:]
	}
	var ipad, opad [sha256.BlockSize]byte
	copy(ipad[:], key)
	copy(opad[:], key)
	for i := range ipad {
		ipad[i] ^= 0x36
		opad[i] ^= 0x5c
	}
	h := sha256.New()
	h.Write(ipad[:])
	inner, _ := h.(encoding.BinaryMarshaler).MarshalBinary()
	h.Reset()
	h.Write(opad[:])
	outer, _ := h.(encoding.BinaryMarshaler).MarshalBinary()
	return &hmacKey{inner: inner, outer: outer}
}

// hasher is one scan's scratch SHA-256 state and buffers (in one
// allocation: buffers passed on to a hash.Hash escape).
type hasher struct {
	h       hash.Hash
	state   encoding.BinaryUnmarshaler
	pad     [sha256.BlockSize]byte
	inner   [sha256.Size]byte
	dk, sig [sha256.Size]byte // a derived device key, the signature under it
}

func newHasher() *hasher {
	h := sha256.New()
	return &hasher{h: h, state: h.(encoding.BinaryUnmarshaler)}
}

// keyed sets out to HMAC-SHA256(k, msg).
func (hs *hasher) keyed(k *hmacKey, msg []byte, out *[sha256.Size]byte) {
	hs.state.UnmarshalBinary(k.inner)
	hs.h.Write(msg)
	inner := hs.h.Sum(hs.inner[:0])
	hs.state.UnmarshalBinary(k.outer)
	hs.h.Write(inner)
	hs.h.Sum(out[:0])
}

// plain sets out to HMAC-SHA256(key, msg) for a key used once (a derived
// device key, shorter than a block).
func (hs *hasher) plain(key *[sha256.Size]byte, msg []byte, out *[sha256.Size]byte) {
	hs.pad = [sha256.BlockSize]byte{}
	copy(hs.pad[:], key[:])
	for i := range hs.pad {
		hs.pad[i] ^= 0x36
	}
	hs.h.Reset()
	hs.h.Write(hs.pad[:])
	hs.h.Write(msg)
	inner := hs.h.Sum(hs.inner[:0])
	for i := range hs.pad {
		hs.pad[i] ^= 0x36 ^ 0x5c
	}
	hs.h.Reset()
	hs.h.Write(hs.pad[:])
	hs.h.Write(inner)
	hs.h.Sum(out[:0])
}
