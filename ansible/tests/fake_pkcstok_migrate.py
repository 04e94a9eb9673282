# Fake pkcstok-migrate for developing and testing the Ansible module without the Go binary.
# Speaks the JSON contract of DESIGN.md (plan/apply/rollback/remove-backups --request -) with a
# simplified model: a slot counts as migrated when its conf block holds "tokversion = 3.12"; apply
# makes the backups, edits the conf, drops a marker file into the datastore and reports the
# backups with their device and inode numbers; remove-backups removes a backup only while its
# device and inode are still the reported ones (all or nothing).
# PINs: FAKE_SO_PIN / FAKE_USER_PIN (default sopin123 / user1234).
import difflib
import json
import os
import shutil
import sys

KNOWN = {'slot', 'datastore', 'confdir', 'so_pin', 'user_pin', 'so_pin_file', 'user_pin_file',
         'plan_file', 'all_slots'}
KNOWN_REMOVE = {'slot', 'datastore', 'confdir', 'state_dir', 'backup'}


def die(code, message, **details):
    err = {'code': code, 'message': message}
    if details:
        err['details'] = details
    print(json.dumps({'error': err}))
    sys.exit(1)


def pin(req, name):
    if req.get(name) is not None:
        return req[name]
    f = req.get(name + '_file')
    if f:
        try:
            with open(f) as fh:
                return fh.read().rstrip('\n')
        except OSError as e:
            die('io_error', 'cannot read %s: %s' % (f, e.strerror))
    return None


def slot_block(lines, slot):
    start = None
    for i, l in enumerate(lines):
        if l.split() == ['slot', str(slot)]:
            start = i
        elif start is not None and l.strip() == '}':
            return start, i
    die('slot_not_found', 'slot %d is not defined in the conf' % slot)


def main():
    if len(sys.argv) != 4 or sys.argv[2:] != ['--request', '-']:
        die('bad_request', 'usage: pkcstok-migrate plan|apply|rollback|remove-backups --request -')
    sub = sys.argv[1]
    try:
        req = json.load(sys.stdin)
    except ValueError:
        die('bad_request', 'the request is not JSON')
    if sub == 'remove-backups':
        return remove_backups(req)
    unknown = set(req) - KNOWN
    if unknown:
        die('bad_request', 'unknown request field %s' % sorted(unknown)[0])
    for a, b in (('so_pin', 'so_pin_file'), ('user_pin', 'user_pin_file')):
        if a in req and b in req:
            die('bad_request', '%s and %s are mutually exclusive' % (a, b))
    slot = req.get('slot')
    if not isinstance(slot, int):
        die('bad_request', 'slot is required')
    confdir = os.path.abspath(req.get('confdir') or '/etc/opencryptoki')
    conf = os.path.join(confdir, 'opencryptoki.conf')
    datastore = os.path.abspath(req.get('datastore') or '/var/lib/opencryptoki/swtok')
    try:
        with open(conf) as f:
            text = f.read()
    except OSError as e:
        die('conf_invalid', 'cannot read %s: %s' % (conf, e.strerror))
    lines = text.splitlines(True)
    start, end = slot_block(lines, slot)
    migrated = any(l.split('#')[0].split() == ['tokversion', '=', '3.12'] for l in lines[start:end])
    so, user = pin(req, 'so_pin'), pin(req, 'user_pin')
    if so is not None and so != os.environ.get('FAKE_SO_PIN', 'sopin123'):
        die('wrong_pin', 'the SO PIN is incorrect')
    if user is not None and user != os.environ.get('FAKE_USER_PIN', 'user1234'):
        die('wrong_pin', 'the user PIN is incorrect')
    ds_bak, conf_bak = datastore + '_BAK', conf + '_BAK'

    if sub == 'rollback':
        if not os.path.isdir(ds_bak) and not os.path.isfile(conf_bak):
            die('nothing_to_roll_back', 'no backup to roll back to')
        if os.path.isdir(ds_bak):
            shutil.rmtree(datastore)
            os.rename(ds_bak, datastore)
        if os.path.isfile(conf_bak):
            os.rename(conf_bak, conf)
        print(json.dumps({'changed': True, 'operation': 'rollback', 'slot': slot, 'token_type': 'Soft',
                          'datastore': datastore, 'conf': conf, 'backup': {},
                          'objects_migrated': 0, 'objects_total': 0, 'repository_changed': True,
                          'conf_changed': True, 'conf_diff': '', 'verified': False,
                          'fingerprint': 'sha256:0', 'warnings': [], 'steps': ['exchange']}))
        return 0

    try:
        with open(os.path.join(datastore, 'TOK_OBJ', 'OBJ.IDX')) as f:
            names = [n for n in f.read().split('\n') if n]
    except OSError as e:
        die('corrupt_repository', 'cannot read OBJ.IDX: %s' % e.strerror)
    objects = []
    for n in names:
        size = os.path.getsize(os.path.join(datastore, 'TOK_OBJ', n))
        objects.append({'file': n, 'private': True, 'format': '3.12' if migrated else 'old',
                        'class': None, 'label': '', 'id': '', 'size': size,
                        'action': 'none' if migrated else 'reencrypt'})
    new_lines = list(lines)
    if not migrated:
        new_lines.insert(end, '    tokversion = 3.12\n')
    conf_diff = ''.join(difflib.unified_diff(lines, new_lines, 'opencryptoki.conf', 'opencryptoki.conf', n=3))
    if sub == 'plan':
        print(json.dumps({
            'format_version': 1, 'tool_version': 'fake', 'changed': not migrated, 'slot': slot,
            'token_type': 'Soft', 'stdll': 'libpkcs11_sw.so', 'usergroup': 'pkcs11',
            'datastore': datastore, 'confdir': confdir, 'conf': conf,
            'format': '3.12' if migrated else 'old', 'conf_format': '3.12' if migrated else 'absent',
            'pins_checked': so is not None and user is not None, 'token': {}, 'objects': objects,
            'counts': {'total': len(objects), 'public': 0, 'private': len(objects),
                       'reencrypt': 0 if migrated else len(objects), 'rewrap_header': 0,
                       'none': len(objects) if migrated else 0},
            'key_files': [{'file': f, 'action': 'none' if migrated else 'rewrite'}
                          for f in ('NVTOK.DAT', 'MK_SO', 'MK_USER')],
            'conf_diff': conf_diff, 'fingerprint': 'sha256:0', 'warnings': [], 'incomplete': [],
            'steps': []}))
        return 0 if migrated else 2
    if sub != 'apply':
        die('bad_request', 'unknown command %s' % sub)
    if migrated:
        print(json.dumps({'changed': False, 'operation': 'apply', 'slot': slot, 'token_type': 'Soft',
                          'datastore': datastore, 'conf': conf,
                          'objects_migrated': 0, 'objects_total': len(objects), 'verified': True,
                          'conf_diff': '', 'fingerprint': 'sha256:0', 'warnings': [], 'steps': []}))
        return 0
    if so is None or user is None:
        die('bad_request', 'apply needs the SO PIN and the user PIN')
    if os.path.exists(ds_bak) or os.path.exists(conf_bak):
        die('backup_exists', 'a backup from an earlier run exists')
    shutil.copytree(datastore, ds_bak, symlinks=True)
    shutil.copy2(conf, conf_bak)
    dst, cst = os.lstat(ds_bak), os.lstat(conf_bak)
    with open(os.path.join(datastore, 'FAKE_MIGRATED'), 'w') as f:
        f.write('3.12\n')
    with open(conf, 'w') as f:
        f.write(''.join(new_lines))
    print(json.dumps({'changed': True, 'operation': 'apply', 'slot': slot, 'token_type': 'Soft',
                      'datastore': datastore, 'conf': conf,
                      'backup': {'datastore': ds_bak, 'conf': conf_bak,
                                 'datastore_dev': dst.st_dev, 'datastore_ino': dst.st_ino,
                                 'conf_dev': cst.st_dev, 'conf_ino': cst.st_ino},
                      'objects_migrated': len(objects), 'objects_total': len(objects),
                      'repository_changed': True, 'conf_changed': True, 'conf_diff': conf_diff,
                      'verified': True, 'fingerprint': 'sha256:1', 'warnings': [], 'steps': []}))
    return 0


