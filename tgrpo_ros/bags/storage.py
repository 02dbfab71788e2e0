"""
rosbag2 files without a ROS install: a reader that survives damage, a writer that rotates.

Both use the pure-Python ``rosbags`` package (no rclpy import here).

Reading (``Bag``): a bag is a directory holding ``metadata.yaml`` and one or more
storage files (``ros2 bag record`` and ``tgrpo_record`` split a long recording into
``<name>_0.mcap``, ``<name>_1.mcap`` ...). Each file is opened on its own, so one
damaged file does not hide the others, and every problem (a missing or truncated
file, a message that does not decode, a topic of the wrong type) goes to
``Bag.problems`` as a sentence naming the file, topic and message; reading goes
on. An MCAP file cut short (recorder killed, disk full) has no summary or footer;
its complete records are recovered by scanning it from the start, and the point
where it ends is reported. A directory without ``metadata.yaml`` (a recorder killed
before its first split closed) is read from the storage files it holds.

Writing (``SplitWriter``): MCAP or SQLite3 through ``rosbags.rosbag2.Writer``, one
storage file per split, a new split when the current one passes a size or a
duration; ``metadata.yaml`` is rewritten after every split, as ros2 bag does, so
closed splits read even if the process dies later.
"""

from dataclasses import dataclass, field
import io
import os
from pathlib import Path
import shutil
import struct
from typing import Dict, List, Optional

STORAGES = ('mcap', 'sqlite3')
_SUFFIX = {'mcap': '.mcap', 'sqlite3': '.db3'}
MCAP_MAGIC = b'\x89MCAP0\r\n'
DEFAULT_DEPTH = 10  # messages: history depth when a recorded profile has none (rosbag2's)


def typestore():
    """Return the rosbags type store of ROS 2 Jazzy (all standard message types)."""
    from rosbags.typesys import get_typestore, Stores
    return get_typestore(Stores.ROS2_JAZZY)


@dataclass
class TopicInfo:
    """One topic of a bag: its type, message count and the QoS its publishers offered."""

    name: str
    msgtype: str
    count: int = 0
    qos: list = field(default_factory=list)  # rosbags Qos, as recorded
    msgdef: Optional[object] = None          # rosbags MessageDefinition, when stored
    serialization: str = 'cdr'               # serialization format of the messages


@dataclass
class _Connection:
    """A connection found by the salvage scan of a damaged MCAP file."""

    channel_id: int
    topic: str
    msgtype: str
    msgdef: object
    qos: list


class BagError(ValueError):
    """The path is not a bag that can be read at all (each message names the reason)."""


