# Copyright: (c) 2025, ocktools contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests of plugins/module_utils/pinfile.py (run by tests/run.sh; needs root for the
member-owned case). Each refusal must name the file and the rule and never the file's content.

    python3 ansible/tests/test_pinfile.py
"""
import os
import signal
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), 'plugins', 'module_utils'))
import pinfile  # noqa: E402

SECRET = 'S3cr3tPIN'
MEMBER_UID = 4242  # any uid but root's and the caller's


class Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise Timeout('read_pin_file blocked')


class ReadPinFileTest(unittest.TestCase):
    def setUp(self):
        self.d = tempfile.mkdtemp(prefix='pinfile-test.')
        signal.signal(signal.SIGALRM, _alarm)
        signal.alarm(10)

    def tearDown(self):
        signal.alarm(0)
        for n in os.listdir(self.d):
            os.unlink(os.path.join(self.d, n))
        os.rmdir(self.d)

    def write(self, name, data, mode=0o600):
        p = os.path.join(self.d, name)
        with open(p, 'wb') as f:
            f.write(data)
        os.chmod(p, mode)
        return p

    def refused(self, path, rule):
        with self.assertRaises(pinfile.PinFileError) as cm:
            pinfile.read_pin_file(path, what='user PIN')
        msg = str(cm.exception)
        self.assertIn(path, msg)
        self.assertIn(rule, msg)
        self.assertNotIn(SECRET, msg)
        return msg

    def test_good(self):
        p = self.write('good', (SECRET + '\nsecond line\n').encode())
        self.assertEqual(pinfile.read_pin_file(p), SECRET)

    def test_good_crlf_and_no_newline(self):
        self.assertEqual(pinfile.read_pin_file(self.write('crlf', (SECRET + '\r\n').encode())), SECRET)
        self.assertEqual(pinfile.read_pin_file(self.write('bare', SECRET.encode())), SECRET)

    def test_good_owned_by_caller(self):
        p = self.write('caller', (SECRET + '\n').encode())
        os.chown(p, MEMBER_UID, -1)
        self.assertEqual(pinfile.read_pin_file(p, euid=MEMBER_UID), SECRET)

    def test_symlink(self):
        target = self.write('target', (SECRET + '\n').encode())
        link = os.path.join(self.d, 'link')
        os.symlink(target, link)
        self.refused(link, 'is a symlink')

    def test_fifo_refused_at_once(self):
        p = os.path.join(self.d, 'fifo')
        os.mkfifo(p, 0o600)
        t = time.time()
        self.refused(p, 'is a FIFO, not a regular file')
        self.assertLess(time.time() - t, 5)

    def test_directory(self):
        p = os.path.join(self.d, 'dir')
        os.mkdir(p, 0o700)
        try:
            self.refused(p, 'not a regular file')
        finally:
            os.rmdir(p)

    def test_member_owned(self):
        p = self.write('member', (SECRET + '\n').encode())
        os.chown(p, MEMBER_UID, -1)
        if os.geteuid() == MEMBER_UID:
            self.skipTest('running as the member uid')
        self.refused(p, 'is owned by uid %d, neither root nor the caller' % MEMBER_UID)

    def test_mode_group_readable(self):
        self.refused(self.write('m0640', (SECRET + '\n').encode(), 0o640), 'has mode 0640')

    def test_mode_other_readable(self):
        self.refused(self.write('m0604', (SECRET + '\n').encode(), 0o604), 'has mode 0604')

    def test_mode_0644(self):
        self.refused(self.write('m0644', (SECRET + '\n').encode(), 0o644), 'must not be accessible by group or others')

    def test_oversize(self):
        self.refused(self.write('big', (SECRET + '\n').encode() + b'x' * pinfile.MAX_SIZE), 'more than the 4096 accepted')

    def test_empty_first_line(self):
        self.refused(self.write('empty', b'\n' + SECRET.encode()), 'the first line is empty')

    def test_missing(self):
        self.refused(os.path.join(self.d, 'nothing'), 'cannot be opened')

    def test_not_utf8(self):
        self.refused(self.write('latin1', b'\xe9t\xe9\n'), 'not UTF-8')


if __name__ == '__main__':
    unittest.main(verbosity=2)
