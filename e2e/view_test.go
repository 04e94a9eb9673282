//go:build linux

package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"fmt"
	"math/big"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/ocktools/pkcstok-migrate/e2e/ockroot"
)

// What a real token shows of its objects through pkcs11-tool, and what each key or value
// proves by being used: the yardstick of every suite that runs a real openCryptoki in a root.

// p11obj is one token object as the real library lists it, with its proofs.
type p11obj struct {
	Kind    string // data, cert, pubkey, privkey, secrkey
	KeyType string // RSA, EC, AES, GENERIC, ... ("" for data and certificates)
	Label   string
	ID      string // hex
	Private bool   // listed only after C_Login
	ECPoint []byte // EC public key: CKA_EC_POINT as listed

	Value    []byte // data: CKA_VALUE; cert: DER; readable generic secret: its value
	KCV      []byte // AES: AES-ECB of one zero block
	Modulus  []byte // RSA public key
	Sig      []byte // RSA private key: RSA-PKCS signature of the suite's message
	ECSig    []byte // EC private key: ECDSA signature (r||s) of the suite's message, made now
	Unusable string // why a key could not be used (e.g. 3.8.1 has no ECDSA)
}

// key identifies an object within one token's listing.
func (o p11obj) key() string {
	return o.Kind + "/" + o.KeyType + "/" + o.Label + "/" + o.ID
}

func (o p11obj) String() string {
	s := o.key()
	if o.Private {
		s += " (private)"
	}
	return s
}

// listing is the login listing, sorted by key.
type listing []p11obj

func (l listing) byKey() map[string]p11obj {
	m := map[string]p11obj{}
	for _, o := range l {
		m[o.key()] = o
	}
	return m
}

// counts: objects by kind(/key type), e.g. "privkey/RSA": 2.
func (l listing) counts() map[string]int {
	c := map[string]int{}
	for _, o := range l {
		k := o.Kind
		if o.KeyType != "" {
			k += "/" + o.KeyType
		}
		c[k]++
	}
	return c
}

// parseList reads `pkcs11-tool --list-objects` output (opensc 0.23 and 0.26).
func parseList(out []byte) (listing, error) {
	var l listing
	var cur *p11obj
	inPoint := false // the last key line was the EC point (continued on the next lines)
	flush := func() {
		inPoint = false
		if cur != nil {
			l = append(l, *cur)
			cur = nil
		}
	}
	for _, line := range strings.Split(string(out), "\n") {
		if line == "" {
			continue
		}
		if line[0] != ' ' && line[0] != '\t' {
			flush()
			head := line
			o := &p11obj{}
			switch {
			case strings.HasPrefix(head, "Data object"):
				o.Kind = "data"
			case strings.HasPrefix(head, "Certificate Object"):
				o.Kind = "cert"
			case strings.HasPrefix(head, "Public Key Object;"):
				o.Kind, o.KeyType = "pubkey", firstWord(strings.TrimPrefix(head, "Public Key Object;"))
			case strings.HasPrefix(head, "Private Key Object;"):
				o.Kind, o.KeyType = "privkey", firstWord(strings.TrimPrefix(head, "Private Key Object;"))
			case strings.HasPrefix(head, "Secret Key Object;"):
				o.Kind, o.KeyType = "secrkey", strings.ToUpper(firstWord(strings.TrimPrefix(head, "Secret Key Object;")))
			case strings.HasPrefix(head, "Using slot"), strings.HasPrefix(head, "warning:"), strings.HasPrefix(head, "Profile object"):
				continue
			default:
				return nil, fmt.Errorf("unknown object header %q", head)
			}
			cur = o
			continue
		}
		if cur == nil {
			continue
		}
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok {
			// opensc 0.27 wraps long hex values ("EC Point:") onto lines of their own.
			if inPoint {
				b, err := hex.DecodeString(strings.TrimSpace(line))
				if err != nil {
					return nil, fmt.Errorf("EC Point continuation %q: %v", line, err)
				}
				cur.ECPoint = append(cur.ECPoint, b...)
			}
			continue
		}
		inPoint = false
		v = strings.TrimLeft(v, " \t")
		switch k {
		case "label":
			if cur.Kind == "data" && len(v) >= 2 && v[0] == '\'' && v[len(v)-1] == '\'' {
				v = v[1 : len(v)-1]
			}
			cur.Label = v
		case "ID":
			cur.ID = parseID(v)
		case "EC_POINT", "EC Point": // opensc up to 0.26, 0.27
			b, err := hex.DecodeString(strings.TrimSpace(v))
			if err != nil {
				return nil, fmt.Errorf("%s %q: %v", k, v, err)
			}
			cur.ECPoint, inPoint = b, true
		}
	}
	flush()
	sort.SliceStable(l, func(i, j int) bool { return l[i].key() < l[j].key() })
	return l, nil
}