class Bag:
    """
    Read a rosbag2 directory file by file; problems are collected, not raised.

    ``Bag(path).messages(['/a', '/b'])`` yields (topic, msgtype, receive time ns,
    CDR bytes) file after file (splits are consecutive in time); ``problems`` then
    lists what could not be read.
    """

    def __init__(self, path):
        """Find the storage files of the bag at ``path``; BagError if there are none."""
        self.path = Path(os.fspath(path))
        self.problems: List[str] = []
        self.file_info: Dict[str, dict] = {}  # per storage file: start, end, messages
        self._topics = None
        if not self.path.is_dir():
            if self.path.suffix in ('.mcap', '.db3') and self.path.is_file():
                self.files = [self.path]  # a single storage file
                self.metadata = None
                return
            if self.path.is_file():
                raise BagError(f'{self.path} is a file but not a storage file (.mcap or .db3) '
                               'nor a rosbag2 directory')
            raise BagError(f'{self.path} is not a rosbag2 directory (no such directory)')
        self.metadata = self._read_metadata()
        self.files = self._storage_files()

    def _read_metadata(self):
        meta = self.path / 'metadata.yaml'
        if not meta.is_file():
            self.problems.append(f'{meta} is missing (was the recorder killed?); reading '
                                 'the storage files in the directory')
            return None
        from ruamel.yaml import YAML
        try:
            data = YAML(typ='safe').load(meta.read_text())
        except Exception as error:  # noqa: B902 - any YAML, encoding or OS error
            first = str(error).strip().splitlines()
            self.problems.append(f'{meta} does not parse as YAML ({type(error).__name__}: '
                                 f'{" ".join(first[:2])}); reading the storage files in '
                                 'the directory')
            return None
        info = data.get('rosbag2_bagfile_information') if isinstance(data, dict) else None
        if not isinstance(info, dict):
            self.problems.append(f'{meta} parses but holds no rosbag2_bagfile_information '
                                 'mapping (not rosbag2 metadata); reading the storage files '
                                 'in the directory')
            return None
        return info

    def _storage_files(self):
        # Storage files, and the split a SplitWriter is writing (<name>_<i>/<name>_<i>.mcap).
        found = sorted(p for p in self.path.glob('*') if p.suffix in ('.mcap', '.db3')) + \
            sorted(p for p in self.path.glob('*/*') if p.suffix in ('.mcap', '.db3')
                   and p.parent.name == p.stem)
        if self.metadata is not None:
            listed = [self.path / Path(name).name
                      for name in self.metadata.get('relative_file_paths', [])]
            missing = [p.name for p in listed if not p.is_file()]
            if missing:
                self.problems.append(f'bag {self.path}: storage file(s) {missing} listed in '
                                     'metadata.yaml are missing')
            extra = [p for p in found if p not in listed]
            files = [p for p in listed if p.is_file()] + extra
            if extra:
                self.problems.append(f'bag {self.path}: storage file(s) '
                                     f'{[str(p.relative_to(self.path)) for p in extra]} are '
                                     'not in metadata.yaml (a split still being written?); '
                                     'read as well')
        else:
            files = found
        if not files:
            raise BagError(f'{self.path} is not a rosbag2 directory: no metadata.yaml and no '
                           '.mcap or .db3 storage file in it')
        return files

    # ------------------------------------------------------------------ topics
    @property
    def topics(self) -> Dict[str, TopicInfo]:
        """Return {topic: TopicInfo} over all readable files (metadata counts if present)."""
        if self._topics is None:
            topics = {}
            readable = 0
            for _, connections, _ in self._open_files(scan_messages=False):
                readable += 1
                for conn in connections:
                    info = topics.setdefault(conn.topic, TopicInfo(
                        conn.topic, conn.msgtype, qos=list(_qos_of(conn)),
                        msgdef=getattr(conn, 'msgdef', None),
                        serialization=_serialization_of(conn)))
                    info.count += int(getattr(conn, 'msgcount', 0) or 0)
            if not readable:
                # Nothing at all could be read: the cause is the damage, say so.
                raise BagError(f'nothing in bag {self.path} can be read: '
                               + '; '.join(self.problems))
            self._topics = topics
        return self._topics

    def summary(self):
        """
        Return what ``ros2 bag info`` prints, as a dict.

        files (names), size (B, all storage files), storage_id, ros_distro (or ''),
        start and end (receive time ns of the first and last readable message, None
        without one), duration (ns), messages (count) and topics (``self.topics``).
        Counts and times are those of the messages that read, so a damaged file counts
        what was recovered from it.
        """
        topics = self.topics
        starts = [f['start'] for f in self.file_info.values() if f.get('count')]
        ends = [f['end'] for f in self.file_info.values() if f.get('count')]
        start = min(starts) if starts else None
        end = max(ends) if ends else None
        meta = self.metadata or {}
        storage_id = meta.get('storage_identifier') or (
            'mcap' if self.files[0].suffix == '.mcap' else 'sqlite3')
        return {'files': [str(p.relative_to(self.path)) if self.path.is_dir() else p.name
                          for p in self.files],
                'size': sum(p.stat().st_size for p in self.files if p.is_file()),
                'storage_id': storage_id, 'ros_distro': str(meta.get('ros_distro') or ''),
                'start': start, 'end': end,
                'duration': (end - start) if start is not None else 0,
                'messages': sum(t.count for t in topics.values()), 'topics': topics}

    def require(self, topic, msgtypes):
        """
        Return the TopicInfo of ``topic`` if it is in the bag with one of ``msgtypes``.

        Otherwise add a problem naming the topic, what it is and what was expected
        (and the bag's topics) and return None.
        """
        msgtypes = (msgtypes,) if isinstance(msgtypes, str) else tuple(msgtypes)
        info = self.topics.get(topic)
        if info is None:
            self.problems.append(f"topic '{topic}' is not in bag {self.path}; its topics: "
                                 f'{sorted(self.topics)}')
            return None
        if info.msgtype not in msgtypes:
            self.problems.append(f"topic '{topic}' in bag {self.path} has type {info.msgtype}; "
                                 f'expected {" or ".join(msgtypes)}: skipped')
            return None
        return info

    # ------------------------------------------------------------------ messages
    def messages(self, topics=None, start=None):
        """
        Yield (topic, msgtype, receive time ns, CDR bytes) of ``topics`` (None: all).

        ``start``: skip messages received before this time (ns).
        """
        wanted = None if topics is None else set(topics)
        for name, connections, reader in self._open_files(scan_messages=True):
            chosen = [c for c in connections if wanted is None or c.topic in wanted]
            if not chosen:
                continue
            try:
                for conn, timestamp, data in reader(chosen):
                    if start is None or timestamp >= start:
                        yield conn.topic, conn.msgtype, timestamp, data
            except Exception as error:  # noqa: B902 - a damaged file: report, read the next
                self.problems.append(f'{name}: reading stopped by a damaged record '
                                     f'({type(error).__name__}: {error}); the messages '
                                     'before it were read')

    def decode(self, topic, msgtype, timestamp, data, index=None):
        """Return the rosbags message of ``data``, or None after adding a problem."""
        try:
            return self._store().deserialize_cdr(data, msgtype)
        except Exception as error:  # noqa: B902 - any decoding failure is a bad message
            where = f'message {index} ' if index is not None else 'a message '
            self.problems.append(f'{where}on {topic} (received at {timestamp} ns) does not '
                                 f'decode as {msgtype}: {type(error).__name__}: {error}')
            return None

    def _store(self):
        if getattr(self, '_typestore', None) is None:
            self._typestore = typestore()
            for info in self.topics.values():
                self._register(info)
        return self._typestore

    def _register(self, info):
        store = self._typestore
        if info.msgtype in store.fielddefs or info.msgdef is None:
            return
        try:
            from rosbags.typesys import get_types_from_msg
            text = getattr(info.msgdef, 'data', '')
            store.register(get_types_from_msg(text, info.msgtype))
        except Exception as error:  # noqa: B902 - an unknown definition: messages won't decode
            self.problems.append(f"topic '{info.name}': type {info.msgtype} is not a standard "
                                 f'ROS 2 type and its stored definition does not parse '
                                 f'({error})')

    def _open_files(self, scan_messages):
        """Yield (file name, connections, reader(connections)) per readable file."""
        sqlite_done = False
        for path in self.files:
            name = str(path)
            try:
                if path.suffix == '.db3':
                    if not sqlite_done:  # rosbags reads all SQLite3 files of a bag at once
                        sqlite_done = True
                        yield from self._open_sqlite(path)
                    continue
                yield from self._open_mcap(path)
            except _Damaged as damaged:
                problem = f'{name}: {damaged}'
                if problem not in self.problems:
                    self.problems.append(problem)
                if damaged.connections:
                    yield name, damaged.connections, damaged.reader

    def _open_mcap(self, path):
        from rosbags.rosbag2.storage_mcap import McapReader
        reader = McapReader(path)
        try:
            reader.open()
        except Exception as error:  # noqa: B902 - no valid footer: salvage what is there
            salvage = _salvage_mcap(path)
            times = [timestamp for _, timestamp, _ in salvage._messages]
            self.file_info[str(path)] = {'start': min(times) if times else 0,
                                         'end': max(times) if times else 0,
                                         'count': len(times)}
            raise _Damaged(
                f'not a complete MCAP file ({error}); {salvage.summary}',
                salvage.connections, salvage.reader) from None
        stats = reader.statistics
        if stats is not None:
            self.file_info[str(path)] = {'start': int(stats.start_time),
                                         'end': int(stats.end_time),
                                         'count': int(stats.message_count)}
        try:
            yield str(path), list(reader.connections), reader.messages
        finally:
            reader.close()

    def _open_sqlite(self, path):
        from rosbags.rosbag2 import Reader
        directory = self.path if self.metadata is not None else path
        try:
            reader = Reader(directory)
            reader.open()
        except Exception as error:  # noqa: B902 - any reader error names the damage
            raise _Damaged(f'does not open as a SQLite3 bag ({error})', [], None) from None
        count = int(reader.message_count)
        self.file_info[str(path)] = {'start': int(reader.start_time) if count else 0,
                                     'end': int(reader.end_time) if count else 0,
                                     'count': count}
        try:
            yield str(path), list(reader.connections), (
                lambda connections: reader.messages(connections=connections))
        finally:
            reader.close()


