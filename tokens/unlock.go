package tokens

import (
	"bytes"
	"crypto/aes"
	"crypto/pbkdf2"
	"crypto/sha1"
	"crypto/sha512"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"sync"
)

// Unlock checks both PINs and returns the repository's master key.
//
// Old format (§3.3): SHA-1 of each PIN against NVTOK.DAT, then each MK file must decrypt with its
// PIN (SHA-1 check) and both must hold the same master key. 3.12 format (§4): PBKDF2 login keys
// compared in constant time, then MK_SO / MK_USER unwrapped with the wrap keys and compared.
// Every PBKDF2 key is derived at most once, all of them in parallel.
//
// Errors: ErrWrongSOPIN and/or ErrWrongUserPIN (both can be reported at once), ErrUserPINNotSet
// (user PIN never set, or MK_USER missing), ErrMKMismatch, *CorruptError (bad MK size, or an MK
// file that fails its check although the PIN matches NVTOK.DAT).
func (r *Repository) Unlock(soPIN, userPIN []byte) (*Keys, error) {
	switch r.NV.Format {
	case FormatOld:
		return r.unlockOld(soPIN, userPIN)
	case Format312:
		return r.unlock312(soPIN, userPIN)
	}
	return nil, errors.New("tokens: repository of unknown format")
}

// pinErrors combines the PIN verdicts; nil when there is nothing to report.
func pinErrors(soBad bool, userErr error) error {
	switch {
	case soBad && userErr != nil:
		return fmt.Errorf("%w; %w", ErrWrongSOPIN, userErr)
	case soBad:
		return ErrWrongSOPIN
	}
	return userErr
}

func (r *Repository) userPINUsable() bool { return r.NV.UserPINSet() && r.MKUser != nil }

func (r *Repository) unlockOld(soPIN, userPIN []byte) (*Keys, error) {
	nv := r.NV
	soSum := sha1.Sum(soPIN)
	soBad := subtle.ConstantTimeCompare(soSum[:], nv.SOPINSHA[:sha1.Size]) != 1
	var userErr error
	if !r.userPINUsable() {
		userErr = ErrUserPINNotSet
	} else {
		userSum := sha1.Sum(userPIN)
		if subtle.ConstantTimeCompare(userSum[:], nv.UserPINSHA[:sha1.Size]) != 1 {
			userErr = ErrWrongUserPIN
		}
	}
	if err := pinErrors(soBad, userErr); err != nil {
		return nil, err
	}
	mkSO, err := decryptOldMKChecked(FileMKSO, r.MKSO, soPIN, "SO")
	if err != nil {
		return nil, err
	}
	defer clear(mkSO)
	mkUser, err := decryptOldMKChecked(FileMKUser, r.MKUser, userPIN, "user")
	if err != nil {
		return nil, err
	}
	defer clear(mkUser)
	// Compared over the full length: a 64-byte (88-byte file) MK never equals a 24-byte one (§4.3).
	if subtle.ConstantTimeCompare(mkSO, mkUser) != 1 {
		return nil, ErrMKMismatch
	}
	return &Keys{Format: FormatOld, OldMK: bytes.Clone(mkSO[:oldObjKeyLen])}, nil
}

func decryptOldMKChecked(file string, data, pin []byte, who string) ([]byte, error) {
	mk, err := DecryptOldMK(file, data, pin)
	if errors.Is(err, ErrOldMKCheck) {
		return nil, corrupt(file, "master key check failed although the %s PIN matches NVTOK.DAT (tampered file)", who)
	}
	return mk, err
}

// kdfJob is one PBKDF2-HMAC-SHA512 derivation (§4.1).
type kdfJob struct {
	pin []byte
	kdf KDF
	out []byte
	err error
}

// deriveAll runs the jobs in parallel, one goroutine each (the first in the caller's).
func deriveAll(jobs ...*kdfJob) error {
	run := func(j *kdfJob) {
		j.out, j.err = pbkdf2.Key(sha512.New, string(j.pin), j.kdf.Salt, int(j.kdf.Iterations), derivedKeyLen)
	}
	var wg sync.WaitGroup
	for _, j := range jobs[1:] {
		wg.Go(func() { run(j) })
	}
	run(jobs[0])
	wg.Wait()
	for _, j := range jobs {
		if j.err != nil {
			for _, j := range jobs {
				clear(j.out)
			}
			// A failing PBKDF2 is an error, never "PIN OK" (§12 on the reference's behaviour).
			return fmt.Errorf("tokens: PBKDF2 failed: %w", j.err)
		}
	}
	return nil
}

func wipeJobs(jobs ...*kdfJob) {
	for _, j := range jobs {
		if j != nil {
			clear(j.out)
		}
	}
}

