package apply_test

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ocktools/pkcstok-migrate/apply"
	"github.com/ocktools/pkcstok-migrate/contract"
	"github.com/ocktools/pkcstok-migrate/internal/layout"
	"github.com/ocktools/pkcstok-migrate/internal/repofs"
	"github.com/ocktools/pkcstok-migrate/plan"
	"github.com/ocktools/pkcstok-migrate/tokens"
)

// These tests are the attack groups of SECURITY.md as a member of the token group would stage them in the
// group-writable directory beside the repository (SECURITY.md). Each failed before the fix.

func req(ds, confdir string) plan.Options {
	return plan.Options{Slot: 3, Datastore: ds, Confdir: confdir, SOPIN: []byte("so-pin-1"), UserPIN: []byte("user-pin-2")}
}

func wantCode(t *testing.T, err error, code contract.Code, part string) {
	t.Helper()
	var pe *contract.Error
	if !errors.As(err, &pe) || pe.Code != code {
		t.Fatalf("want %s, got %v", code, err)
	}
	if !strings.Contains(pe.Message, part) {
		t.Errorf("message %q does not say %q", pe.Message, part)
	}
}

// victim makes a root-only tree that root must never remove, change or widen.
func victim(t *testing.T, dir string) {
	t.Helper()
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "secret"), []byte("root's own\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

// Attack group 1: a tree the run did not create, under the working copy's name, is not removed.
func TestHostileForeignTreeAtWorkingCopyName(t *testing.T) {
	for _, kind := range []string{"root_only_dir", "other_token", "symlink"} {
		t.Run(kind, func(t *testing.T) {
			ds, confdir, o := newToken(t)
			tmp := ds + layout.SuffixTmp
			switch kind {
			case "root_only_dir":
				victim(t, tmp)
			case "other_token":
				// Another token's repository (root:pkcs11 0770, like ours), renamed there.
				if err := os.Rename(ds, tmp); err != nil {
					t.Fatal(err)
				}
				newDs, _, _ := newTokenIn(t, filepath.Dir(ds))
				if newDs != ds {
					t.Fatal(newDs)
				}
			case "symlink":
				victim(t, filepath.Join(filepath.Dir(ds), "elsewhere"))
				if err := os.Symlink("elsewhere", tmp); err != nil {
					t.Fatal(err)
				}
			}
			before := tree(t, filepath.Dir(ds))
			_, err := apply.Run(req(ds, confdir), nil, o)
			wantCode(t, err, contract.CodeCorruptRepository, "not a working copy this tool made")
			if after := tree(t, filepath.Dir(ds)); after != before {
				t.Errorf("the refused run changed files:\nbefore\n%s\nafter\n%s", before, after)
			}
		})
	}
}

// newTokenIn writes the same token as newToken into root (which exists).
func newTokenIn(t *testing.T, root string) (string, string, apply.Options) {
	t.Helper()
	ds, _, o := newToken(t)
	dst := filepath.Join(root, "swtok")
	if err := os.Rename(ds, dst); err != nil {
		t.Fatal(err)
	}
	return dst, "", o
}

// The working copy a stopped run left (its marker says whose it is) is removed and rebuilt;
// one whose marker names another repository is not.
func TestLeftoverWorkingCopy(t *testing.T) {
	for _, whose := range []string{"this", "empty", "other"} {
		t.Run(whose, func(t *testing.T) {
			ds, confdir, o := newToken(t)
			tmp := ds + layout.SuffixTmp
			if err := os.Mkdir(tmp, 0o700); err != nil {
				t.Fatal(err)
			}
			marker := "pkcstok-migrate working copy of swtok\n"
			if whose == "other" {
				marker = "pkcstok-migrate working copy of lite\n"
			}
			if whose != "empty" {
				os.WriteFile(filepath.Join(tmp, "PKCSTOK_MIGRATE_WORKING_COPY"), []byte(marker), 0o600)
				os.WriteFile(filepath.Join(tmp, "NVTOK.DAT"), []byte("half\n"), 0o660)
			}
			_, err := apply.Run(req(ds, confdir), nil, o)
			if whose == "other" {
				wantCode(t, err, contract.CodeCorruptRepository, "another repository")
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if _, err := os.Lstat(tmp); err == nil {
				t.Errorf("%s left", tmp)
			}
			if _, err := os.Lstat(filepath.Join(ds, "PKCSTOK_MIGRATE_WORKING_COPY")); err == nil {
				t.Errorf("the marker went into the repository")
			}
		})
	}
}

// Attack group 2: a directory swapped in under the working copy's name (or for the repository)
// just before the exchange is never switched in.
func TestHostileSwapBeforeExchange(t *testing.T) {
	for _, which := range []string{"working_copy", "repository"} {
		t.Run(which, func(t *testing.T) {
			ds, confdir, o := newToken(t)
			orig := tree(t, ds)
			name := ds + layout.SuffixTmp
			if which == "repository" {
				name = ds
			}
			hers := filepath.Join(filepath.Dir(ds), "hers")
			o = apply.WithHook(o, func(step string) error {
				if step != "exchange" {
					return nil
				}
				if err := os.Rename(name, name+".moved"); err != nil {
					return err
				}
				if err := os.Mkdir(hers, 0o755); err != nil {
					return err
				}
				os.WriteFile(filepath.Join(hers, "NVTOK.DAT"), make([]byte, tokens.NVTokNewSize), 0o644)
				return os.Rename(hers, name)
			})
			_, err := apply.Run(req(ds, confdir), nil, o)
			wantCode(t, err, contract.CodeVerifyFailed, "nothing was switched")
			live := ds
			if which == "repository" {
				live = ds + ".moved"
			}
			if got := tree(t, live); got != orig {
				t.Errorf("the original repository changed:\n%s\nwant\n%s", got, orig)
			}
			b, err := os.ReadFile(filepath.Join(name, "NVTOK.DAT"))
			if err != nil || len(b) != tokens.NVTokNewSize {
				t.Errorf("her directory was touched: %v", err)
			}
		})
	}
}

// Attack group 3: an empty journal planted beside the repository does not stop a saved plan from
// being compared with the repository.
func TestHostileJournalDoesNotBypassStalePlan(t *testing.T) {
	for _, owner := range []string{"member", "root"} {
		t.Run(owner, func(t *testing.T) {
			ds, confdir, o := newToken(t)
			p, err := plan.Make(req(ds, confdir))
			if err != nil {
				t.Fatal(err)
			}
			// One object less: the saved plan is stale.
			idx := filepath.Join(ds, "TOK_OBJ", "OBJ.IDX")
			b, _ := os.ReadFile(idx)
			lines := strings.SplitAfter(string(b), "\n")
			os.Remove(filepath.Join(ds, "TOK_OBJ", strings.TrimSpace(lines[0])))
			os.WriteFile(idx, []byte(strings.Join(lines[1:], "")), 0o660)
			j := ds + layout.SuffixJournal
			os.WriteFile(j, nil, 0o600)
			if owner == "member" {
				os.Chown(j, 4242, 4242)
			}
			r := req(ds, confdir)
			r.Slot, r.Datastore, r.Confdir = 0, "", ""
			_, err = apply.Run(r, p, o)
			wantCode(t, err, contract.CodeStalePlan, "plan again")
			if owner == "member" {
				// Not stale: refused for her journal all the same, before any work.
				p2, err := plan.Make(req(ds, confdir))
				if err != nil {
					t.Fatal(err)
				}
				before := tree(t, filepath.Dir(ds))
				_, err = apply.Run(r, p2, o)
				wantCode(t, err, contract.CodeCorruptRepository, "not a journal this tool wrote")
				if after := tree(t, filepath.Dir(ds)); after != before {
					t.Errorf("the refused run changed files:\nbefore\n%s\nafter\n%s", before, after)
				}
			}
		})
	}
}

// Attack group 5: nothing the copy writes is readable by more users than its source.
func TestHostileNoWiderAccess(t *testing.T) {
	// A hard link to a root-only file is refused before it is read: nothing changes and no
	// byte of it reaches the error.
	t.Run("hardlink_to_root_file_refused", func(t *testing.T) {
		ds, confdir, o := newToken(t)
		secret := filepath.Join(t.TempDir(), "secret")
		os.WriteFile(secret, []byte("ROOT-ONLY-CANARY\n"), 0o600)
		if err := os.Link(secret, filepath.Join(ds, "TOK_OBJ", "SECRET")); err != nil {
			t.Fatal(err)
		}
		before := tree(t, filepath.Dir(ds))
		_, err := apply.Run(req(ds, confdir), nil, o)
		wantCode(t, err, contract.CodeCorruptRepository, "TOK_OBJ/SECRET")
		if !errors.Is(err, repofs.ErrHardLinked) {
			t.Errorf("%v: want ErrHardLinked", err)
		}
		if strings.Contains(err.Error(), "CANARY") {
			t.Errorf("the error quotes the linked file: %v", err)
		}
		if after := tree(t, filepath.Dir(ds)); after != before {
			t.Errorf("the refused run changed files:\nbefore\n%s\nafter\n%s", before, after)
		}
	})
	t.Run("root_only_extra_file", func(t *testing.T) {
		ds, confdir, o := newToken(t)
		os.WriteFile(filepath.Join(ds, "TOK_OBJ", "SECRET"), []byte("root only\n"), 0o600)
		os.WriteFile(filepath.Join(ds, "notes"), []byte("x\n"), 0o640) // group root
		if _, err := apply.Run(req(ds, confdir), nil, o); err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{"TOK_OBJ/SECRET", "notes"} {
			fi, err := os.Stat(filepath.Join(ds, f))
			if err != nil || fi.Mode().Perm()&0o077 != 0 {
				t.Errorf("%s: %v %v: readable by more than root", f, fi.Mode(), err)
			}
		}
	})
	// A repository directory only root could enter stays so (and TOK_OBJ too), named once in
	// the warning; the result's fingerprint is the migrated repository's as the next plan
	// reads it.
	t.Run("repository_root_only", func(t *testing.T) {
		ds, confdir, o := newToken(t)
		os.Chmod(ds, 0o700)
		os.Chmod(filepath.Join(ds, "TOK_OBJ"), 0o700)
		res, err := apply.Run(req(ds, confdir), nil, o)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range []string{ds, filepath.Join(ds, "TOK_OBJ")} {
			if fi, err := os.Stat(d); err != nil || fi.Mode().Perm() != 0o700 {
				t.Errorf("%s: %v %v, want 0700", d, fi.Mode(), err)
			}
		}
		if w := strings.Join(res.Warnings, "\n"); strings.Count(w, "TOK_OBJ (0700") != 1 {
			t.Errorf("TOK_OBJ is not named once: %q", res.Warnings)
		}
		p, err := plan.Make(req(ds, confdir))
		if err != nil {
			t.Fatal(err)
		}
		if p.Fingerprint != res.Fingerprint {
			t.Errorf("result fingerprint %s, the migrated repository's %s", res.Fingerprint, p.Fingerprint)
		}
	})
	// An object only root could read (Debian's 3.8.1 run by root writes 0640 root:root)
	// keeps that: the token group gets no access it did not have; the result says so.
	t.Run("object_root_only", func(t *testing.T) {
		ds, confdir, o := newToken(t)
		b, _ := os.ReadFile(filepath.Join(ds, "TOK_OBJ", "OBJ.IDX"))
		name := strings.SplitN(string(b), "\n", 2)[0]
		obj := filepath.Join(ds, "TOK_OBJ", name)
		os.Chmod(obj, 0o640)
		os.Chown(obj, 0, 0)
		res, err := apply.Run(req(ds, confdir), nil, o)
		if err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(obj)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("the copy of the 0640 root:root object: %v %v, want 0600", fi.Mode(), err)
		}
		if !strings.Contains(strings.Join(res.Warnings, "\n"), "TOK_OBJ/"+name+" (0640, gid 0)") {
			t.Errorf("no warning names the narrowed object: %q", res.Warnings)
		}
	})
}

// Attack group 6: sparse files cost the member no disk, but the tool would write them dense: the
// repository as a whole is bounded.
func TestHostileSparseRepository(t *testing.T) {
	ds, confdir, o := newToken(t)
	for i := 0; i < 6; i++ {
		f := filepath.Join(ds, "TOK_OBJ", "SPARSE"+string(rune('A'+i)))
		if err := os.WriteFile(f, nil, 0o660); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(f, 63<<20); err != nil {
			t.Fatal(err)
		}
	}
	before := tree(t, filepath.Dir(ds))
	_, err := apply.Run(req(ds, confdir), nil, o)
	wantCode(t, err, contract.CodeCorruptRepository, "MiB")
	if after := tree(t, filepath.Dir(ds)); after != before {
		t.Errorf("the refused run changed files:\nbefore\n%s\nafter\n%s", before, after)
	}
}

// 3.26+ token libraries leave <name>.TMP files when they stop while writing: they do not
// block the migration, the plan lists them, the 3.12 repository does not carry them.
func TestLibraryTempFiles(t *testing.T) {
	ds, confdir, o := newToken(t)
	b, _ := os.ReadFile(filepath.Join(ds, "TOK_OBJ", "OBJ.IDX"))
	obj := strings.SplitN(string(b), "\n", 2)[0]
	temps := []string{"NVTOK.DAT.TMP", "TOK_OBJ/OBJ.IDX.TMP", "TOK_OBJ/" + obj + ".TMP"}
	for _, f := range temps {
		os.WriteFile(filepath.Join(ds, f), []byte("cut short"), 0o660)
	}
	p, err := plan.Make(req(ds, confdir))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(p.LibraryTempFiles, " ") != "NVTOK.DAT.TMP TOK_OBJ/"+obj+".TMP TOK_OBJ/OBJ.IDX.TMP" {
		t.Errorf("plan lists %q", p.LibraryTempFiles)
	}
	if _, err := apply.Run(req(ds, confdir), nil, o); err != nil {
		t.Fatal(err)
	}
	for _, f := range temps {
		if _, err := os.Lstat(filepath.Join(ds, f)); err == nil {
			t.Errorf("%s was carried into the 3.12 repository", f)
		}
		if _, err := os.Lstat(filepath.Join(ds+layout.SuffixBak, f)); err != nil {
			t.Errorf("%s is not kept in the backup: %v", f, err)
		}
	}
}

// Attack group 7 (last part): rollback reads opencryptoki.conf_BAK (for the slot's tokversion
// before the migration) only when it is a file of root's (or the conf directory owner's) that
// nobody else may write, and never installs or changes it.
func TestRollbackIgnoresUntrustedConfBackup(t *testing.T) {
	// group_writable: only conf_BAK (the conf apply left keeps the original's mode, 0644);
	// both_group_writable (a conf the group may change anyway) is rolled back, with a warning.
	for _, how := range []string{"member_owned", "group_writable", "symlink", "both_group_writable"} {
		t.Run(how, func(t *testing.T) {
			ds, confdir, o := newToken(t)
			if _, err := apply.Run(req(ds, confdir), nil, o); err != nil {
				t.Fatal(err)
			}
			bak := filepath.Join(confdir, layout.ConfBakName)
			switch how {
			case "member_owned":
				os.Chown(bak, 4242, 4242)
			case "group_writable":
				os.Chmod(bak, 0o664)
			case "symlink":
				other := filepath.Join(confdir, "hers.conf")
				os.Rename(bak, other)
				os.Symlink("hers.conf", bak)
			case "both_group_writable":
				os.Chmod(bak, 0o664)
				os.Chmod(filepath.Join(confdir, layout.ConfName), 0o664)
				res, err := apply.Rollback(plan.Options{Slot: 3, Datastore: ds, Confdir: confdir}, o)
				if err != nil {
					t.Fatal(err)
				}
				if !strings.Contains(strings.Join(res.Warnings, "\n"), "writable by group or others") {
					t.Errorf("no warning about the group-writable conf: %q", res.Warnings)
				}
				return
			}
			bakBefore := lstatString(t, bak)
			res, err := apply.Rollback(plan.Options{Slot: 3, Datastore: ds, Confdir: confdir}, o)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(strings.Join(res.Warnings, "\n"), "not a backup this tool made") {
				t.Errorf("no warning about the untrusted backup: %q", res.Warnings)
			}
			// The backup is neither installed nor changed: the slot's line is removed as the
			// migration wrote it.
			got, _ := os.ReadFile(filepath.Join(confdir, layout.ConfName))
			if strings.Contains(string(got), "tokversion") {
				t.Errorf("the slot's tokversion line is still there:\n%s", got)
			}
			if after := lstatString(t, bak); after != bakBefore {
				t.Errorf("the backup changed: before %s, after %s", bakBefore, after)
			}
		})
	}
}

// A default ACL on the directory beside the repository (setfacl -d -m u:nobody:rwx) would
// reach every file of the migrated repository (nobody could read and write NVTOK.DAT beside the
// 0660 mode) if the working copy kept the ACLs it inherits: it drops them.
func TestParentDefaultACLNotInherited(t *testing.T) {
	ds, confdir, o := newToken(t)
	if out, err := exec.Command("setfacl", "-d", "-m", "u:nobody:rwx", filepath.Dir(ds)).CombinedOutput(); err != nil {
		t.Fatalf("setfacl (package acl, make setup): %v %s", err, out)
	}
	if _, err := apply.Run(req(ds, confdir), nil, o); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{".", "NVTOK.DAT", "TOK_OBJ", "TOK_OBJ/OBJ.IDX"} {
		p := filepath.Join(ds, f)
		buf := make([]byte, 256)
		for _, attr := range []string{"system.posix_acl_access", "system.posix_acl_default"} {
			if n, err := unix.Getxattr(p, attr, buf); err == nil {
				t.Errorf("%s carries %s (%d bytes) from the parent's default ACL", f, attr, n)
			} else if err != unix.ENODATA {
				t.Errorf("%s: getxattr %s: %v", f, attr, err)
			}
		}
	}
}

// lstatString describes the entry at p (not a symlink's target): type, mode, owner, size, inode.
func lstatString(t *testing.T, p string) string {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return fmt.Sprintf("%v %d:%d size %d ino %d", fi.Mode(), st.Uid, st.Gid, fi.Size(), st.Ino)
}