def _serialization_of(conn):
    ext = getattr(conn, 'ext', None)
    return getattr(ext, 'serialization_format', None) or 'cdr'


def _qos_of(conn):
    ext = getattr(conn, 'ext', None)
    if ext is not None:
        return getattr(ext, 'offered_qos_profiles', []) or []
    return getattr(conn, 'qos', []) or []


class _Damaged(Exception):
    """A storage file that is damaged, with what could be salvaged from it."""

    def __init__(self, text, connections, reader):
        super().__init__(text)
        self.connections = connections
        self.reader = reader


# ---------------------------------------------------------------------- MCAP salvage

class _Salvage:
    """The connections and messages recovered from a damaged MCAP file."""

    def __init__(self, connections, messages, summary):
        self.connections = connections
        self._messages = messages
        self.summary = summary

    def reader(self, connections):
        by_id = {c.channel_id: c for c in connections}
        for channel, timestamp, data in self._messages:
            if channel in by_id:
                yield by_id[channel], timestamp, data


def _salvage_mcap(path):
    """
    Scan an MCAP file from its start and keep every complete record (no index needed).

    Returns the connections and messages found, and a sentence saying where and why
    the scan stopped. Chunks may be uncompressed or zstd/lz4-compressed.
    """
    from rosbags.interfaces import MessageDefinition, MessageDefinitionFormat
    data = Path(path).read_bytes()
    schemas, channels, messages = {}, {}, []
    if data[:8] != MCAP_MAGIC:
        return _Salvage([], [], f'it does not start with the MCAP magic ({len(data)} B): '
                                'nothing read')
    stop = 'it ends cleanly'
    offset = 8
    try:
        offset = _scan_records(data, offset, len(data), schemas, channels, messages)
        stop = f'its records end at byte {offset} of {len(data)}'
    except _Truncated as error:
        stop = f'truncated at byte {error.offset} of {len(data)} ({error})'
    connections = []
    for channel_id, (schema_id, topic, encoding, metadata) in channels.items():
        name, fmt, text = schemas.get(schema_id, ('', 'ros2msg', ''))
        msgdef = MessageDefinition(MessageDefinitionFormat.IDL if fmt == 'ros2idl'
                                   else MessageDefinitionFormat.MSG, text)
        connections.append(_Connection(channel_id, topic, name, msgdef, _metadata_qos(metadata)))
    counts = {}
    for channel, _, _ in messages:
        counts[channel] = counts.get(channel, 0) + 1
    for conn in connections:
        conn.msgcount = counts.get(conn.channel_id, 0)
    summary = f'{stop}; recovered {len(messages)} message(s) on {len(connections)} topic(s)'
    return _Salvage(connections, sorted(messages, key=lambda m: m[1]), summary)


