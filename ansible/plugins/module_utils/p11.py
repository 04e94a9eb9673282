# -*- coding: utf-8 -*-
# Copyright: (c) 2025, ocktools contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The host's own openCryptoki through Python's ctypes: nothing to install on the host.

Used by pkcstok_migrate (verify_with_library) to open a migrated token with the library that
will use it and count what it sees, and by the fleet test (ansible/tests/fleet.sh) to make the
test tokens and list their objects with values, AES check values and RSA signatures. PINs are
bytes in this process only: never in argv, the environment, a file or an error message.

Only the standard library: it runs on the managed host's python3 (under qemu-user in the
fleet test). PKCS#11 structures are not packed on Linux; CK_ULONG is C unsigned long.
"""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import ctypes
import glob
import hashlib
import os

CK_ULONG = ctypes.c_ulong
CK_BBOOL = ctypes.c_ubyte

CKR_OK = 0
CKR_CRYPTOKI_ALREADY_INITIALIZED = 0x191
CKR_USER_ALREADY_LOGGED_IN = 0x100
RV_NAMES = {
    0x3: 'CKR_SLOT_ID_INVALID', 0x5: 'CKR_GENERAL_ERROR', 0x6: 'CKR_FUNCTION_FAILED',
    0x7: 'CKR_ARGUMENTS_BAD', 0x30: 'CKR_DEVICE_ERROR', 0x32: 'CKR_DEVICE_REMOVED',
    0xA0: 'CKR_PIN_INCORRECT', 0xA4: 'CKR_PIN_LOCKED', 0xB3: 'CKR_SESSION_HANDLE_INVALID',
    0xE0: 'CKR_TOKEN_NOT_PRESENT', 0xE1: 'CKR_TOKEN_NOT_RECOGNIZED', 0x100: 'CKR_USER_ALREADY_LOGGED_IN',
    0x101: 'CKR_USER_NOT_LOGGED_IN', 0x102: 'CKR_USER_PIN_NOT_INITIALIZED', 0x150: 'CKR_BUFFER_TOO_SMALL',
    0x190: 'CKR_CRYPTOKI_NOT_INITIALIZED', 0x191: 'CKR_CRYPTOKI_ALREADY_INITIALIZED',
    0x12: 'CKR_ATTRIBUTE_TYPE_INVALID', 0x11: 'CKR_ATTRIBUTE_SENSITIVE', 0x70: 'CKR_MECHANISM_INVALID',
}
CKF_RW_SESSION = 0x2
CKF_SERIAL_SESSION = 0x4
CKU_SO, CKU_USER = 0, 1
CKA_CLASS, CKA_TOKEN, CKA_PRIVATE, CKA_LABEL = 0x0, 0x1, 0x2, 0x3
CKA_VALUE, CKA_KEY_TYPE, CKA_ID, CKA_SENSITIVE = 0x11, 0x100, 0x102, 0x103
CKA_ENCRYPT, CKA_DECRYPT, CKA_SIGN, CKA_VERIFY = 0x104, 0x105, 0x108, 0x10A
CKA_MODULUS, CKA_MODULUS_BITS, CKA_PUBLIC_EXPONENT = 0x120, 0x121, 0x122
CKA_VALUE_LEN, CKA_EXTRACTABLE = 0x161, 0x162
CKO_DATA, CKO_CERTIFICATE, CKO_PUBLIC_KEY, CKO_PRIVATE_KEY, CKO_SECRET_KEY = 0, 1, 2, 3, 4
CLASS_NAMES = {0: 'data', 1: 'certificate', 2: 'public_key', 3: 'private_key', 4: 'secret_key'}
CKK_RSA, CKK_AES = 0x0, 0x1F
KEY_NAMES = {0x0: 'RSA', 0x3: 'EC', 0x10: 'GENERIC', 0x1F: 'AES', 0x15: 'DES3'}
CKM_RSA_PKCS_KEY_PAIR_GEN, CKM_RSA_PKCS = 0x0, 0x1
CKM_AES_KEY_GEN, CKM_AES_ECB = 0x1080, 0x1081
UNAVAILABLE = CK_ULONG(-1).value  # CK_UNAVAILABLE_INFORMATION

# What the signatures are made over (the fleet test's proofs).
PROOF_MESSAGE = b'pkcstok-migrate fleet proof\n'
DEFAULT_SO_PIN = b'87654321'  # the SO PIN of a token never initialised


class P11Error(Exception):
    def __init__(self, func, rv):
        self.func, self.rv = func, rv
        Exception.__init__(self, '%s failed: %s (0x%X)' % (func, RV_NAMES.get(rv, 'CKR'), rv))


class CK_ATTRIBUTE(ctypes.Structure):
    _fields_ = [('type', CK_ULONG), ('pValue', ctypes.c_void_p), ('ulValueLen', CK_ULONG)]


class CK_MECHANISM(ctypes.Structure):
    _fields_ = [('mechanism', CK_ULONG), ('pParameter', ctypes.c_void_p), ('ulParameterLen', CK_ULONG)]


def find_library(explicit=None):
    """The host's libopencryptoki.so: explicit, else the multiarch or lib64 locations."""
    if explicit:
        return explicit
    cands = sorted(glob.glob('/usr/lib/*/pkcs11/libopencryptoki.so')) + \
        sorted(glob.glob('/usr/lib/*/opencryptoki/libopencryptoki.so')) + \
        ['/usr/lib64/pkcs11/libopencryptoki.so', '/usr/lib64/opencryptoki/libopencryptoki.so',
         '/usr/lib/opencryptoki/libopencryptoki.so']
    for c in cands:
        if os.path.exists(c):
            return c
    raise OSError('libopencryptoki.so not found (looked in /usr/lib/*/pkcs11, /usr/lib64/opencryptoki, ...)')


