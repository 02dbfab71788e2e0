"""ROS names and file names: the string rules every layer shares (standard library only)."""

import re


def normalize_namespace(namespace):
    """Return ``namespace`` as '/a/b' (leading slash, no trailing slash); '' stays ''."""
    parts = [part for part in str(namespace or '').split('/') if part]
    return '/' + '/'.join(parts) if parts else ''


def safe_file_stem(name, fallback='item'):
    """Return ``name`` made safe as a file name stem ('/sim0/3' -> 'sim0_3')."""
    return re.sub(r'[^A-Za-z0-9_.-]+', '_', str(name).strip('/')) or fallback
