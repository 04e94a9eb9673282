#!/usr/bin/python3
"""Run `ansible-galaxy collection build` so that it gives the same bytes every time.

ansible-core 2.14 stamps MANIFEST.json, FILES.json and the gzip header with the current
time and lists directories in the file system's order. This runs the real ansible-galaxy
in-process with time.time() pinned to SOURCE_DATE_EPOCH and os.listdir() sorted; the files'
own mtimes are set by the caller (packaging/dist.sh). Usage is ansible-galaxy's:

    SOURCE_DATE_EPOCH=N galaxy_build.py collection build --output-path DIR COLLECTION_DIR
"""
import os
import sys
import time

epoch = os.environ.get('SOURCE_DATE_EPOCH')
if not epoch or not epoch.isdigit():
    sys.exit('galaxy_build.py: SOURCE_DATE_EPOCH must be set to a number of seconds')
fixed = float(epoch)
time.time = lambda: fixed

_listdir = os.listdir


def sorted_listdir(path='.'):
    return sorted(_listdir(path))


os.listdir = sorted_listdir

from ansible.cli.galaxy import main  # noqa: E402  (after the patches on purpose)

sys.argv[0] = 'ansible-galaxy'
sys.exit(main())