def remove_backups(req):
    unknown = set(req) - KNOWN_REMOVE
    if unknown:
        die('bad_request', 'unknown request field %s (remove-backups takes no PIN)' % sorted(unknown)[0])
    slot = req.get('slot')
    backup = req.get('backup')
    if not isinstance(slot, int) or not isinstance(backup, dict):
        die('bad_request', 'remove-backups needs slot and the backup object of apply\'s result')
    confdir = os.path.abspath(req.get('confdir') or '/etc/opencryptoki')
    datastore = os.path.abspath(req.get('datastore') or '/var/lib/opencryptoki/swtok')
    names = {'datastore': datastore + '_BAK', 'conf': os.path.join(confdir, 'opencryptoki.conf') + '_BAK'}
    todo = []
    for key in ('datastore', 'conf'):
        path = backup.get(key)
        if not path:
            continue
        if path != names[key]:
            die('bad_request', 'backup.%s is %s, not this slot\'s backup %s' % (key, path, names[key]))
        dev, ino = backup.get(key + '_dev'), backup.get(key + '_ino')
        if not isinstance(dev, int) or not isinstance(ino, int):
            die('bad_request', 'backup.%s_dev and backup.%s_ino are required' % (key, key))
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) != (dev, ino):
            die('verify_failed', '%s is not the backup apply made (device and inode differ): refusing, '
                'nothing removed' % path, path=path)
        todo.append((path, os.path.isdir(path) and not os.path.islink(path)))
    removed = []
    for path, isdir in todo:
        if isdir:
            shutil.rmtree(path)
        else:
            os.unlink(path)
        removed.append(path)
    print(json.dumps({'changed': bool(removed), 'operation': 'remove_backups', 'slot': slot, 'removed': removed}))
    return 0


if __name__ == '__main__':
    sys.exit(main())
