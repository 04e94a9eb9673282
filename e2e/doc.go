// Package e2e holds the end-to-end suites that run the real openCryptoki around the
// pkcstok-migrate binary: Debian 12's 3.8.1 on the host (TestRealOpencryptoki), and in cached
// Debian roots (package ockroot, made by make setup) the Debian 12 -> 13 upgrade with the real
// 3.8.1 and 3.23 (TestUpgrade), every Soft fixture loaded by the real 3.23
// (TestFixturesLoadIn323), a lab host of four token types with their own PINs migrated as one
// and rolled back per slot on the real 3.27
// (TestLabHostOfFourTokenTypesMigratesAsOneAndRollsBackPerSlot), and the matrix of releases
// and architectures (TestMatrix): 3.23 on amd64 and s390x, 3.27 on amd64, s390x, ppc64el and
// arm64 (the foreign ones under qemu-user), and the upgrade paths to 3.27.
//
// The suites run only as root with PKCSTOK_E2E=1 (or CI=true, where a missing prerequisite
// fails); see README.md in this directory.
package e2e
