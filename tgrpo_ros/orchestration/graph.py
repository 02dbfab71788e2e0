"""
The node graph of a training run or of an arm deployment, built from one YAML configuration.

Both launchers read this module: ``launch/train_sim.launch.py`` (launch_ros, for
real ROS installs) and ``tgrpo_ros.orchestration.launcher`` (plain processes, for pip installs).
Standard library plus PyYAML only, so it imports without ROS or torch.

Configuration layout (see ``config/train_sim.yaml``)::

    graph:
      package: tgrpo_ros
      num_bridges: 2              # sim bridges, in namespaces <prefix>0 .. <prefix>M-1
      bridge_namespace_prefix: sim
      policy_parameters: {...}    # given to both the policy server and the learner
    policy_server: {name: policy_server, namespace: '', parameters: {...}, remaps: {}}
    sim_bridge:    {name: sim_bridge, parameters: {...}, remaps: {}}
    learner:       {name: learner, namespace: '', parameters: {...}, remaps: {}}

A deployment graph (``graph.kind: deploy``, see ``config/deploy_arm.yaml`` and
docs/deploy.md) has the policy server in stream mode and the safety controller (a
lifecycle node) in the arm's namespace, plus ``sim_arm`` when the configuration
has a ``sim_arm`` section (``config/deploy_sim_arm.yaml``)::

    graph:
      kind: deploy
      package: tgrpo_ros
      arm_namespace: /arm         # safety_controller and sim_arm; the server's client
      arm_topics: {camera: /camera/color/image_raw, ee_pose: ..., twist: ..., gripper: ...}
      policy_parameters: {...}    # given to the policy server
    policy_server:     {parameters: {instruction: ..., ...}, remaps: {}}
    safety_controller: {parameters: {...}, remaps: {}}
    sim_arm:           {parameters: {...}, remaps: {}}    # optional

``graph.arm_topics`` names the arm's own topics once; the graph turns it into the
remaps of every node that uses them (the camera for the policy server, all four
for the safety controller and sim_arm).

``plan_run`` is the one place that turns a configuration into a run: it resolves
the model path (default: the stand-in, built on first use in the user cache
directory), creates the run directory (default under ``$ROS_HOME/tgrpo_ros/runs``,
next to ROS's own logs) and builds the node specs. Both launchers call it, so they
start identical nodes.

The graph fills in what ties the nodes together, so it is written in one place:
the policy server's ``clients`` and the learner's ``bridges`` (the bridge
namespaces), the policy parameters that must agree between the policy
server and the learner (``graph.policy_parameters``: model path, trainable set, LoRA
settings, adapter root) and, when given, a ``model_path`` override.
"""

from dataclasses import dataclass, field
import os
import shutil
import time
from typing import Dict, List, Mapping, Optional

import yaml

from tgrpo_ros.names import normalize_namespace

PACKAGE = 'tgrpo_ros'
GRAPH_KINDS = ('train', 'deploy')
TRAIN_KINDS = ('policy_server', 'sim_bridge', 'learner')
DEPLOY_KINDS = ('policy_server', 'safety_controller', 'sim_arm')
NODE_KINDS = ('policy_server', 'sim_bridge', 'learner', 'safety_controller', 'sim_arm')
LIFECYCLE_KINDS = ('safety_controller',)  # managed nodes (rclpy.lifecycle)
EXECUTABLES = {kind: kind for kind in NODE_KINDS}  # console scripts of setup.py
TOP_LEVEL_KEYS = ('graph',) + NODE_KINDS + ('main',)
# The arm's topics as the deploy nodes name them (tgrpo_ros.nodes.arm_topics; relative
# names resolve in the arm namespace), by the key of ``graph.arm_topics``.
ARM_TOPICS = {'camera': 'camera/image', 'ee_pose': 'ee_pose',
              'twist': '/servo_node/delta_twist_cmds', 'gripper': '/gripper_controller/commands'}