def _buf(b):
    """A C buffer holding bytes b (the caller wipes it)."""
    return ctypes.create_string_buffer(bytes(b), len(b) or 1)


def _wipe(cbuf):
    ctypes.memset(cbuf, 0, ctypes.sizeof(cbuf))


def _template(items):
    """[(type, value)] -> (CK_ATTRIBUTE array, keep-alive list). value: bool, int or bytes."""
    arr = (CK_ATTRIBUTE * len(items))()
    keep = []
    for i, (t, v) in enumerate(items):
        if isinstance(v, bool):
            c = CK_BBOOL(1 if v else 0)
        elif isinstance(v, int):
            c = CK_ULONG(v)
        else:
            c = _buf(v)
        keep.append(c)
        arr[i].type = t
        arr[i].pValue = ctypes.cast(ctypes.pointer(c), ctypes.c_void_p) if not isinstance(c, ctypes.Array) else ctypes.cast(c, ctypes.c_void_p)
        arr[i].ulValueLen = ctypes.sizeof(c) if not isinstance(c, ctypes.Array) else len(v)
    return arr, keep


class Library(object):
    def __init__(self, path=None):
        self.path = find_library(path)
        self.lib = ctypes.CDLL(self.path)
        rv = self.lib.C_Initialize(None)
        if rv not in (CKR_OK, CKR_CRYPTOKI_ALREADY_INITIALIZED):
            raise P11Error('C_Initialize', rv)

    def call(self, name, *args):
        rv = getattr(self.lib, name)(*args)
        if rv != CKR_OK:
            raise P11Error(name, rv)

    def finalize(self):
        self.lib.C_Finalize(None)

    def slots(self):
        n = CK_ULONG(0)
        self.call('C_GetSlotList', CK_BBOOL(1), None, ctypes.byref(n))
        arr = (CK_ULONG * max(n.value, 1))()
        self.call('C_GetSlotList', CK_BBOOL(1), arr, ctypes.byref(n))
        return [arr[i] for i in range(n.value)]

    def open(self, slot, rw=False):
        h = CK_ULONG(0)
        flags = CKF_SERIAL_SESSION | (CKF_RW_SESSION if rw else 0)
        self.call('C_OpenSession', CK_ULONG(slot), CK_ULONG(flags), None, None, ctypes.byref(h))
        return Session(self, h)

    def init_token(self, slot, label, so_pin):
        """C_InitToken with the default SO PIN, then the SO PIN set to so_pin (test setup)."""
        lab = _buf(label.encode('utf-8')[:32].ljust(32, b' '))
        pin = _buf(DEFAULT_SO_PIN)
        try:
            self.call('C_InitToken', CK_ULONG(slot), pin, CK_ULONG(len(DEFAULT_SO_PIN)), lab)
        finally:
            _wipe(pin)
        s = self.open(slot, rw=True)
        try:
            s.login(CKU_SO, DEFAULT_SO_PIN)
            s.set_pin(DEFAULT_SO_PIN, so_pin)
            s.logout()
        finally:
            s.close()


