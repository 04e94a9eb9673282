// Package e2e holds the end-to-end suites that run the real openCryptoki around the
// pkcstok-migrate binary: Debian 12's 3.8.1 on the host (TestRealOpencryptoki), and in cached
// Debian roots (package ockroot, made by make setup) the Debian 12 -> 13 upgrade with the real
// 3.8.1 and 3.23 (TestUpgrade), every Soft fixture loaded by the real 3.23
// (TestFixturesLoadIn323) and the real s390x 3.23 under qemu-user (TestS390x).
//
// The suites run only as root with PKCSTOK_E2E=1 (or CI=true, where a missing prerequisite
// fails); see README.md in this directory.
package e2e