DEFAULT_ARM_NAMESPACE = '/arm'
NODE_KEYS = ('name', 'namespace', 'parameters', 'remaps', 'executable')
DEFAULT_CONFIG = 'train_sim.yaml'
STANDIN_PREFIX = 'standin_seed'  # default model: <user cache>/standin_seed<seed>


@dataclass
class NodeSpec:
    """One node of the graph: what to start and with which ROS arguments."""

    package: str
    executable: str
    name: str
    namespace: str = ''
    parameters: Dict[str, object] = field(default_factory=dict)
    remaps: Dict[str, str] = field(default_factory=dict)
    lifecycle: bool = False  # a managed node: configure and activate it to run

    @property
    def full_name(self) -> str:
        """Fully qualified node name, e.g. '/sim0/sim_bridge'."""
        return (self.namespace.rstrip('/') + '/' + self.name) if self.namespace \
            else '/' + self.name

    def params_yaml(self) -> dict:
        """Return the ``--params-file`` content for this node (keyed by its full name)."""
        return {self.full_name: {'ros__parameters': dict(self.parameters)}}


def load_config(path) -> dict:
    """Read a graph configuration file; raise ValueError naming a bad key."""
    path = os.fspath(path)
    with open(path) as stream:
        config = yaml.safe_load(stream)
    if not isinstance(config, dict):
        raise ValueError(f'{path}: the configuration must be a YAML mapping, got '
                         f'{type(config).__name__}')
    unknown = sorted(set(config) - set(TOP_LEVEL_KEYS))
    if unknown:
        raise ValueError(f'{path}: unknown top-level keys {unknown}; valid keys: '
                         f'{list(TOP_LEVEL_KEYS)}')
    return config


def _section(config: Mapping, kind: str) -> dict:
    section = dict(config.get(kind) or {})
    unknown = sorted(set(section) - set(NODE_KEYS))
    if unknown:
        raise ValueError(f'section {kind!r}: unknown keys {unknown}; valid keys: '
                         f'{list(NODE_KEYS)}')
    for key in ('parameters', 'remaps'):
        if not isinstance(section.get(key) or {}, dict):
            raise ValueError(f'section {kind!r}: {key} must be a mapping, got '
                             f'{section[key]!r}')
    return section


def bridge_namespaces(config: Mapping) -> List[str]:
    """Return the namespaces of the sim bridges, e.g. ['/sim0', '/sim1']."""
    graph = dict(config.get('graph') or {})
    count = graph.get('num_bridges', 2)
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f'graph.num_bridges must be an int >= 1, got {count!r}')
    prefix = str(graph.get('bridge_namespace_prefix', 'sim')).strip('/')
    if not prefix:
        raise ValueError('graph.bridge_namespace_prefix must not be empty')
    return [f'/{prefix}{i}' for i in range(count)]


def graph_kind(config: Mapping) -> str:
    """Return 'train' or 'deploy' (``graph.kind``, default 'train'); check the sections."""
    kind = (config.get('graph') or {}).get('kind', 'train')
    if kind not in GRAPH_KINDS:
        raise ValueError(f'unknown graph.kind {kind!r}; choose one of {list(GRAPH_KINDS)}')
    allowed = TRAIN_KINDS if kind == 'train' else DEPLOY_KINDS
    wrong = [k for k in NODE_KINDS if k in config and k not in allowed]
    if wrong:
        raise ValueError(f'a {kind} graph has no {wrong} section(s); its node sections: '
                         f'{list(allowed)}')
    return kind


def arm_namespace(config: Mapping) -> str:
    """Return the namespace of a deploy graph's arm nodes (``graph.arm_namespace``)."""
    graph = dict(config.get('graph') or {})
    ns = normalize_namespace(graph.get('arm_namespace', DEFAULT_ARM_NAMESPACE))
    if not ns:
        raise ValueError("graph.arm_namespace must not be empty (e.g. '/arm')")
    return ns


