//go:build linux

package e2e

import (
	"bytes"
	"testing"
)

// The listing parser on both print layouts of pkcs11-tool the suites meet: opensc 0.23/0.26
// (Debian 12, 13) and 0.27.1 (testing), which prints IDs as "258 (0x01:02)" and wraps the EC
// point (now "EC Point:") over several lines.
func TestParseListLayouts(t *testing.T) {
	old := "Public Key Object; EC  EC_POINT 256 bits\n" +
		"  EC_POINT:   044104d6cc6bee69cc97aabc26fe468ff4f2ec744b9c1ad89e95d72d7376a6cf6195d8ed70b4bbaf0730cf590604fcb1dbc9d9446a0ba3a3d91378e5a224c8c1ac3af2\n" +
		"  EC_PARAMS:  06082a8648ce3d030107\n" +
		"  label:      upg-ec\n" +
		"  ID:         0304\n" +
		"Secret Key Object; AES length 16\n" +
		"  label:      upg-aes\n" +
		"  ID:         0a0b\n"
	new := "Public Key Object; EC  EC_POINT 256 bits\n" +
		"  EC Point:   044104d6cc6bee69cc97aabc26fe468ff4f2ec744b9c1ad89e95d72d7376a6cf\n" +
		"              6195d8ed70b4bbaf0730cf590604fcb1dbc9d9446a0ba3a3d91378e5a224c8c1\n" +
		"              ac3af2\n" +
		"  EC Params:  06:08:2a:86:48:ce:3d:03:01:07 (\"prime256v1\" OID:\"1.2.840.10045.3.1.7\")\n" +
		"  label:      upg-ec\n" +
		"  ID:         772 (0x03:04)\n" +
		"Secret Key Object; AES length 16\n" +
		"  label:      upg-aes\n" +
		"  ID:         2571 (0x0a:0b)\n"
	a, err := parseList([]byte(old))
	if err != nil {
		t.Fatal(err)
	}
	b, err := parseList([]byte(new))
	if err != nil {
		t.Fatal(err)
	}
	if len(a) != 2 || len(b) != 2 {
		t.Fatalf("objects: %d and %d, want 2 each", len(a), len(b))
	}
	for i := range a {
		if a[i].key() != b[i].key() || !bytes.Equal(a[i].ECPoint, b[i].ECPoint) {
			t.Errorf("object %d: %s %x (0.26) and %s %x (0.27)", i, a[i], a[i].ECPoint, b[i], b[i].ECPoint)
		}
	}
	if a[0].ID != "0304" || len(a[0].ECPoint) != 67 {
		t.Errorf("EC key: ID %q, point of %d bytes; want 0304 and 67", a[0].ID, len(a[0].ECPoint))
	}
	if _, err := ecPublicKey(b[0].ECPoint); err != nil {
		t.Errorf("0.27's EC point: %v", err)
	}
}