class Session(object):
    def __init__(self, lib, h):
        self.p, self.h = lib, h

    def call(self, name, *args):
        self.p.call(name, self.h, *args)

    def close(self):
        self.p.lib.C_CloseSession(self.h)

    def login(self, user_type, pin):
        c = _buf(pin)
        try:
            rv = self.p.lib.C_Login(self.h, CK_ULONG(user_type), c, CK_ULONG(len(pin)))
        finally:
            _wipe(c)
        if rv not in (CKR_OK, CKR_USER_ALREADY_LOGGED_IN):
            raise P11Error('C_Login', rv)

    def logout(self):
        self.p.lib.C_Logout(self.h)

    def set_pin(self, old, new):
        a, b = _buf(old), _buf(new)
        try:
            self.call('C_SetPIN', a, CK_ULONG(len(old)), b, CK_ULONG(len(new)))
        finally:
            _wipe(a)
            _wipe(b)

    def init_pin(self, pin):
        c = _buf(pin)
        try:
            self.call('C_InitPIN', c, CK_ULONG(len(pin)))
        finally:
            _wipe(c)

    def find(self):
        self.call('C_FindObjectsInit', None, CK_ULONG(0))
        out = []
        try:
            arr = (CK_ULONG * 64)()
            n = CK_ULONG(0)
            while True:
                self.call('C_FindObjects', arr, CK_ULONG(64), ctypes.byref(n))
                if n.value == 0:
                    break
                out.extend(arr[i] for i in range(n.value))
        finally:
            self.p.lib.C_FindObjectsFinal(self.h)
        return out

    def attr(self, obj, t):
        """The attribute's bytes, or None when the object has none or it is sensitive."""
        a = (CK_ATTRIBUTE * 1)()
        a[0].type, a[0].pValue, a[0].ulValueLen = t, None, 0
        rv = self.p.lib.C_GetAttributeValue(self.h, CK_ULONG(obj), a, CK_ULONG(1))
        if rv != CKR_OK or a[0].ulValueLen == UNAVAILABLE:
            return None
        buf = ctypes.create_string_buffer(max(a[0].ulValueLen, 1))
        a[0].pValue = ctypes.cast(buf, ctypes.c_void_p)
        rv = self.p.lib.C_GetAttributeValue(self.h, CK_ULONG(obj), a, CK_ULONG(1))
        if rv != CKR_OK:
            return None
        return buf.raw[:a[0].ulValueLen]

    def ulong(self, obj, t):
        b = self.attr(obj, t)
        if b is None or len(b) != ctypes.sizeof(CK_ULONG):
            return None
        return CK_ULONG.from_buffer_copy(b).value

    def flag(self, obj, t):
        b = self.attr(obj, t)
        return None if not b else b[:1] != b'\x00'

    def create(self, items):
        arr, keep = _template(items)
        h = CK_ULONG(0)
        self.call('C_CreateObject', arr, CK_ULONG(len(items)), ctypes.byref(h))
        return h.value

    def generate_key(self, mech, items):
        m = CK_MECHANISM(mech, None, 0)
        arr, keep = _template(items)
        h = CK_ULONG(0)
        self.call('C_GenerateKey', ctypes.byref(m), arr, CK_ULONG(len(items)), ctypes.byref(h))
        return h.value

    def generate_key_pair(self, mech, pub, priv):
        m = CK_MECHANISM(mech, None, 0)
        pa, k1 = _template(pub)
        qa, k2 = _template(priv)
        hp, hq = CK_ULONG(0), CK_ULONG(0)
        self.call('C_GenerateKeyPair', ctypes.byref(m), pa, CK_ULONG(len(pub)), qa, CK_ULONG(len(priv)),
                  ctypes.byref(hp), ctypes.byref(hq))
        return hp.value, hq.value

    def _crypt(self, init, op, mech, key, data, outlen):
        m = CK_MECHANISM(mech, None, 0)
        self.call(init, ctypes.byref(m), CK_ULONG(key))
        d = _buf(data)
        out = ctypes.create_string_buffer(outlen)
        n = CK_ULONG(outlen)
        self.call(op, d, CK_ULONG(len(data)), out, ctypes.byref(n))
        return out.raw[:n.value]

    def aes_check_value(self, key):
        """The first 3 bytes of AES-ECB over a zero block (the usual key check value)."""
        return self._crypt('C_EncryptInit', 'C_Encrypt', CKM_AES_ECB, key, b'\0' * 16, 16)[:3]

    def rsa_sign(self, key):
        return self._crypt('C_SignInit', 'C_Sign', CKM_RSA_PKCS, key, PROOF_MESSAGE, 1024)


def count_objects(lib_path, slot, user_pin):
    """Opens slot with the host's library: objects seen without login (public) and after a user
    login (public and private). Returns {'public': n, 'private': n, 'total': n, 'library': path}."""
    lib = Library(lib_path)
    try:
        s = lib.open(slot)
        try:
            public = len(s.find())
            s.login(CKU_USER, user_pin)
            objs = s.find()
            private = sum(1 for o in objs if s.flag(o, CKA_PRIVATE))
            s.logout()
        finally:
            s.close()
    finally:
        lib.finalize()
    return {'public': public, 'private': private, 'total': len(objs), 'seen_after_login': len(objs) - private,
            'library': lib.path}


