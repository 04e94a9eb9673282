package main

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/ocktools/pkcstok-migrate/internal/repofs"
	"github.com/ocktools/pkcstok-migrate/tokens"
	"github.com/ocktools/pkcstok-migrate/tokens/tokentest"
)

// gentoken DIR ORDER TYPE N: writes a generated old-format repository DIR/swtok (slot 3, PINs
// sopin123 / user1234, counter names 00000000, 10000000, ...) and DIR/conf in byte order ORDER
// (little-endian or big-endian, whatever this host's), with modes 0660/0770 and group pkcs11.
func cmdGentoken(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 4 {
		ts.Fatalf("usage: gentoken DIR little-endian|big-endian soft|ica|cca|ep11 N")
	}
	dir := ts.MkAbs(args[0])
	var order tokentest.ByteOrder
	switch args[1] {
	case "little-endian":
		order = binary.LittleEndian
	case "big-endian":
		order = binary.BigEndian
	default:
		ts.Fatalf("gentoken: unknown byte order %q", args[1])
	}
	var typ tokens.Type
	for _, t := range []tokens.Type{tokens.TypeSoft, tokens.TypeICA, tokens.TypeCCA, tokens.TypeEP11} {
		if strings.EqualFold(t.String(), args[2]) {
			typ = t
		}
	}
	n, err := strconv.Atoi(args[3])
	if typ == tokens.TypeUnknown || err != nil {
		ts.Fatalf("gentoken: bad type %q or count %q", args[2], args[3])
	}
	if _, err := tokentest.WriteOldWithConf(dir, 3, tokentest.Options{Type: typ, SOPIN: "sopin123", UserPIN: "user1234", N: n, Seed: 3, MK88: typ == tokens.TypeCCA, Order: order}); err != nil {
		ts.Fatalf("gentoken: %v", err)
	}
	gid, err := repofs.LookupGroup("pkcs11")
	if err != nil {
		ts.Fatalf("gentoken: group pkcs11: %v", err)
	}
	err = filepath.Walk(filepath.Join(dir, "swtok"), func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Chown(p, 0, gid)
	})
	if err != nil {
		ts.Fatalf("gentoken: %v", err)
	}
}

// truncate FILE N: cuts the last N bytes off FILE.
func cmdTruncate(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 {
		ts.Fatalf("usage: truncate FILE N")
	}
	p := ts.MkAbs(args[0])
	fi, err := os.Stat(p)
	ts.Check(err)
	n, err := strconv.ParseInt(args[1], 10, 64)
	ts.Check(err)
	ts.Check(os.Truncate(p, fi.Size()-n))
}
