"""
Configuration dataclass fields with help text, shared by every config of the package.

Each config is a dataclass whose fields are made with ``option``: the default,
a help text, optionally a unit and whether the value may change while a node
runs. The same metadata declares ROS parameters (``tgrpo_ros.nodes.params``),
builds command lines and documents the field. Standard library only.
"""

from dataclasses import asdict, field, fields
import math
from typing import Any, Dict, Mapping, Sequence


def option(default: Any, text: str, *, unit: str = '', read_only: bool = True) -> Any:
    """Return a dataclass field with its help ``text``, unit and read-only flag as metadata."""
    metadata = {'help': text, 'unit': unit, 'read_only': read_only}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def field_help(cls) -> Dict[str, str]:
    """Return the help text of every field of dataclass ``cls``, with its unit."""
    out = {}
    for f in fields(cls):
        unit = f.metadata.get('unit', '')
        out[f.name] = f.metadata['help'] + (f' [{unit}]' if unit else '')
    return out


def from_mapping(cls, values: Mapping[str, Any]):
    """Build dataclass ``cls`` from a mapping (YAML, ROS parameters); unknown keys raise."""
    known = [f.name for f in fields(cls)]
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f'unknown {cls.__name__} keys {unknown}; valid keys: {known}')
    return cls(**dict(values))


def to_dict(config) -> Dict[str, Any]:
    """Return a config's fields as a plain dict."""
    return asdict(config)


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> None:
    """Raise ValueError naming ``value`` and the allowed ``choices`` when it is not one."""
    if value not in choices:
        raise ValueError(f'unknown {name} {value!r}; choose one of {list(choices)}')


def check_range(name: str, value: float, low: float = -math.inf, high: float = math.inf,
                *, low_open: bool = False, high_open: bool = False) -> None:
    """Raise ValueError quoting ``value`` unless low <= value <= high (NaN always fails)."""
    above = value > low if low_open else value >= low
    below = value < high if high_open else value <= high
    if isinstance(value, bool) or not (above and below):
        left, right = '(' if low_open else '[', ')' if high_open else ']'
        raise ValueError(f'{name} ({value!r}) must be in {left}{low}, {high}{right}')
