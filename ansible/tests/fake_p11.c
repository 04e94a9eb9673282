/* A stand-in for libopencryptoki.so, for tests/run.sh only: just what
 * module_utils/p11.py count_objects calls. Like openCryptoki, C_OpenSession opens
 * $FAKE_P11_TOKDIR/NVTOK.DAT and C_Login MK_USER read-write and sets their mode to 0660 and
 * their group to pkcs11 (set_perm; that works only for root or the owner); unlike it,
 * C_Initialize refuses to run as root (CKR_GENERAL_ERROR), so a check that did not give up
 * root fails; with $FAKE_P11_AS_ROOT set it runs as root too, as the real library does (the
 * adversarial suite, where a check run as root must show as the victim's mode changed). $FAKE_P11_PUBLIC and $FAKE_P11_PRIVATE objects are
 * seen (before and after C_Login with $FAKE_P11_USER_PIN). Each of these variables may be given for
 * one slot as <name>_<slot> (FAKE_P11_PRIVATE_1), which wins over <name> for the slot opened. */
#include <fcntl.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef unsigned long CK_ULONG;
typedef struct { CK_ULONG type; void *pValue; CK_ULONG ulValueLen; } CK_ATTRIBUTE;

static int logged_in, cursor;
static CK_ULONG opened_slot;

/* $<name>_<slot> for the slot opened, else $<name>. */
static const char *slot_env(const char *name) {
	char key[128];
	const char *v;
	snprintf(key, sizeof key, "%s_%lu", name, opened_slot);
	v = getenv(key);
	return v ? v : getenv(name);
}

static CK_ULONG env_n(const char *name, CK_ULONG def) {
	const char *v = slot_env(name);
	return v && *v ? strtoul(v, NULL, 10) : def;
}

CK_ULONG C_Initialize(void *a) {
	(void)a;
	if ((getuid() == 0 || geteuid() == 0) && !getenv("FAKE_P11_AS_ROOT")) return 0x5;
	logged_in = 0;
	return 0;
}
CK_ULONG C_Finalize(void *a) { (void)a; return 0; }
/* openCryptoki's set_perm on what it opens: mode 0660, group pkcs11 (fails unless root). */
static int open_set_perm(const char *name) {
	const char *dir = slot_env("FAKE_P11_TOKDIR");
	char path[4096];
	struct group *g;
	int fd;
	if (!dir || !*dir) return 0;
	snprintf(path, sizeof path, "%s/%s", dir, name);
	fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0) return -1;
	g = getgrnam("pkcs11");
	if (fchmod(fd, 0660) != 0) {}
	if (g && fchown(fd, (uid_t)-1, g->gr_gid) != 0) {}
	close(fd);
	return 0;
}

CK_ULONG C_OpenSession(CK_ULONG slot, CK_ULONG flags, void *app, void *notify, CK_ULONG *h) {
	(void)flags; (void)app; (void)notify;
	opened_slot = slot;
	if (open_set_perm("NVTOK.DAT") != 0) return 0xE1; /* CKR_TOKEN_NOT_RECOGNIZED */
	*h = 1;
	return 0;
}
CK_ULONG C_CloseSession(CK_ULONG h) { (void)h; return 0; }
CK_ULONG C_Login(CK_ULONG h, CK_ULONG type, unsigned char *pin, CK_ULONG len) {
	const char *want = slot_env("FAKE_P11_USER_PIN");
	(void)h; (void)type;
	if (!want) want = "user1234";
	if (len != strlen(want) || memcmp(pin, want, len) != 0) return 0xA0;
	if (open_set_perm("MK_USER") != 0) return 0x6; /* CKR_FUNCTION_FAILED */
	logged_in = 1;
	return 0;
}
CK_ULONG C_Logout(CK_ULONG h) { (void)h; logged_in = 0; return 0; }
CK_ULONG C_FindObjectsInit(CK_ULONG h, void *t, CK_ULONG n) { (void)h; (void)t; (void)n; cursor = 0; return 0; }
CK_ULONG C_FindObjects(CK_ULONG h, CK_ULONG *objs, CK_ULONG max, CK_ULONG *count) {
	CK_ULONG total = env_n("FAKE_P11_PUBLIC", 0) + (logged_in ? env_n("FAKE_P11_PRIVATE", 3) : 0);
	CK_ULONG n = 0;
	(void)h;
	while (n < max && (CK_ULONG)cursor < total) objs[n++] = (CK_ULONG)(++cursor);
	*count = n;
	return 0;
}
CK_ULONG C_FindObjectsFinal(CK_ULONG h) { (void)h; return 0; }
CK_ULONG C_GetAttributeValue(CK_ULONG h, CK_ULONG obj, CK_ATTRIBUTE *t, CK_ULONG n) {
	CK_ULONG i;
	(void)h;
	for (i = 0; i < n; i++) {
		if (t[i].type != 2) { t[i].ulValueLen = (CK_ULONG)-1; return 0x12; }
		if (t[i].pValue) *(unsigned char *)t[i].pValue = obj > env_n("FAKE_P11_PUBLIC", 0);
		t[i].ulValueLen = 1;
	}
	return 0;
}