// parseID is an object's CKA_ID as hex: opensc up to 0.26 prints the hex bytes ("0a0b"),
// 0.27.1 the number and the bytes ("2571 (0x0a:0b)").
func parseID(v string) string {
	v = strings.ToLower(strings.TrimSpace(v))
	if i := strings.Index(v, "(0x"); i >= 0 && strings.HasSuffix(v, ")") {
		v = strings.ReplaceAll(v[i+3:len(v)-1], ":", "")
	}
	return v
}

func firstWord(s string) string {
	f := strings.Fields(s)
	if len(f) == 0 {
		return ""
	}
	return f[0]
}

// viewer drives pkcs11-tool on one slot of a root whose pkcsslotd runs.
type viewer struct {
	r    *ockroot.Root
	slot int
	pin  string // user PIN
	msg  []byte // the message RSA and EC keys sign
}

func (v viewer) tool(t *testing.T, login bool, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	pin := ""
	if login {
		pin = v.pin
	}
	res, err := v.r.Tool(ctx, v.slot, pin, args...)
	if err != nil {
		t.Fatalf("pkcs11-tool: %v", err)
	}
	if res.Code != 0 {
		t.Fatalf("pkcs11-tool in %s (openCryptoki %s):\n%s", v.r.Name(), v.r.Version(), res)
	}
	return res.Stdout
}

// try is tool without failing the test: output and whether it succeeded (stderr on failure).
func (v viewer) try(t *testing.T, login bool, args ...string) ([]byte, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	pin := ""
	if login {
		pin = v.pin
	}
	res, err := v.r.Tool(ctx, v.slot, pin, args...)
	if err != nil {
		t.Fatalf("pkcs11-tool: %v", err)
	}
	if res.Code != 0 {
		return append(res.Stdout, res.Stderr...), false
	}
	return res.Stdout, true
}

// list is the login listing, with Private set for objects the public listing lacks.
func (v viewer) list(t *testing.T) listing {
	t.Helper()
	raw := v.tool(t, true, "--list-objects")
	if os.Getenv("PKCSTOK_E2E_RAW") == "1" {
		t.Logf("%s: pkcs11-tool --list-objects (login):\n%s", v.r.Name(), raw)
	}
	all, err := parseList(raw)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := parseList(v.tool(t, false, "--list-objects"))
	if err != nil {
		t.Fatal(err)
	}
	seen := pub.byKey()
	for i := range all {
		_, public := seen[all[i].key()]
		all[i].Private = !public
	}
	return all
}