def arm_remaps(config: Mapping, kind: str) -> Dict[str, str]:
    """Return the remaps that ``graph.arm_topics`` gives node ``kind`` of a deploy graph."""
    topics = dict((config.get('graph') or {}).get('arm_topics') or {})
    unknown = sorted(set(topics) - set(ARM_TOPICS))
    if unknown:
        raise ValueError(f'graph.arm_topics: unknown keys {unknown}; valid keys: '
                         f'{list(ARM_TOPICS)}')
    remaps = {}
    for key, target in topics.items():
        if not target or target == ARM_TOPICS[key]:
            continue
        if kind == 'policy_server':
            if key == 'camera':  # the server names its clients' topics absolutely
                remaps[f'{arm_namespace(config)}/{ARM_TOPICS[key]}'] = str(target)
        else:
            remaps[ARM_TOPICS[key]] = str(target)
    return remaps


def build_graph(config: Mapping, *, model_path: Optional[str] = None,
                overrides: Optional[Mapping[str, Mapping[str, object]]] = None
                ) -> List[NodeSpec]:
    """
    Return the nodes of ``config``.

    A training graph: the policy server, M sim bridges, the learner. A deploy graph:
    the policy server (stream mode), the safety controller and, when configured,
    sim_arm.

    ``model_path`` (when given) replaces every node's ``model_path`` parameter.
    ``overrides`` maps a node kind ('policy_server', 'sim_bridge', 'learner') to
    parameters that replace the configured ones (e.g. the run directory).
    """
    graph = dict(config.get('graph') or {})
    package = str(graph.get('package', PACKAGE))
    kind_of_graph = graph_kind(config)
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(NODE_KINDS))
    if unknown:
        raise ValueError(f'overrides for unknown node kinds {unknown}; valid: '
                         f'{list(NODE_KINDS)}')
    shared = dict(graph.get('policy_parameters') or {})
    with_policy = ('policy_server', 'learner')

    def spec(kind: str, namespace: Optional[str], extra: Mapping[str, object],
             defaults: Optional[Mapping[str, object]] = None,
             remaps: Optional[Mapping[str, str]] = None) -> NodeSpec:
        section = _section(config, kind)
        parameters = dict(shared) if kind in with_policy else {}
        parameters.update(defaults or {})
        parameters.update(section.get('parameters') or {})
        parameters.update(extra)
        if model_path is not None and kind in with_policy:
            parameters['model_path'] = str(model_path)
        parameters.update(overrides.get(kind) or {})
        if namespace is None:
            namespace = normalize_namespace(section.get('namespace', ''))
        all_remaps = dict(remaps or {})
        all_remaps.update({str(k): str(v) for k, v in (section.get('remaps') or {}).items()})
        return NodeSpec(package=package,
                        executable=str(section.get('executable', EXECUTABLES[kind])),
                        name=str(section.get('name', kind)), namespace=namespace,
                        parameters=parameters, remaps=all_remaps,
                        lifecycle=kind in LIFECYCLE_KINDS)

    if kind_of_graph == 'deploy':
        arm = arm_namespace(config)
        # The policy server streams from the arm's camera (docs/deploy.md).
        nodes = [spec('policy_server', None, {'clients': [arm]},
                      defaults={'mode': 'stream', 'preprocessing': 'camera'},
                      remaps=arm_remaps(config, 'policy_server'))]
        nodes.append(spec('safety_controller', arm, {},
                          remaps=arm_remaps(config, 'safety_controller')))
        if 'sim_arm' in config:
            nodes.append(spec('sim_arm', arm, {}, remaps=arm_remaps(config, 'sim_arm')))
    else:
        bridges = bridge_namespaces(config)
        nodes = [spec('policy_server', None, {'clients': list(bridges)})]
        nodes += [spec('sim_bridge', ns, {}) for ns in bridges]
        # The learner knows a bridge in the node graph by its node name (bridge_node).
        nodes.append(spec('learner', None, {'bridges': list(bridges),
                                            'bridge_node': nodes[-1].name}))
    names = [n.full_name for n in nodes]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f'node names must be unique; duplicated: {duplicates}')
    return nodes


