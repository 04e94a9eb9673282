package tokens

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// A corrupt file's error names the file and says what is wrong, from metadata only (the
// file's size, offsets and limits that are constants), never a value decoded from the file
// nor a name read from it: those are bytes of whatever file a member renamed there, a
// root-only one included ("total_len 1397772116" is the text "TOPS").
func TestCorruptErrorsCarryNoDecodedValues(t *testing.T) {
	le := binary.LittleEndian
	const name = "00000001"
	oldObj := func(total uint32, size int) []byte {
		b := make([]byte, size)
		le.PutUint32(b, total)
		return b
	}
	pub312 := func(flag byte, n uint32, size int) []byte {
		b := make([]byte, size)
		be.PutUint32(b, Version312)
		b[offPrivFlag] = flag
		be.PutUint32(b[offPubLen:], n)
		return b
	}
	priv312 := func(n uint32) []byte {
		b := make([]byte, privHdrLen+gcmTagLen+32)
		be.PutUint32(b, Version312)
		b[offPrivFlag] = 1
		be.PutUint32(b[offPrivLen:], n)
		return b
	}
	nv312 := func(version uint32, soIter uint64) []byte {
		b := make([]byte, NVTokNewSize)
		copy(b, "label")
		be.PutUint32(b[offVersion:], version)
		be.PutUint64(b[offSOLogin:], soIter)
		be.PutUint64(b[offUserLogin:], 1000)
		return b
	}
	flat := make([]byte, flatHdrLen+attrHdrLen)
	le.PutUint32(flat[4:], 1)
	copy(flat[8:], name)
	le.PutUint32(flat[flatHdrLen:], 0xDEADBEEF)
	le.PutUint32(flat[flatHdrLen+8:], 0x0BADF00D)
	flatName := append([]byte(nil), flat...)
	copy(flatName[8:], "\x1b[2JXYZ")

	cases := []struct {
		name   string
		err    error
		file   string
		forbid []string
	}{
		{"old total_len TOPS", decodeErr(name, []byte("TOPS\x00"+strings.Repeat("x", 95))), "TOK_OBJ/" + name, []string{"1397772116", "1414484051"}},
		{"old total_len 2^31", decodeOrderErr(name, oldObj(1<<31, 100), LittleEndian), "TOK_OBJ/" + name, []string{"2147483648"}},
		{"old total_len small", decodeOrderErr(name, oldObj(3, 100), LittleEndian), "TOK_OBJ/" + name, []string{"size 3 "}},
		{"3.12 public length 2^31", decodeErr(name, pub312(0, 1<<31, 64)), "TOK_OBJ/" + name, []string{"2147483648"}},
		{"3.12 public length", decodeErr(name, pub312(0, 0x12345678, 64)), "TOK_OBJ/" + name, []string{"305419896"}},
		{"3.12 private length", decodeErr(name, priv312(0x12345678)), "TOK_OBJ/" + name, []string{"305419896"}},
		{"3.12 private length 2^31", decodeErr(name, priv312(1<<31)), "TOK_OBJ/" + name, []string{"2147483648"}},
		{"3.12 flag byte", decodeErr(name, pub312(0x42, 0, 64)), "TOK_OBJ/" + name, []string{"66", "0x42"}},
		{"NVTOK.DAT version", nvErr(nv312(0xDEADBEEF, 1000)), "NVTOK.DAT", []string{"DEADBEEF", "deadbeef", "3735928559"}},
		{"NVTOK.DAT iterations", nvErr(nv312(Version312, 0x0123456789)), "NVTOK.DAT", []string{"4886718345"}},
		{"flattened attribute", flatErr(name, flat), "TOK_OBJ/" + name, []string{"DEADBEEF", "3735928559", "195948557", "BADF00D"}},
		{"flattened stored name", flatErr(name, flatName), "TOK_OBJ/" + name, []string{"XYZ", "[2J"}},
		// OBJ.IDX's lines are its bytes: a name is described, never quoted.
		{"OBJ.IDX name length", ValidObjectName("TOPSECRET-LINE"), FileIndex, []string{"TOPSECRET"}},
		{"OBJ.IDX name slash", ValidObjectName("SEC/RET1"), FileIndex, []string{"SEC/RET1", "SEC"}},
		{"OBJ.IDX name dotdot", ValidObjectName("SE..RET1"), FileIndex, []string{"SE..RET1", "RET1"}},
		// A byte-order error names the files and what showed their order, not the readings
		// (the plan's byte_order_evidence has them).
		{"mixed byte order", mixedOrderErr(), "TOK_OBJ/" + name, []string{"1397772116", "134217728", "4242"}},
	}
	for _, c := range cases {
		if !errors.Is(c.err, ErrCorrupt) {
			t.Errorf("%s: %v, want ErrCorrupt", c.name, c.err)
			continue
		}
		var ce *CorruptError
		var oe *OrderError
		if !(errors.As(c.err, &ce) && ce.File == c.file) && !(errors.As(c.err, &oe) && oe.File == c.file) {
			t.Errorf("%s: %v: want a CorruptError or OrderError for %s", c.name, c.err, c.file)
		}
		msg := c.err.Error()
		for _, f := range c.forbid {
			if strings.Contains(msg, f) {
				t.Errorf("%s: the error quotes a value read from the file (%s): %s", c.name, f, msg)
			}
		}
	}
}

func mixedOrderErr() error {
	nv := Evidence{File: FileNVTok, Order: LittleEndian, Reason: "max PIN length 8 (134217728 read big-endian)", clue: "max PIN length make sense read little-endian"}
	obj := Evidence{File: "TOK_OBJ/00000001", Order: BigEndian, Reason: "total_len 1397772116 fits the 4242-byte file read big-endian"}
	_, _, err := DecideOrder(nv, []Evidence{obj})
	return orNoErr(err)
}

func decodeErr(name string, b []byte) error {
	_, err := DecodeObject(name, b, nil)
	return orNoErr(err)
}

func decodeOrderErr(name string, b []byte, ord ByteOrder) error {
	_, err := DecodeObjectOrder(name, b, ord, nil)
	return orNoErr(err)
}

func nvErr(b []byte) error {
	_, err := ParseNVToken(b)
	return orNoErr(err)
}

func flatErr(name string, b []byte) error {
	_, err := ParseFlattenedOrder(name, b, LittleEndian)
	return orNoErr(err)
}

func orNoErr(err error) error {
	if err == nil {
		return fmt.Errorf("no error")
	}
	return err
}