// observe lists every object and proves each one by using it.
func (v viewer) observe(t *testing.T) listing {
	t.Helper()
	sc, err := v.r.NewScratch()
	if err != nil {
		t.Fatal(err)
	}
	msgFile, err := sc.File(v.msg)
	if err != nil {
		t.Fatal(err)
	}
	zeros, err := sc.File(make([]byte, 16))
	if err != nil {
		t.Fatal(err)
	}
	l := v.list(t)
	sel := func(o p11obj) []string {
		if o.ID != "" {
			return []string{"--id", o.ID}
		}
		return []string{"--label", o.Label}
	}
	read := func(o p11obj, args ...string) ([]byte, bool) {
		out := sc.Out()
		msg, ok := v.try(t, o.Private || o.Kind == "privkey" || o.Kind == "secrkey", append(args, "--output-file", out)...)
		if !ok {
			return msg, false
		}
		b, err := sc.Read(out)
		if err != nil {
			t.Fatal(err)
		}
		return b, true
	}
	for i := range l {
		o := &l[i]
		switch {
		case o.Kind == "data":
			b, ok := read(*o, "--read-object", "--type", "data", "--label", o.Label)
			if !ok {
				t.Fatalf("%s: read data object %q: %s", v.r.Name(), o.Label, b)
			}
			o.Value = b
		case o.Kind == "cert":
			b, ok := read(*o, append([]string{"--read-object", "--type", "cert"}, sel(*o)...)...)
			if !ok {
				t.Fatalf("%s: read certificate %q: %s", v.r.Name(), o.Label, b)
			}
			o.Value = b
		case o.Kind == "pubkey" && o.KeyType == "RSA":
			b, ok := read(*o, append([]string{"--read-object", "--type", "pubkey"}, sel(*o)...)...)
			if !ok {
				t.Fatalf("%s: read RSA public key %q: %s", v.r.Name(), o.Label, b)
			}
			n, err := rsaModulus(b)
			if err != nil {
				t.Fatalf("%s: RSA public key %q: %v", v.r.Name(), o.Label, err)
			}
			o.Modulus = n
		case o.Kind == "privkey" && o.KeyType == "RSA":
			b, ok := read(*o, append([]string{"--sign", "--mechanism", "RSA-PKCS", "--input-file", msgFile}, sel(*o)...)...)
			if !ok {
				t.Fatalf("%s: RSA-PKCS signature with %q: %s", v.r.Name(), o.Label, b)
			}
			o.Sig = b
		case o.Kind == "privkey" && o.KeyType == "EC":
			b, ok := read(*o, append([]string{"--sign", "--mechanism", "ECDSA-SHA256", "--input-file", msgFile}, sel(*o)...)...)
			if !ok {
				o.Unusable = strings.TrimSpace(string(b))
				continue
			}
			o.ECSig = b
		case o.Kind == "secrkey" && o.KeyType == "AES":
			b, ok := read(*o, append([]string{"--encrypt", "--mechanism", "AES-ECB", "--input-file", zeros}, sel(*o)...)...)
			if !ok {
				t.Fatalf("%s: AES-ECB with %q: %s", v.r.Name(), o.Label, b)
			}
			o.KCV = b
		case o.Kind == "secrkey":
			b, ok := read(*o, append([]string{"--read-object", "--type", "secrkey"}, sel(*o)...)...)
			if !ok {
				o.Unusable = strings.TrimSpace(string(b))
				continue
			}
			o.Value = b
		}
	}
	return l
}

// rsaModulus takes the modulus from pkcs11-tool's public key output (SubjectPublicKeyInfo or
// PKCS#1 DER).
func rsaModulus(der []byte) ([]byte, error) {
	if k, err := x509.ParsePKIXPublicKey(der); err == nil {
		if rk, ok := k.(*rsa.PublicKey); ok {
			return rk.N.Bytes(), nil
		}
		return nil, fmt.Errorf("not an RSA key: %T", k)
	}
	k, err := x509.ParsePKCS1PublicKey(der)
	if err != nil {
		return nil, err
	}
	return k.N.Bytes(), nil
}

// ecPublicKey decodes CKA_EC_POINT (a DER OCTET STRING around the uncompressed point, or the
// bare point) of a P-256 key.
func ecPublicKey(point []byte) (*ecdsa.PublicKey, error) {
	p := point
	var inner []byte
	if rest, err := asn1.Unmarshal(point, &inner); err == nil && len(rest) == 0 {
		p = inner
	}
	if len(p) != 65 || p[0] != 4 {
		return nil, fmt.Errorf("EC point of %d bytes is not an uncompressed P-256 point", len(p))
	}
	x, y := new(big.Int).SetBytes(p[1:33]), new(big.Int).SetBytes(p[33:])
	if !elliptic.P256().IsOnCurve(x, y) {
		return nil, fmt.Errorf("EC point is not on P-256")
	}
	return &ecdsa.PublicKey{Curve: elliptic.P256(), X: x, Y: y}, nil
}

