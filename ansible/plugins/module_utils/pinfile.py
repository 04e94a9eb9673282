# -*- coding: utf-8 -*-
# Copyright: (c) 2025, ocktools contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reads a PIN file on the managed host under the rules pkcstok-migrate applies to its own PIN
files (SECURITY.md, promise 8), as ssh does for private keys.

The module runs as root in places members of the token group may be able to change, so a PIN
file is read only as a regular file: a symlink as its last component is refused (O_NOFOLLOW), the
open never blocks (O_NONBLOCK: a FIFO is refused at once, never waited on), the file must be
owned by root or the caller, carry no permission bit for group or others, and hold at most
MAX_SIZE bytes. The PIN is the first line (a trailing CR is dropped). Errors name the file and
the rule it broke, never anything read from it.

Only the standard library: it runs on the managed host's python3.
"""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import errno
import os
import stat

MAX_SIZE = 4096
MAX_PIN_LEN = 255  # pkcstok-migrate's bound on a PIN


class PinFileError(Exception):
    """The file was refused; str() names the file and the rule, never its content."""


def _flags():
    f = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
    for name in ('O_CLOEXEC', 'O_NOCTTY'):
        f |= getattr(os, name, 0)
    return f


def read_pin_file(path, what='PIN', euid=None, max_size=MAX_SIZE):
    """Returns the PIN of the file at path as text (the first line), or raises PinFileError.

    what names the PIN in errors ("user PIN"); euid is the caller (default: os.geteuid())."""
    if euid is None:
        euid = os.geteuid()
    try:
        fd = os.open(path, _flags())
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise PinFileError('%s file %s is a symlink: refusing (give the file itself)' % (what, path))
        if e.errno == errno.ENXIO:  # a socket
            raise PinFileError('%s file %s is not a regular file: refusing' % (what, path))
        raise PinFileError('%s file %s cannot be opened: %s' % (what, path, os.strerror(e.errno)))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = 'a FIFO' if stat.S_ISFIFO(st.st_mode) else 'a directory' if stat.S_ISDIR(st.st_mode) \
                else 'a device' if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else 'not a regular file'
            raise PinFileError('%s file %s is %s, not a regular file: refusing' % (what, path, kind))
        if st.st_uid not in (0, euid):
            raise PinFileError('%s file %s is owned by uid %d, neither root nor the caller (uid %d): refusing'
                               % (what, path, st.st_uid, euid))
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            raise PinFileError('%s file %s has mode %04o: it must not be accessible by group or others '
                               '(chmod 600)' % (what, path, mode))
        if st.st_size > max_size:
            raise PinFileError('%s file %s is %d bytes, more than the %d accepted' % (what, path, st.st_size, max_size))
        chunks = []
        n = 0
        while n <= max_size:
            try:
                b = os.read(fd, max_size + 1 - n)
            except OSError as e:
                if e.errno == errno.EINTR:
                    continue
                raise PinFileError('%s file %s cannot be read: %s' % (what, path, os.strerror(e.errno)))
            if not b:
                break
            chunks.append(b)
            n += len(b)
        if n > max_size:
            raise PinFileError('%s file %s grew past the %d bytes accepted' % (what, path, max_size))
    finally:
        os.close(fd)
    raw = b''.join(chunks)
    line = raw.split(b'\n', 1)[0].rstrip(b'\r')
    if not line:
        raise PinFileError('%s file %s: the first line is empty' % (what, path))
    if len(line) > MAX_PIN_LEN:
        raise PinFileError('%s file %s: the first line is longer than %d bytes' % (what, path, MAX_PIN_LEN))
    if b'\0' in line:
        raise PinFileError('%s file %s: the first line holds a NUL byte' % (what, path))
    try:
        return line.decode('utf-8')
    except UnicodeDecodeError:
        raise PinFileError('%s file %s: the first line is not UTF-8 text' % (what, path))