def find_node(nodes: List[NodeSpec], kind: str) -> NodeSpec:
    """Return the first node started from executable ``kind``."""
    for node in nodes:
        if node.executable == EXECUTABLES.get(kind, kind):
            return node
    raise KeyError(f'no node of kind {kind!r}; have {[n.executable for n in nodes]}')


def write_params_files(nodes: List[NodeSpec], directory) -> Dict[str, str]:
    """Write one ``--params-file`` per node into ``directory``; return {full name: path}."""
    os.makedirs(os.fspath(directory), exist_ok=True)
    paths = {}
    for node in nodes:
        path = os.path.join(os.fspath(directory),
                            node.full_name.strip('/').replace('/', '__') + '.params.yaml')
        with open(path, 'w') as stream:
            yaml.safe_dump(node.params_yaml(), stream, sort_keys=True)
        paths[node.full_name] = path
    return paths


# ---------------------------------------------------------------------------- run plans

@dataclass
class RunPlan:
    """Everything a launcher needs to start one run of a configuration."""

    nodes: List[NodeSpec]
    run_dir: str
    model_path: str
    timeout: Optional[float] = None  # s, the whole run (main.timeout)

    @property
    def log_dir(self) -> str:
        """Node logs and params files of the run."""
        return os.path.join(self.run_dir, 'logs')


def user_cache_dir() -> str:
    """Return this package's cache directory ($XDG_CACHE_HOME or ~/.cache, /tgrpo_ros)."""
    base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    return os.path.join(base, PACKAGE)


def default_runs_root() -> str:
    """Return where runs go by default: $ROS_HOME/tgrpo_ros/runs (ROS_HOME: ~/.ros)."""
    ros_home = os.environ.get('ROS_HOME') or os.path.join(os.path.expanduser('~'), '.ros')
    return os.path.join(ros_home, PACKAGE, 'runs')


PACKAGE_URL = 'package://'


def resolve_package_url(path: str) -> str:
    """
    Return ``path`` with a leading ``package://<package>/`` replaced by its share directory.

    E.g. ``package://tgrpo_ros/models/standin_sft_task0`` is the shipped model wherever
    the package is installed (ament_index, AMENT_PREFIX_PATH), so a copied configuration
    keeps it. When the share directory of tgrpo_ros itself is not installed (a bare
    ``pip install -e .``), its files are read from the checkout. Other paths are returned
    unchanged.
    """
    if not isinstance(path, str) or not path.startswith(PACKAGE_URL):
        return path
    package, _, rest = path[len(PACKAGE_URL):].partition('/')
    share = None
    try:
        from ament_index_python.packages import get_package_share_directory
        share = get_package_share_directory(package)
    except (ImportError, LookupError, OSError, ValueError):  # not found: a KeyError
        checkout = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        if package == PACKAGE and os.path.isfile(os.path.join(checkout, 'package.xml')):
            share = checkout
    if not package or share is None:
        raise ValueError(f'{path!r}: no installed package {package!r} (a package URL reads '
                         'package://<package>/<path in its share directory>; is its prefix on '
                         'AMENT_PREFIX_PATH?)')
    return os.path.join(share, rest)