def listing(lib_path, slot, user_pin):
    """Every object with what identifies it and proves its value: data and certificate values
    (sha256), public key moduli (sha256), AES check values, RSA signatures over PROOF_MESSAGE
    (CKM_RSA_PKCS as the e2e suites use it; PKCS#1 v1.5 is deterministic: equal before and after means the same private key)."""
    lib = Library(lib_path)
    out = []
    try:
        s = lib.open(slot)
        try:
            s.login(CKU_USER, user_pin)
            for o in s.find():
                cls = s.ulong(o, CKA_CLASS)
                e = {'class': CLASS_NAMES.get(cls, str(cls)),
                     'label': (s.attr(o, CKA_LABEL) or b'').decode('utf-8', 'replace'),
                     'id': (s.attr(o, CKA_ID) or b'').hex(),
                     'private': bool(s.flag(o, CKA_PRIVATE))}
                kt = s.ulong(o, CKA_KEY_TYPE) if cls in (CKO_PUBLIC_KEY, CKO_PRIVATE_KEY, CKO_SECRET_KEY) else None
                if kt is not None:
                    e['key_type'] = KEY_NAMES.get(kt, str(kt))
                if cls in (CKO_DATA, CKO_CERTIFICATE):
                    v = s.attr(o, CKA_VALUE)
                    e['value_sha256'] = hashlib.sha256(v).hexdigest() if v is not None else None
                elif cls == CKO_PUBLIC_KEY and kt == CKK_RSA:
                    e['modulus_sha256'] = hashlib.sha256(s.attr(o, CKA_MODULUS) or b'').hexdigest()
                elif cls == CKO_SECRET_KEY and kt == CKK_AES:
                    e['check_value'] = s.aes_check_value(o).hex()
                elif cls == CKO_PRIVATE_KEY and kt == CKK_RSA:
                    e['signature_sha256'] = hashlib.sha256(s.rsa_sign(o)).hexdigest()
                out.append(e)
            s.logout()
        finally:
            s.close()
    finally:
        lib.finalize()
    return sorted(out, key=lambda e: (e['class'], e['label'], e['id']))


def populate(lib_path, slot, label, so_pin, user_pin, rsa_bits=2048):
    """Test setup: initialises slot and creates a public and a private data object, an AES key
    and an RSA key pair, through the host's library (old format while the conf has no
    tokversion)."""
    lib = Library(lib_path)
    try:
        lib.init_token(slot, label, so_pin)
        s = lib.open(slot, rw=True)
        try:
            s.login(CKU_SO, so_pin)
            s.init_pin(user_pin)
            s.logout()
            s.login(CKU_USER, user_pin)
            s.create([(CKA_CLASS, CKO_DATA), (CKA_TOKEN, True), (CKA_PRIVATE, False),
                      (CKA_LABEL, b'fleet-public-data'), (CKA_VALUE, b'public value of ' + label.encode())])
            s.create([(CKA_CLASS, CKO_DATA), (CKA_TOKEN, True), (CKA_PRIVATE, True),
                      (CKA_LABEL, b'fleet-private-data'), (CKA_VALUE, b'private value of ' + label.encode())])
            s.generate_key(CKM_AES_KEY_GEN, [(CKA_CLASS, CKO_SECRET_KEY), (CKA_KEY_TYPE, CKK_AES),
                                             (CKA_TOKEN, True), (CKA_PRIVATE, True), (CKA_VALUE_LEN, 32),
                                             (CKA_ENCRYPT, True), (CKA_DECRYPT, True),
                                             (CKA_LABEL, b'fleet-aes'), (CKA_ID, b'\x0a\x0b')])
            s.generate_key_pair(CKM_RSA_PKCS_KEY_PAIR_GEN,
                                [(CKA_TOKEN, True), (CKA_PRIVATE, False), (CKA_VERIFY, True), (CKA_ENCRYPT, True),
                                 (CKA_MODULUS_BITS, rsa_bits), (CKA_PUBLIC_EXPONENT, b'\x01\x00\x01'),
                                 (CKA_LABEL, b'fleet-rsa'), (CKA_ID, b'\x01\x02')],
                                [(CKA_TOKEN, True), (CKA_PRIVATE, True), (CKA_SIGN, True), (CKA_DECRYPT, True),
                                 (CKA_SENSITIVE, True), (CKA_LABEL, b'fleet-rsa'), (CKA_ID, b'\x01\x02')])
            s.logout()
        finally:
            s.close()
    finally:
        lib.finalize()
