# Unit tests of the unified-diff applier in plugins/modules/pkcstok_migrate.py (used to build the
# "after" text of opencryptoki.conf for diff mode), and of the conf a rollback of some slots
# leaves (without_tokversion, the check-mode diff of state=rolled_back). Usage: test_unidiff.py
# [FIXTURE_ROOT]
# FIXTURE_ROOT: a fixture directory with fixture.json, before/ and after-reference/ (optional).
import difflib
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'plugins', 'modules'))
from pkcstok_migrate import apply_unified_diff, DiffError, without_tokversion  # noqa: E402

failed = 0


def check(name, cond):
    global failed
    if not cond:
        failed += 1
        print('FAIL unidiff: %s' % name)


def roundtrip(name, a, b, n=3):
    # difflib writes no "\\ No newline" marker; add it the way diff(1) and Go do.
    fixed = []
    for line in difflib.unified_diff(a.splitlines(True), b.splitlines(True), 'opencryptoki.conf',
                                     'opencryptoki.conf', n=n):
        if not line.endswith('\n'):
            line += '\n\\ No newline at end of file\n'
        fixed.append(line)
    d = ''.join(fixed)
    try:
        got = apply_unified_diff(a, d)
    except DiffError as e:
        got = 'DiffError: %s' % e
    check('%s: %r' % (name, got), got == b)


base = ''.join('line %d\n' % i for i in range(1, 40))
roundtrip('no change', base, base)
roundtrip('one line added', base, base.replace('line 20\n', 'line 20\nnew\n'))
roundtrip('two hunks', base, base.replace('line 3\n', 'x\n').replace('line 30\n', ''))
roundtrip('insert at top', base, 'top\n' + base)
roundtrip('append at end', base, base + 'end\n')
roundtrip('no newline at end, old', base + 'last', base + 'last\n')
roundtrip('no newline at end, new', base + 'last\n', base + 'last')
roundtrip('empty before', '', 'slot 0\n{\n}\n')
roundtrip('delete everything', 'a\nb\n', '')
roundtrip('zero context', base, base.replace('line 10\n', 'ten\n'), n=0)
roundtrip('blank lines', 'a\n\n\nb\n', 'a\n\nc\n\nb\n')

try:
    apply_unified_diff(base, '--- a\n+++ a\n@@ -2,3 +2,3 @@\n line 2\n-line X\n+line Y\n line 4\n')
    check('mismatch raises', False)
except DiffError:
    pass
try:
    apply_unified_diff(base, '--- a\n+++ a\n@@ -2,3 +2,3 @@\n line 2\n')
    check('truncated hunk raises', False)
except DiffError:
    pass

# The rollback preview: only the tokversion lines of the slots named, in any layout.
conf = ('version opencryptoki-3.23\n\nslot 1\n{\n  stdll = libpkcs11_ica.so\n  tokversion = 3.12\n}\n\n'
        'slot 2 {\n stdll = libpkcs11_cca.so # cca\n tokversion=3.12 # by the tool\n}\n\n'
        'slot 3\n{\nstdll = libpkcs11_sw.so\n# tokversion = 3.12\ntokversion = 3.12\n}\n')
check('preview slot 1', without_tokversion(conf, [1]) == conf.replace('  tokversion = 3.12\n', '', 1))
check('preview slot 2 (brace on the slot line)', without_tokversion(conf, [2]) == conf.replace(' tokversion=3.12 # by the tool\n', ''))
check('preview slots 1 and 3 (a commented line stays)',
      without_tokversion(conf, [1, 3]) == conf.replace('  tokversion = 3.12\n', '', 1).replace('\ntokversion = 3.12\n}', '\n}'))
check('preview of a slot without the line', without_tokversion(conf.replace('  tokversion = 3.12\n', '', 1), [1]) is None)
check('preview of a slot not in the conf', without_tokversion(conf, [4]) is None)

if len(sys.argv) > 1:
    root = sys.argv[1]
    with open(os.path.join(root, 'fixture.json')) as f:
        fx = json.load(f)
    with open(os.path.join(root, 'before', 'conf', 'opencryptoki.conf')) as f:
        before = f.read()
    with open(os.path.join(root, 'after-reference', 'conf', 'opencryptoki.conf')) as f:
        after = f.read()
    d = fx.get('after_reference', {}).get('conf_diff')
    if d:
        try:
            got = apply_unified_diff(before, d)
        except DiffError as e:
            got = str(e)
        check('fixture upstream conf_diff reproduces after-reference conf', got == after)

print('unidiff: %s' % ('ok' if not failed else '%d failed' % failed))
sys.exit(1 if failed else 0)