class _Truncated(Exception):
    """The scan of a damaged MCAP file stopped at ``offset`` (B)."""

    def __init__(self, text, offset):
        super().__init__(text)
        self.offset = offset


def _scan_records(data, offset, end, schemas, channels, messages, in_chunk=False):
    while offset < end:
        if end - offset < 9:
            if data[offset:end] == MCAP_MAGIC[:end - offset] and not in_chunk:
                return end
            raise _Truncated('a record header is cut short', offset)
        op = data[offset]
        (length,) = struct.unpack_from('<Q', data, offset + 1)
        body_start = offset + 9
        if body_start + length > end:
            raise _Truncated(f'record 0x{op:02x} of {length} B runs past the end', offset)
        body = memoryview(data)[body_start:body_start + length]
        if op == 0x02 and not in_chunk:  # footer: the file is complete after all
            return body_start + length
        if op == 0x03:
            reader = _Fields(body)
            schema_id = reader.u16()
            schemas[schema_id] = (reader.string(), reader.string(), reader.string())
        elif op == 0x04:
            reader = _Fields(body)
            channel_id, schema_id = reader.u16(), reader.u16()
            topic, encoding = reader.string(), reader.string()
            channels[channel_id] = (schema_id, topic, encoding, reader.mapping())
        elif op == 0x05:
            channel, _, log_time, _ = struct.unpack_from('<HIQQ', body, 0)
            messages.append((channel, log_time, bytes(body[22:])))
        elif op == 0x06 and not in_chunk:
            reader = _Fields(body)
            reader.skip(8 + 8)
            uncompressed_size, crc = reader.u64(), reader.u32()
            compression = reader.string()
            records = reader.raw(reader.u64())
            try:
                chunk = _decompress(bytes(records), compression, uncompressed_size, crc)
            except _Truncated as error:
                raise _Truncated(str(error), offset) from None
            _scan_records(chunk, 0, len(chunk), schemas, channels, messages, in_chunk=True)
        offset = body_start + length
    return offset


