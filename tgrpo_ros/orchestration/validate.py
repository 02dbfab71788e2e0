"""
Check every key and value of a graph configuration before any process starts.

``graph.plan_run`` calls ``check_config`` first, so both launchers (``tgrpo_launch`` and
``ros2 launch``) refuse a mistake in one line before a node is started or a run
directory is made:

- an unknown parameter, at any level (``graph.policy_parameters``, a node's
  ``parameters``, an override such as ``--set learner.lr=...``), is named with the
  nearest valid name (``did you mean 'temperature'?``);
- a value of the wrong type names the field and the type it expects;
- a value the node's config dataclass rejects (its ``__post_init__``) is quoted;
- LIBERO ids are checked against the suite: task ids against its task count,
  init-state ids and ranges against its init states per task
  (``tgrpo_ros.sim.libero_env.SUITE_TASKS``, ``INIT_STATES_PER_TASK``).

The schema of a node kind is its config dataclasses, the ones its node declares as ROS
parameters (``tgrpo_ros.nodes.params.declare_config``). They are imported by name
when a run is planned: some live in the node modules, which import rclpy (both
launchers run where rclpy is installed); this module itself imports neither.
"""

import dataclasses
import difflib
import importlib
import typing
from typing import Dict, List, Mapping, Optional, Tuple

# The config dataclasses each node kind declares, in declaration order ('module:Class').
NODE_CONFIGS = {
    'policy_server': ('tgrpo_ros.policy.config:PolicyLoadConfig',
                      'tgrpo_ros.nodes.policy_server:PolicyServerConfig'),
    'sim_bridge': ('tgrpo_ros.nodes.sim_bridge:SimBridgeConfig',),
    'learner': ('tgrpo_ros.policy.config:PolicyLoadConfig',
                'tgrpo_ros.training.config:TGRPOConfig',
                'tgrpo_ros.nodes.learner:LearnerConfig'),
    'safety_controller': ('tgrpo_ros.arm.config:ArmConfig',
                          'tgrpo_ros.nodes.safety_controller:SafetyControllerConfig'),
    'sim_arm': ('tgrpo_ros.nodes.sim_arm:SimArmConfig',),
}
# The keys of the graph and main sections, with their types.
GRAPH_KEYS = {'package': str, 'kind': str, 'num_bridges': int, 'bridge_namespace_prefix': str,
              'policy_parameters': dict, 'arm_namespace': str, 'arm_topics': dict}
MAIN_KEYS = {'task_name': str, 'seed': int, 'runs_root': str, 'standin_seed': int,
             'timeout': float}
# Declared by rclpy itself on every node.
ROS_PARAMETERS = {'use_sim_time': bool}
# Nodes declared with dynamic_typing=True: their dataclass converts an int to a float.
DYNAMIC_TYPING = ('safety_controller', 'sim_arm')


def _load(name):
    module, _, cls = name.partition(':')
    return getattr(importlib.import_module(module), cls)


def node_schema(kind: str) -> Tuple[List[type], Dict[str, object]]:
    """Return (config classes, {parameter name: type}) of node ``kind``."""
    classes = [_load(name) for name in NODE_CONFIGS[kind]]
    types = dict(ROS_PARAMETERS)
    for cls in classes:
        hints = typing.get_type_hints(cls)
        types.update({f.name: hints[f.name] for f in dataclasses.fields(cls)})
    return classes, types


def _type_name(expected) -> str:
    origin = typing.get_origin(expected)
    if origin in (list, tuple):
        args = [a for a in typing.get_args(expected) if a is not Ellipsis]
        inner = args[0].__name__ if args else 'value'
        return f'a list of {inner}'
    return getattr(expected, '__name__', str(expected))


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _fits(value, expected) -> bool:
    origin = typing.get_origin(expected)
    if origin in (list, tuple):
        args = [a for a in typing.get_args(expected) if a is not Ellipsis]
        return isinstance(value, (list, tuple)) and all(
            _fits(item, args[0]) for item in value) if args else isinstance(value, list)
    if expected is bool:
        return isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if expected is float:
        return _is_number(value)
    if expected is str:
        return isinstance(value, str)
    if expected is dict:
        return isinstance(value, dict)
    return True


def suggestion(name: str, valid) -> str:
    """Return "; did you mean 'x'?" for the valid name nearest ``name`` ('' if none is near)."""
    close = difflib.get_close_matches(str(name), sorted(valid), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ''


def check_parameters(kind: str, parameters: Mapping, where: str,
                     valid: Optional[Dict[str, object]] = None) -> None:
    """Raise ValueError (one line) for the first unknown or mistyped key of ``parameters``."""
    types = node_schema(kind)[1] if valid is None else valid
    if not isinstance(parameters, Mapping):
        raise ValueError(f'{where} must be a mapping of parameter names to values, got '
                         f'{parameters!r}')
    for name, value in parameters.items():
        if name not in types:
            raise ValueError(f"{where}: unknown parameter '{name}' of {kind}"
                             + suggestion(name, types))
        if not _fits(value, types[name]):
            raise ValueError(f'{where}.{name}: expected {_type_name(types[name])}, got '
                             f'{type(value).__name__} {value!r}')


def coerce(kind: str, parameters: Mapping) -> Dict[str, object]:
    """
    Return ``parameters`` with ints given for float fields written as floats.

    rclpy refuses an integer override of a float parameter (``lr: 1``), so the
    params file carries ``1.0``.
    """
    types = node_schema(kind)[1]
    out = dict(parameters)
    for name, value in parameters.items():
        expected = types.get(name)
        if expected is float and _is_number(value):
            out[name] = float(value)
        elif typing.get_origin(expected) in (list, tuple) and isinstance(value, (list, tuple)):
            args = typing.get_args(expected)
            if args and args[0] is float:
                out[name] = [float(v) if _is_number(v) else v for v in value]
    return out


def check_values(kind: str, parameters: Mapping, where: str) -> None:
    """Build node ``kind``'s config dataclasses from ``parameters``: their checks run."""
    classes, _ = node_schema(kind)
    for cls in classes:
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in parameters.items() if k in names}
        if kind not in DYNAMIC_TYPING:
            values = {k: (list(v) if isinstance(v, tuple) else v) for k, v in values.items()}
        try:
            cls(**values)
        except (ValueError, TypeError) as error:
            raise ValueError(f'{where}: {error}') from None


