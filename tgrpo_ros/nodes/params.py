"""
Declare a config dataclass as ROS parameters and read it back: one way for every node.

Each field of the dataclass becomes a parameter of the same name and type, with a
descriptor carrying the field's help text (and unit) and its read-only flag
(``tgrpo_ros.options.option``). The values are read once and given to the
dataclass, whose ``__post_init__`` rejects impossible ones: a node's constructor
then fails with that message (``node_main.run_node`` logs it as FATAL).
"""

from dataclasses import fields, MISSING

from rcl_interfaces.msg import ParameterDescriptor


def _default(f):
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    raise ValueError(f'config field {f.name} has no default')


def declare_config(node, cls):
    """Declare every field of dataclass ``cls`` on ``node``; return ``cls`` built from them."""
    values = {}
    for f in fields(cls):
        unit = f.metadata.get('unit', '')
        descriptor = ParameterDescriptor(
            description=f.metadata.get('help', ''), read_only=f.metadata.get('read_only', True),
            additional_constraints=f'unit: {unit}' if unit else '')
        values[f.name] = node.declare_parameter(f.name, _default(f), descriptor).value
    return cls(**values)