def _decompress(data, compression, size, crc):
    from rosbags.rosbag2.storage_mcap import decompress  # checks the size and the CRC
    try:
        return decompress(data, compression, size, crc)
    except Exception as error:  # noqa: B902 - ReaderError names the damage
        raise _Truncated(f'a chunk is damaged: {error}', 0) from None


class _Fields:
    """Little-endian MCAP record fields read one after the other."""

    def __init__(self, view):
        self.view, self.pos = view, 0

    def skip(self, size):
        self.pos += size

    def _unpack(self, fmt, size):
        (value,) = struct.unpack_from(fmt, self.view, self.pos)
        self.pos += size
        return value

    def u16(self):
        return self._unpack('<H', 2)

    def u32(self):
        return self._unpack('<I', 4)

    def u64(self):
        return self._unpack('<Q', 8)

    def raw(self, size):
        out = self.view[self.pos:self.pos + size]
        self.pos += size
        return out

    def string(self):
        return bytes(self.raw(self.u32())).decode('utf-8', errors='replace')

    def mapping(self):
        size, out = self.u32(), {}
        end = self.pos + size
        while self.pos < end:
            key = self.string()
            out[key] = self.string()
        return out


def _metadata_qos(metadata):
    text = metadata.get('offered_qos_profiles', '')
    if not text:
        return []
    try:
        from rosbags.rosbag2.metadata import parse_qos
        from ruamel.yaml import YAML
        return parse_qos(YAML(typ='safe').load(text) or [])
    except Exception:  # noqa: B902 - QoS is informative only
        return []


# ---------------------------------------------------------------------- writing

def rosbags_qos(reliability='reliable', durability='volatile', depth=DEFAULT_DEPTH,
                history='keep_last'):
    """Return a rosbags Qos from names ('reliable'/'best_effort', 'volatile'/...)."""
    from rosbags.interfaces import (Qos, QosDurability, QosHistory, QosLiveliness,
                                    QosReliability, QosTime)
    infinite = QosTime(sec=2147483647, nsec=4294967295)
    return Qos(history=QosHistory[history.upper()], depth=int(depth),
               reliability=QosReliability[reliability.upper()],
               durability=QosDurability[durability.upper()],
               deadline=infinite, lifespan=infinite, liveliness=QosLiveliness.AUTOMATIC,
               liveliness_lease_duration=infinite, avoid_ros_namespace_conventions=False)


def qos_names(qos):
    """Return (reliability, durability, depth) names of a rosbags Qos."""
    return (qos.reliability.name.lower(), qos.durability.name.lower(), int(qos.depth))