def check_libero_ids(parameters: Mapping, where: str) -> None:
    """Check a learner's task and init-state ids against its LIBERO suite."""
    from tgrpo_ros.sim.libero_env import INIT_STATES_PER_TASK, SUITE_TASKS

    suite = parameters.get('suite', 'libero_object')
    if suite not in SUITE_TASKS:
        raise ValueError(f'{where}.suite: unknown LIBERO suite {suite!r}' +
                         suggestion(suite, SUITE_TASKS) + f' (suites: {list(SUITE_TASKS)})')
    tasks = SUITE_TASKS[suite]
    for task in parameters.get('tasks', []):
        if not 0 <= task < tasks:
            raise ValueError(f'{where}.tasks: task id {task} is out of range for {suite} '
                             f'({tasks} tasks: 0..{tasks - 1})')
    states = INIT_STATES_PER_TASK
    start, stop = (list(parameters.get('init_state_range', [0, 0])) + [0, 0])[:2]
    if stop > start:
        if start < 0 or stop > states:
            raise ValueError(f'{where}.init_state_range: [{start}, {stop}) is out of range '
                             f'for {suite} ({states} init states per task: ids 0..'
                             f'{states - 1}, so a range within [0, {states}))')
        return
    for state in parameters.get('init_states', []):
        if not 0 <= state < states:
            raise ValueError(f'{where}.init_states: init state {state} is out of range for '
                             f'{suite} ({states} init states per task: 0..{states - 1})')


def check_config(config: Mapping, overrides: Optional[Mapping[str, Mapping]] = None,
                 kinds=None) -> None:
    """
    Check every parameter of ``config`` and of ``overrides``; raise ValueError naming one.

    ``kinds``: the node kinds the graph starts (each gets its section's parameters;
    the policy server and the learner also get ``graph.policy_parameters``).
    """
    for section, keys in (('graph', GRAPH_KEYS), ('main', MAIN_KEYS)):
        values = config.get(section) or {}
        if not isinstance(values, Mapping):
            raise ValueError(f'{section} must be a mapping, got {values!r}')
        for name, value in values.items():
            if name not in keys:
                raise ValueError(f"{section}: unknown key '{name}'" + suggestion(name, keys)
                                 + f' (valid keys: {list(keys)})')
            if value is not None and not _fits(value, keys[name]):
                raise ValueError(f'{section}.{name}: expected {_type_name(keys[name])}, got '
                                 f'{type(value).__name__} {value!r}')
    graph = dict(config.get('graph') or {})
    kinds = list(kinds or [k for k in NODE_CONFIGS if k in config])
    shared = graph.get('policy_parameters') or {}
    takers = [k for k in kinds if k in ('policy_server', 'learner')]
    if shared and takers:
        # Valid when every node that receives it declares it.
        valid = None
        for kind in takers:
            types = node_schema(kind)[1]
            valid = dict(types) if valid is None else {
                k: v for k, v in valid.items() if k in types}
        check_parameters(' and '.join(takers), shared, 'graph.policy_parameters', valid)
    for kind in kinds:
        section = config.get(kind) or {}
        params = section.get('parameters') or {} if isinstance(section, Mapping) else {}
        check_parameters(kind, params, f'{kind}.parameters')
    for kind, params in (overrides or {}).items():
        if kind in NODE_CONFIGS:
            for name, value in (params or {}).items():
                check_parameters(kind, {name: value}, f'override {kind}',)


def check_nodes(nodes) -> None:
    """Check each node's merged parameters: its dataclass checks and the LIBERO ids."""
    for node in nodes:
        kind = node.executable if node.executable in NODE_CONFIGS else None
        if kind is None:
            continue
        node.parameters = coerce(kind, node.parameters)
        check_values(kind, node.parameters, node.full_name)
        if kind == 'learner':
            check_libero_ids(node.parameters, node.full_name)
        if kind == 'sim_arm':
            check_sim_arm_ids(node.parameters, node.full_name)


def check_sim_arm_ids(parameters: Mapping, where: str) -> None:
    """Check sim_arm's task and init state against its LIBERO suite."""
    check_libero_ids({'suite': parameters.get('suite', 'libero_object'),
                      'tasks': [parameters.get('task_id', 0)],
                      'init_states': [parameters.get('init_state_id', 0)]}, where)
