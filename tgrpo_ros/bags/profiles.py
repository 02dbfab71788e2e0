"""
Recording profiles: which topics ``tgrpo_record`` records, with which type and QoS.

A profile is a YAML file (``config/record_training.yaml``, ``config/record_deploy.yaml``
or any file of the same form, docs/bags.md); ``'{client}'`` in a topic name expands
over the profile's clients. No rclpy here: the recorder (``nodes/record.py``) turns
these specs into subscriptions.
"""

from dataclasses import dataclass
import os
from typing import List

from tgrpo_ros.bags import storage

PROFILES = ('training', 'deploy')
QOS_CHOICES = ('auto', 'reliable', 'best_effort')
DURABILITY_CHOICES = ('auto', 'volatile', 'transient_local')


@dataclass
class TopicSpec:
    """One topic to record: name, type ('' = from the graph) and subscription QoS."""

    name: str
    msgtype: str = ''
    reliability: str = 'auto'
    durability: str = 'auto'
    depth: int = storage.DEFAULT_DEPTH

    def __post_init__(self):
        """Reject impossible values, quoting them."""
        if not self.name.startswith('/'):
            raise ValueError(f"topic '{self.name}' must be an absolute name (start with '/')")
        if self.msgtype and self.msgtype.count('/') != 2:
            raise ValueError(f"topic '{self.name}': type '{self.msgtype}' must read "
                             "'package/msg/Name', e.g. 'sensor_msgs/msg/Image'")
        if self.reliability not in QOS_CHOICES:
            raise ValueError(f"topic '{self.name}': reliability '{self.reliability}' is not "
                             f'one of {list(QOS_CHOICES)}')
        if self.durability not in DURABILITY_CHOICES:
            raise ValueError(f"topic '{self.name}': durability '{self.durability}' is not "
                             f'one of {list(DURABILITY_CHOICES)}')
        if self.depth < 1:
            raise ValueError(f"topic '{self.name}': depth ({self.depth}) must be >= 1")


@dataclass
class Profile:
    """What to record and how to split it."""

    topics: List[TopicSpec]
    storage: str = 'mcap'
    max_bag_size_mb: float = 0.0     # MB per split, 0: no limit
    max_bag_duration_s: float = 0.0  # s per split, 0: no limit


def config_dirs():
    """Return the config/ directories to look in: the source tree, then installed share/."""
    dirs = [os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))), 'config')]
    try:
        from ament_index_python.packages import get_package_share_directory
        dirs.append(os.path.join(get_package_share_directory('tgrpo_ros'), 'config'))
    except Exception:  # noqa: B902 - not installed through ament: the source tree only
        pass
    return dirs


def profile_path(name):
    """Return the file of profile ``name`` ('training', 'deploy' or a path to a YAML file)."""
    if name in PROFILES:
        candidates = [os.path.join(d, f'record_{name}.yaml') for d in config_dirs()]
        for path in candidates:
            if os.path.isfile(path):
                return path
        raise ValueError(f"profile '{name}' is not installed: none of {candidates} exists")
    if os.path.isfile(name):
        return name
    raise ValueError(f"unknown profile '{name}'; choose one of {list(PROFILES)} or give the "
                     'path of a profile YAML file')


def load_profile(name, clients=None):
    """
    Read profile ``name``; topic names with ``{client}`` expand over its clients.

    ``clients`` (a list of namespaces) replaces the profile's own list.
    """
    import yaml

    path = profile_path(name)
    with open(path) as stream:
        data = yaml.safe_load(stream) or {}
    unknown = set(data) - {'description', 'clients', 'storage', 'max_bag_size_mb',
                           'max_bag_duration_s', 'topics'}
    if unknown:
        raise ValueError(f'profile {path}: unknown keys {sorted(unknown)}; allowed: '
                         'description, clients, storage, max_bag_size_mb, '
                         'max_bag_duration_s, topics')
    clients = [('/' + c.strip('/')) for c in (clients or data.get('clients') or [])]
    specs = []
    for entry in data.get('topics') or []:
        entry = dict(entry)
        qos = entry.pop('qos', {}) or {}
        name_template = entry.pop('name')
        msgtype = entry.pop('type', '')
        if entry:
            raise ValueError(f"profile {path}: topic '{name_template}' has unknown keys "
                             f'{sorted(entry)}; allowed: name, type, qos')
        names = ([name_template.format(client=c) for c in clients]
                 if '{client}' in name_template else [name_template])
        for topic in names:
            specs.append(TopicSpec(topic, msgtype, qos.get('reliability', 'auto'),
                                   qos.get('durability', 'auto'),
                                   int(qos.get('depth', storage.DEFAULT_DEPTH))))
    if not specs:
        raise ValueError(f'profile {path} lists no topics')
    return Profile(specs, data.get('storage', 'mcap'), float(data.get('max_bag_size_mb', 0)),
                   float(data.get('max_bag_duration_s', 0)))


def parse_topic(text, reliability='auto', durability='auto', depth=storage.DEFAULT_DEPTH):
    """Return the TopicSpec of '--topic NAME[:TYPE]'."""
    name, _, msgtype = text.partition(':')
    return TopicSpec(name, msgtype, reliability, durability, depth)