func (r *Repository) unlock312(soPIN, userPIN []byte) (*Keys, error) {
	nv := r.NV
	userOK := r.userPINUsable()
	if len(r.MKSO) != mkNewFileSize {
		return nil, corrupt(FileMKSO, "size of %d bytes, want %d for the 3.12 format", len(r.MKSO), mkNewFileSize)
	}
	if userOK && len(r.MKUser) != mkNewFileSize {
		return nil, corrupt(FileMKUser, "size of %d bytes, want %d for the 3.12 format", len(r.MKUser), mkNewFileSize)
	}
	soLogin := &kdfJob{pin: soPIN, kdf: nv.SOLogin}
	soWrap := &kdfJob{pin: soPIN, kdf: nv.SOWrap}
	jobs := []*kdfJob{soLogin, soWrap}
	var userLogin, userWrap *kdfJob
	if userOK {
		userLogin = &kdfJob{pin: userPIN, kdf: nv.UserLogin}
		userWrap = &kdfJob{pin: userPIN, kdf: nv.UserWrap}
		jobs = append(jobs, userLogin, userWrap)
	}
	if err := deriveAll(jobs...); err != nil {
		return nil, err
	}
	defer wipeJobs(jobs...)
	soBad := subtle.ConstantTimeCompare(soLogin.out, nv.SOLoginKey) != 1
	var userErr error
	if !userOK {
		userErr = ErrUserPINNotSet
	} else if subtle.ConstantTimeCompare(userLogin.out, nv.UserLoginKey) != 1 {
		userErr = ErrWrongUserPIN
	}
	if err := pinErrors(soBad, userErr); err != nil {
		return nil, err
	}
	mkSO, err := unwrapNewMK(FileMKSO, r.MKSO, soWrap.out, "SO")
	if err != nil {
		return nil, err
	}
	mkUser, err := unwrapNewMK(FileMKUser, r.MKUser, userWrap.out, "user")
	if err != nil {
		clear(mkSO)
		return nil, err
	}
	defer clear(mkUser)
	if subtle.ConstantTimeCompare(mkSO, mkUser) != 1 {
		clear(mkSO)
		return nil, ErrMKMismatch
	}
	return &Keys{Format: Format312, NewMK: mkSO}, nil
}

func unwrapNewMK(file string, data, wrapKey []byte, who string) ([]byte, error) {
	kek, err := aes.NewCipher(wrapKey)
	if err != nil {
		return nil, err
	}
	mk, err := keyUnwrap(kek, data)
	if err != nil {
		return nil, corrupt(file, "master key does not unwrap although the %s PIN matches NVTOK.DAT (tampered file)", who)
	}
	return mk, nil
}

// Upgrade is the 3.12 form of a repository's token data and master key files (§2.5, §4.2).
type Upgrade struct {
	NVToken []byte // 592 bytes
	MKSO    []byte // 40 bytes
	MKUser  []byte // 40 bytes
	Keys    *Keys  // Format312, NewMK: lets the caller verify without re-deriving
}

// PendingUpgrade is an Upgrade whose new master key is known (Keys: objects can be
// re-encrypted at once) while the four PBKDF2 derivations the key files need still run.
type PendingUpgrade struct {
	Keys *Keys // Format312, NewMK

	done chan struct{}
	up   *Upgrade
	err  error
}

// Wait returns the Upgrade once its key files are made. It may be called more than once.
func (p *PendingUpgrade) Wait() (*Upgrade, error) {
	<-p.done
	return p.up, p.err
}

// StartUpgrade builds NVTOK.DAT, MK_SO and MK_USER in the 3.12 format for an old-format
// repository, in two halves. It checks the PINs again the cheap old way (no PBKDF2), reads
// from rnd, in this order, the four 32-byte random salt halves (so_login, user_login, so_wrap,
// user_wrap) and the 32-byte new master key, and returns at once with the master key, while
// the four PBKDF2 derivations (the expensive part, 100,000 iterations each, in parallel) and
// the key wrapping go on in the background until Wait. The caller can re-encrypt every object
// meanwhile: objects need the master key only.
func (r *Repository) StartUpgrade(soPIN, userPIN []byte, rnd io.Reader) (*PendingUpgrade, error) {
	if r.NV.Format != FormatOld {
		return nil, fmt.Errorf("tokens: StartUpgrade needs an old-format repository, this one is %s", r.NV.Format)
	}
	old, err := r.unlockOld(soPIN, userPIN)
	if err != nil {
		return nil, err
	}
	old.Wipe()
	var rand [4*32 + mkNewLen]byte
	defer clear(rand[:])
	if _, err := io.ReadFull(rnd, rand[:]); err != nil {
		return nil, fmt.Errorf("tokens: reading random salts and master key: %w", err)
	}
	nvt := upgradeNVToken(r.NV.Raw, r.NV.Order, rand[:128])
	mk := bytes.Clone(rand[128:])
	nv, err := ParseNVToken(nvt)
	if err != nil {
		return nil, err // cannot happen
	}
	p := &PendingUpgrade{Keys: &Keys{Format: Format312, NewMK: mk}, done: make(chan struct{})}
	so, user := bytes.Clone(soPIN), bytes.Clone(userPIN)
	go func() {
		defer close(p.done)
		defer clear(so)
		defer clear(user)
		p.up, p.err = finishUpgrade(nvt, nv, mk, so, user, p.Keys)
	}()
	return p, nil
}

func finishUpgrade(nvt []byte, nv *NVToken, mk, soPIN, userPIN []byte, keys *Keys) (*Upgrade, error) {
	soLogin := &kdfJob{pin: soPIN, kdf: nv.SOLogin}
	userLogin := &kdfJob{pin: userPIN, kdf: nv.UserLogin}
	soWrap := &kdfJob{pin: soPIN, kdf: nv.SOWrap}
	userWrap := &kdfJob{pin: userPIN, kdf: nv.UserWrap}
	if err := deriveAll(soLogin, userLogin, soWrap, userWrap); err != nil {
		return nil, err
	}
	defer wipeJobs(soLogin, userLogin, soWrap, userWrap)
	copy(nvt[offSOLogin+8+saltLen:], soLogin.out)
	copy(nvt[offUserLogin+8+saltLen:], userLogin.out)
	u := &Upgrade{NVToken: nvt, Keys: keys}
	for _, w := range []struct {
		dst *[]byte
		key []byte
	}{{&u.MKSO, soWrap.out}, {&u.MKUser, userWrap.out}} {
		kek, err := aes.NewCipher(w.key)
		if err != nil {
			return nil, err
		}
		if *w.dst, err = keyWrap(kek, mk); err != nil {
			return nil, err
		}
	}
	return u, nil
}
