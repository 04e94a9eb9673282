package tokens

import (
	"bytes"
	"crypto/rand"
	"testing"
)

// BenchmarkReencryptPrivate re-encrypts one old private object of about 600 bytes per op
// (3DES-CBC decrypt + SHA-1, fresh object key, RFC 3394 wrap, AES-256-GCM).
func BenchmarkReencryptPrivate(b *testing.B) {
	flat := newFlat(4, 1, sampleName).add(attr(ckaValue, bytes.Repeat([]byte{0x5a}, 600-16-12))).b
	oldKeys := &Keys{Format: FormatOld, OldMK: seq(0, 24)}
	newKeys := &Keys{Format: Format312, NewMK: seq(0x20, 32)}
	file := encodeOldPrivate(b, flat, oldKeys.OldMK)
	b.SetBytes(int64(len(flat)))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, _, err := ReencryptObject(sampleName, file, oldKeys, newKeys, rand.Reader); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/object")
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "objects/s")
}

const ckaValue = 0x11

// TestReencryptConcurrent shares one pair of Keys between goroutines (run with -race).
func TestReencryptConcurrent(t *testing.T) {
	flat := unhex(t, sampleFlat)
	oldKeys := &Keys{Format: FormatOld, OldMK: seq(0, 24)}
	newKeys := &Keys{Format: Format312, NewMK: seq(0x20, 32)}
	file := encodeOldPrivate(t, flat, oldKeys.OldMK)
	errs := make(chan error, 8)
	for range 8 {
		go func() {
			var err error
			for range 50 {
				var out []byte
				if out, _, _, err = ReencryptObject(sampleName, file, oldKeys, newKeys, rand.Reader); err != nil {
					break
				}
				var o *Object
				if o, err = DecodeObject(sampleName, out, newKeys); err != nil {
					break
				}
				if !bytes.Equal(o.Clear, flat) {
					t.Error("clear bytes differ")
				}
			}
			errs <- err
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}
