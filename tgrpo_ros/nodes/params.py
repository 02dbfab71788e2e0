"""
Declare a config dataclass as ROS parameters and read it back: one way for every node.

Each field of the dataclass becomes a parameter of the same name and type, with a
descriptor carrying the field's help text (and unit) and its read-only flag
(``tgrpo_ros.options.option``). The values are read once and given to the
dataclass, whose ``__post_init__`` rejects impossible ones: a node's constructor
then fails with that message (``node_main.run_node`` logs it as FATAL).

rclpy keeps a parameter override that no node declares without a word (a typo in a
params file, ``temprature: 0.25``): ``refuse_undeclared`` (called by
``node_main.run_node`` once the node is built) turns one into a ValueError naming it
and the nearest declared name, which ``run_node`` logs as FATAL (exit 1).

A node that re-reads its config later (the safety controller, on ``configure``)
declares it with ``dynamic_typing=True``, so that a YAML ``1`` is accepted for a
float field (the dataclass checks and converts the value), reads it back with
``read_config`` and validates a change in its on-set callback with
``read_config(node, cls, changes)``.
"""

from dataclasses import fields, MISSING
import difflib

from rcl_interfaces.msg import ParameterDescriptor

from tgrpo_ros import options


def _default(f):
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    raise ValueError(f'config field {f.name} has no default')


def declare_config(node, cls, *, dynamic_typing=False):
    """
    Declare every field of dataclass ``cls`` on ``node``; return ``cls`` built from them.

    With ``dynamic_typing`` the parameters take a value of any type (e.g. an int for
    a float field) and the dataclass alone checks it.
    """
    values = {}
    for f in fields(cls):
        unit = f.metadata.get('unit', '')
        descriptor = ParameterDescriptor(
            description=f.metadata.get('help', ''), read_only=f.metadata.get('read_only', True),
            additional_constraints=f'unit: {unit}' if unit else '',
            dynamic_typing=bool(dynamic_typing))
        values[f.name] = node.declare_parameter(f.name, _default(f), descriptor).value
    return cls(**values)


def read_config(node, cls, changes=None):
    """
    Return ``cls`` built from ``node``'s current parameters, with ``changes`` applied.

    ``changes`` ({name: value}, names of other parameters ignored) lets an on-set
    callback check the config a change would make before accepting it; an impossible
    one raises the dataclass's ValueError.
    """
    names = [f.name for f in fields(cls)]
    values = {name: node.get_parameter(name).value for name in names}
    values.update({k: v for k, v in (changes or {}).items() if k in names})
    return options.from_mapping(cls, values)


def undeclared_overrides(node):
    """Return the names of ``node``'s parameter overrides that it did not declare, sorted."""
    overrides = getattr(node, '_parameter_overrides', None) or {}
    return sorted(name for name in overrides if not node.has_parameter(name))


def refuse_undeclared(node):
    """Raise ValueError naming the first parameter override ``node`` does not declare."""
    names = undeclared_overrides(node)
    if not names:
        return
    declared = list(node._parameters)
    close = difflib.get_close_matches(names[0], declared, n=1, cutoff=0.6)
    hint = f"; did you mean '{close[0]}'?" if close else ''
    others = f' (also undeclared: {names[1:]})' if len(names) > 1 else ''
    raise ValueError(f"parameter '{names[0]}' is not a parameter of node "
                     f'{node.get_fully_qualified_name()}{hint}{others}; refusing to start '
                     'rather than ignore it')