def resolve_model(model_path: str, standin_seed: int = 0, config_dir: str = '') -> str:
    """
    Return the absolute checkpoint directory for ``model_path``.

    '' means the default stand-in, ``<user cache>/standin_seed<seed>``; a missing
    directory named ``standin_seed<N>`` is built there on first use. A
    ``package://<package>/...`` path is resolved in that package's share directory
    (``resolve_package_url``); a relative path is looked up from the working
    directory, then from the configuration's directory.
    """
    model_path = resolve_package_url(model_path)
    if not model_path:
        model_path = os.path.join(user_cache_dir(), f'{STANDIN_PREFIX}{int(standin_seed)}')
    candidates = [os.path.abspath(model_path)]
    if config_dir and not os.path.isabs(model_path):
        candidates.append(os.path.abspath(os.path.join(config_dir, model_path)))
    for path in candidates:
        if os.path.isfile(os.path.join(path, 'config.json')):
            return path
    path = candidates[0]
    name = os.path.basename(path.rstrip('/'))
    if name.startswith(STANDIN_PREFIX):
        from tgrpo_ros.policy import build_standin
        seed = name[len(STANDIN_PREFIX):]
        seed = int(seed) if seed.isdigit() else int(standin_seed)
        print(f'building the stand-in policy (seed {seed}) into {path}', flush=True)
        return os.path.abspath(build_standin(path, seed=seed))
    raise FileNotFoundError(
        f'model_path {model_path!r} holds no checkpoint (config.json); give an OpenVLA '
        f"checkpoint directory, '' for the default stand-in, or a path named "
        f"'{STANDIN_PREFIX}<seed>' to build a stand-in there")


def plan_run(config: Mapping, *, config_path: Optional[str] = None,
             model_path: Optional[str] = None, runs_root: Optional[str] = None,
             run_dir: Optional[str] = None,
             overrides: Optional[Mapping[str, Mapping[str, object]]] = None) -> RunPlan:
    """
    Resolve the model, create the run directory and build the nodes of ``config``.

    The run directory is ``run_dir`` when given (kept if it exists, e.g. to resume),
    else ``<runs_root>/<task>__<tgrpo|deploy>__<seed>__<time>`` (CleanRL-style run
    name) with ``runs_root`` from the argument, the configuration's ``main.runs_root``,
    or ``default_runs_root()``. In a training run the learner writes there and
    adapters go to ``<run_dir>/adapters``, the server's adapter root; a deploy run
    keeps its node logs there and serves the adapter its configuration names.
    """
    from tgrpo_ros.orchestration import validate

    main = dict(config.get('main') or {})
    deploy = graph_kind(config) == 'deploy'
    # Every key and value is checked before the model is built or a directory made.
    kinds = [k for k in (DEPLOY_KINDS if deploy else TRAIN_KINDS)
             if k in config or k != 'sim_arm']
    validate.check_config(config, overrides, kinds=kinds)
    validate.check_nodes(build_graph(config, overrides=overrides))
    shared = dict((config.get('graph') or {}).get('policy_parameters') or {})
    seed = int(main.get('seed', 0))
    config_dir = os.path.dirname(os.path.abspath(config_path)) if config_path else ''
    model = resolve_model(model_path or shared.get('model_path', ''),
                          main.get('standin_seed', 0), config_dir)
    if run_dir is None:
        root = runs_root or main.get('runs_root') or default_runs_root()
        label = 'deploy' if deploy else 'tgrpo'
        name = f"{main.get('task_name', 'task')}__{label}__{seed}__{int(time.time())}"
        run_dir = os.path.join(os.path.expanduser(str(root)), name)
        suffix = 1
        while os.path.exists(run_dir + (f'_{suffix}' if suffix > 1 else '')):
            suffix += 1
        run_dir += f'_{suffix}' if suffix > 1 else ''
    run_dir = os.path.abspath(os.path.expanduser(str(run_dir)))
    os.makedirs(run_dir, exist_ok=True)
    if config_path:
        shutil.copyfile(config_path, os.path.join(run_dir, 'config.yaml'))
    adapter_root = os.path.join(run_dir, 'adapters')
    merged = {kind: dict(values) for kind, values in (overrides or {}).items()}
    if not deploy:
        merged.setdefault('learner', {}).update(
            {'run_dir': run_dir, 'adapter_root': adapter_root, 'seed': seed})
        merged.setdefault('policy_server', {}).update({'adapter_root': adapter_root})
    nodes = build_graph(config, model_path=model, overrides=merged)
    validate.check_nodes(nodes)  # also writes ints given for float fields as floats
    timeout = main.get('timeout')
    return RunPlan(nodes=nodes, run_dir=run_dir, model_path=model,
                   timeout=None if timeout is None else float(timeout))