class SplitWriter:
    """
    Write a rosbag2 directory as a sequence of splits (``<name>_<i>.mcap``).

    ``add_topic`` before or between writes; ``write`` may start a new split when the
    current one has passed ``max_bytes`` (B, 0: no limit) or ``max_duration_ns``
    (0: no limit); ``close`` finishes the last split. ``metadata.yaml`` covers every
    closed split at all times.
    """

    def __init__(self, path, storage='mcap', max_bytes=0, max_duration_ns=0):
        """Create the bag directory ``path``, which must not exist."""
        if storage not in STORAGES:
            raise ValueError(f"unknown storage '{storage}'; choose one of {list(STORAGES)}")
        if max_bytes < 0 or max_duration_ns < 0:
            raise ValueError(f'split limits must be >= 0, got {max_bytes} B and '
                             f'{max_duration_ns} ns')
        self.path = Path(os.fspath(path))
        if self.path.exists():
            raise FileExistsError(f'{self.path} exists already; give a new bag directory')
        self.path.mkdir(parents=True)
        self.storage = storage
        self.max_bytes = int(max_bytes)
        self.max_duration_ns = int(max_duration_ns)
        self.store = typestore()
        self.topics = {}  # name -> (msgtype, [rosbags Qos])
        self.counts = {}  # name -> messages in all splits
        self.splits = []  # closed splits: metadata dicts of rosbags' writer
        self.writer = None
        self.connections = {}
        self.split_bytes = 0
        self.split_start = None
        self.closed = False

    @property
    def split_index(self):
        """Return the index of the split being written (or to be written next)."""
        return len(self.splits)

    def add_topic(self, topic, msgtype, qos_profiles=()):
        """Register ``topic``; ValueError if rosbags does not know ``msgtype``."""
        if msgtype not in self.store.fielddefs:
            raise ValueError(f"topic '{topic}': type {msgtype} is not a ROS 2 Jazzy type that "
                             'rosbags knows; only standard message types can be recorded')
        self.topics[topic] = (msgtype, list(qos_profiles))
        self.counts.setdefault(topic, 0)
        if self.writer is not None:
            self._connect(topic)

    def _connect(self, topic):
        msgtype, qos = self.topics[topic]
        self.connections[topic] = self.writer.add_connection(
            topic, msgtype, typestore=self.store, offered_qos_profiles=qos)

    def _open_split(self):
        from rosbags.rosbag2 import StoragePlugin, Writer
        plugin = StoragePlugin.MCAP if self.storage == 'mcap' else StoragePlugin.SQLITE3
        name = f'{self.path.name}_{self.split_index}'
        self.writer = Writer(self.path / name, version=9, storage_plugin=plugin)
        self.writer.open()
        self.connections = {}
        for topic in self.topics:
            self._connect(topic)
        self.split_bytes = 0
        self.split_start = None

    def write(self, topic, timestamp, data):
        """Write CDR ``data`` received at ``timestamp`` (ns) on a registered ``topic``."""
        if self.closed:
            raise ValueError(f'bag {self.path} is closed')
        if self.writer is not None and self.split_start is not None and (
                (self.max_bytes and self.split_bytes >= self.max_bytes)
                or (self.max_duration_ns
                    and timestamp - self.split_start >= self.max_duration_ns)):
            self._close_split()
        if self.writer is None:
            self._open_split()
        if self.split_start is None:
            self.split_start = int(timestamp)
        self.writer.write(self.connections[topic], int(timestamp), data)
        self.split_bytes += len(data) + 31  # MCAP message record overhead, B
        self.counts[topic] += 1

    def _close_split(self):
        writer, self.writer = self.writer, None
        writer.close()
        directory = writer.path
        from ruamel.yaml import YAML
        meta = YAML(typ='safe').load((directory / 'metadata.yaml').read_text())
        info = meta['rosbag2_bagfile_information']
        for name in info['relative_file_paths']:
            shutil.move(str(directory / name), str(self.path / name))
        shutil.rmtree(directory)
        self.splits.append(info)
        self._write_metadata()

    def _write_metadata(self):
        from ruamel.yaml import YAML
        if not self.splits:
            return
        first = self.splits[0]
        counts, topics = {}, {}
        for split in self.splits:
            for entry in split['topics_with_message_count']:
                name = entry['topic_metadata']['name']
                topics.setdefault(name, entry['topic_metadata'])
                counts[name] = counts.get(name, 0) + entry['message_count']
        starts = [s['starting_time']['nanoseconds_since_epoch'] for s in self.splits
                  if s['message_count']]
        ends = [s['starting_time']['nanoseconds_since_epoch'] + s['duration']['nanoseconds']
                for s in self.splits if s['message_count']]
        start = min(starts) if starts else 0
        info = dict(first)
        info.update({
            'relative_file_paths': [p for s in self.splits for p in s['relative_file_paths']],
            'files': [f for s in self.splits for f in s['files']],
            'message_count': sum(s['message_count'] for s in self.splits),
            'starting_time': {'nanoseconds_since_epoch': start},
            'duration': {'nanoseconds': (max(ends) - start) if ends else 0},
            'topics_with_message_count': [
                {'topic_metadata': meta, 'message_count': counts[name]}
                for name, meta in topics.items()],
        })
        yaml = YAML(typ='safe')
        yaml.default_flow_style = False
        stream = io.StringIO()
        yaml.dump({'rosbag2_bagfile_information': info}, stream)
        tmp = self.path / 'metadata.yaml.tmp'
        tmp.write_text(stream.getvalue())
        tmp.replace(self.path / 'metadata.yaml')

    def flush(self):
        """
        Put everything written so far on disk as complete MCAP chunks.

        rosbags keeps up to 1 MiB of messages in memory before it writes a chunk; after a
        flush a recorder killed without warning loses only what came after it (``Bag``
        recovers the complete chunks of a file without a footer).
        """
        storage = getattr(self.writer, 'storage', None)
        if storage is None or self.storage != 'mcap':
            return
        if storage.chunk.bio.tell():
            storage.close_chunk()
        storage.bio.flush()

    def close(self):
        """Finish the split being written and the metadata (idempotent)."""
        if self.closed:
            return
        if self.writer is None and not self.splits:
            self._open_split()  # an empty bag still has its topics
        if self.writer is not None:
            self._close_split()
        self.closed = True

    def __enter__(self):
        """Return self: use as a context manager."""
        return self

    def __exit__(self, *exc):
        """Close the bag."""
        self.close()