// verifyECSig checks a raw r||s ECDSA-SHA256 signature of msg under point.
func verifyECSig(point, sig, msg []byte) error {
	pub, err := ecPublicKey(point)
	if err != nil {
		return err
	}
	if len(sig) != 64 {
		return fmt.Errorf("ECDSA signature of %d bytes, want 64 (r||s)", len(sig))
	}
	h := sha256.Sum256(msg)
	r, s := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
	if !ecdsa.Verify(pub, h[:], r, s) {
		return fmt.Errorf("ECDSA signature does not verify under the public point %x", point)
	}
	return nil
}

// compareViews: after must list exactly before's objects, each with the same value proofs; an
// EC private key must sign now, and its signature must verify under the public point that
// before listed for the same ID. It returns the differences and the number of objects compared.
func compareViews(before, after listing, msg []byte) ([]string, int) {
	var d []string
	b, a := before.byKey(), after.byKey()
	for k := range b {
		if _, ok := a[k]; !ok {
			d = append(d, "missing "+k)
		}
	}
	for k := range a {
		if _, ok := b[k]; !ok {
			d = append(d, "new "+k)
		}
	}
	points := map[string][]byte{}
	for _, o := range before {
		if o.Kind == "pubkey" && o.KeyType == "EC" {
			points[o.ID+"/"+o.Label] = o.ECPoint
		}
	}
	n := 0
	for k, ob := range b {
		oa, ok := a[k]
		if !ok {
			continue
		}
		n++
		eq := func(what string, x, y []byte) {
			if !bytes.Equal(x, y) {
				d = append(d, fmt.Sprintf("%s: %s differs: %s before, %s after", k, what, short(x), short(y)))
			}
		}
		if ob.Private != oa.Private {
			d = append(d, fmt.Sprintf("%s: private %v before, %v after", k, ob.Private, oa.Private))
		}
		eq("value", ob.Value, oa.Value)
		eq("AES-ECB of zeros", ob.KCV, oa.KCV)
		eq("modulus", ob.Modulus, oa.Modulus)
		eq("RSA-PKCS signature", ob.Sig, oa.Sig)
		eq("EC point", ob.ECPoint, oa.ECPoint)
		if oa.Kind == "privkey" && oa.KeyType == "EC" {
			if oa.Unusable != "" && ob.Unusable != "" {
				// The same library cannot sign with it either time (3.8.1 has no ECDSA).
				continue
			}
			if oa.Unusable != "" {
				d = append(d, fmt.Sprintf("%s: cannot sign after migration: %s", k, oa.Unusable))
			} else if p, ok := points[oa.ID+"/"+oa.Label]; !ok {
				d = append(d, fmt.Sprintf("%s: no EC public key with ID %s and the same label before", k, oa.ID))
			} else if err := verifyECSig(p, oa.ECSig, msg); err != nil {
				d = append(d, fmt.Sprintf("%s: %v", k, err))
			}
		}
	}
	sort.Strings(d)
	return d, n
}

func short(b []byte) string {
	if b == nil {
		return "nothing"
	}
	if len(b) > 16 {
		s := sha256.Sum256(b)
		return fmt.Sprintf("%d bytes sha256:%x", len(b), s[:6])
	}
	return fmt.Sprintf("%x", b)
}

func (l listing) logTo(t *testing.T, title string) {
	t.Helper()
	var b strings.Builder
	for _, o := range l {
		fmt.Fprintf(&b, "\n  %-40s", o)
		switch {
		case o.Value != nil:
			fmt.Fprintf(&b, " value %s", short(o.Value))
		case o.KCV != nil:
			fmt.Fprintf(&b, " AES-ECB(0) %x", o.KCV)
		case o.Modulus != nil:
			fmt.Fprintf(&b, " modulus %s", short(o.Modulus))
		case o.Sig != nil:
			fmt.Fprintf(&b, " RSA-PKCS sig %s", short(o.Sig))
		case o.ECPoint != nil:
			fmt.Fprintf(&b, " EC point %s", short(o.ECPoint))
		case o.ECSig != nil:
			fmt.Fprintf(&b, " ECDSA sig made")
		case o.Unusable != "":
			fmt.Fprintf(&b, " unusable: %s", firstLine(o.Unusable))
		}
	}
	t.Logf("%s: %d objects%s", title, len(l), b.String())
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}
