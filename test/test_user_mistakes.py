"""
Every user mistake gets one clear line before anything starts (issue 19).

One test per mistake, each on the real command or node: tgrpo_launch's validation
pass (graph.plan_run), a node refusing a parameter override it does not declare, a
learner stopping on an assignment its bridge cannot run, the command lines' checks.
"""

import os
import re
import subprocess
import sys
import time

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, 'config', 'train_sim.yaml')


def _config(tmp_path, edit):
    """Write train_sim.yaml changed by ``edit(config)`` into tmp_path; return its path."""
    with open(CONFIG) as stream:
        config = yaml.safe_load(stream)
    edit(config)
    config['graph']['policy_parameters']['model_path'] = os.path.join(
        ROOT, 'models', 'standin_sft_task0')
    path = tmp_path / 'train.yaml'
    path.write_text(yaml.safe_dump(config))
    return str(path)


def _launch(tmp_path, config, *extra):
    """Run tgrpo_launch; return (exit code, stdout, stderr)."""
    command = [sys.executable, '-m', 'tgrpo_ros.orchestration.launcher', '--config', config,
               '--runs-root', str(tmp_path / 'runs'), '--no-netns', *extra]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT)
    return result.returncode, result.stdout, result.stderr


def _one_line(stderr):
    lines = [line for line in stderr.splitlines() if line.strip()
             and 'no private network namespace' not in line]
    assert len(lines) == 1, stderr
    assert 'Traceback' not in stderr
    return lines[0]


@pytest.mark.parametrize('where', ['learner', 'policy_server', 'policy_parameters', 'set'])
def test_launch_names_a_misspelt_parameter_at_every_level(tmp_path, where):
    def edit(config):
        if where == 'policy_parameters':
            config['graph']['policy_parameters']['temprature'] = 0.25
        elif where != 'set':
            config[where]['parameters']['temprature'] = 0.25
    extra = ['--set', 'learner.temprature=0.25'] if where == 'set' else []
    code, out, err = _launch(tmp_path, _config(tmp_path, edit), *extra)
    line = _one_line(err)
    assert code == 2
    assert "unknown parameter 'temprature'" in line
    assert "did you mean 'temperature'?" in line
    assert not (tmp_path / 'runs').exists()  # nothing started, no run directory


def test_launch_names_the_typo_not_the_default_it_left(tmp_path):
    def edit(config):
        config['learner']['parameters']['group_sise'] = config['learner']['parameters'].pop(
            'group_size')
    code, out, err = _launch(tmp_path, _config(tmp_path, edit))
    line = _one_line(err)
    assert code == 2
    assert "unknown parameter 'group_sise' of learner; did you mean 'group_size'?" in line


def test_launch_names_a_wrong_type_in_one_line(tmp_path):
    code, out, err = _launch(tmp_path, _config(
        tmp_path, lambda c: c['learner']['parameters'].update(updates='three')))
    assert code == 2
    assert _one_line(err) == 'tgrpo_launch: learner.parameters.updates: expected int, got ' \
        "str 'three'"


@pytest.mark.parametrize('key, value, expected', [
    ('tasks', [42], 'task id 42 is out of range for libero_object (10 tasks: 0..9)'),
    ('init_states', [50], 'init state 50 is out of range for libero_object (50 init '
     'states per task: 0..49)'),
    ('init_state_range', [40, 51], 'init_state_range: [40, 51) is out of range'),
])
def test_launch_checks_libero_ids_against_the_suite(tmp_path, key, value, expected):
    code, out, err = _launch(tmp_path, _config(
        tmp_path, lambda c: c['learner']['parameters'].update({key: value})))
    assert code == 2
    assert expected in _one_line(err)


def test_launch_coerces_an_int_for_a_float_parameter():
    from tgrpo_ros.orchestration import graph
    config = graph.load_config(CONFIG)
    config['learner']['parameters']['lr'] = 1
    nodes = graph.build_graph(config)
    from tgrpo_ros.orchestration import validate
    validate.check_nodes(nodes)
    lr = graph.find_node(nodes, 'learner').parameters['lr']
    assert lr == 1.0 and isinstance(lr, float)


def test_the_shipped_configurations_pass_the_validation(tmp_path):
    from tgrpo_ros.orchestration import graph
    for name in ('train_sim.yaml', 'deploy_arm.yaml', 'deploy_sim_arm.yaml'):
        path = os.path.join(ROOT, 'config', name)
        run = graph.plan_run(graph.load_config(path), config_path=path,
                             model_path=os.path.join(ROOT, 'models', 'standin_sft_task0'),
                             runs_root=str(tmp_path))
        assert run.nodes


def test_libero_counts_match_the_benchmark():
    from tgrpo_ros.sim.libero_env import get_suite, INIT_STATES_PER_TASK, SUITE_TASKS
    for suite, count in SUITE_TASKS.items():
        assert get_suite(suite).n_tasks == count
    bench = get_suite('libero_object')
    assert len(bench.get_task_init_states(0)) == INIT_STATES_PER_TASK
    assert len(bench.get_task_init_states(9)) == INIT_STATES_PER_TASK


# ---------------------------------------------------------------------------- nodes

@pytest.mark.ros
def test_a_node_refuses_an_override_it_does_not_declare(ros_nodes):
    """A params file passed by hand with a typo: FATAL naming it, exit 1."""
    node = ros_nodes.start('sim_bridge', name='sim_bridge', namespace='/sim0',
                           parameters={'camera_size': 128, 'camra_size': 224})
    deadline = time.monotonic() + 120.0
    while node.alive and time.monotonic() < deadline:
        time.sleep(0.2)
    log = node.log_text()
    assert node.returncode == 1, log[-3000:]
    assert "parameter 'camra_size' is not a parameter of node /sim0/sim_bridge; did you " \
        "mean 'camera_size'?" in log
    assert 'FATAL' in log and 'Traceback' not in log


@pytest.mark.ros
@pytest.mark.slow
def test_learner_stops_on_an_assignment_its_bridge_cannot_run(ros_nodes, tmp_path):
    """Tasks [42] reach a bridge (a params file by hand): the learner stops, never waits."""
    from tgrpo_ros.policy import cached_standin

    policy = {'model_path': cached_standin(0), 'trainable': 'lora', 'lora_rank': 8,
              'adapter_root': str(tmp_path / 'run' / 'adapters')}
    bridges = ['/sim0', '/sim1']
    ros_nodes.start('policy_server', name='policy_server', parameters=dict(
        policy, clients=bridges, max_batch_size=2))
    for ns in bridges:
        ros_nodes.start('sim_bridge', name='sim_bridge', namespace=ns,
                        parameters={'camera_size': 128, 'multisample': False})
    learner = ros_nodes.start('learner', name='learner', parameters=dict(
        policy, bridges=bridges, group_size=2, tasks=[42], init_states=[0], updates=1,
        run_dir=str(tmp_path / 'run'), group_timeout=600.0))
    deadline = time.monotonic() + 400.0  # only a hang reaches it (group_timeout is 600 s)
    while learner.alive and time.monotonic() < deadline:
        time.sleep(0.5)
    log = learner.log_text()
    assert learner.returncode == 1, log[-3000:]
    assert re.search(r'sim bridge /sim[01] cannot run task 42, init state 0 \(libero_object\): '
                     r'task_id 42 out of range for libero_object: valid 0\.\.9', log), log
    assert 'group timeout' not in log


# ---------------------------------------------------------------------------- commands

def _run(*argv):
    result = subprocess.run([sys.executable, *argv], capture_output=True, text=True,
                            timeout=300, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT))
    return result.returncode, result.stdout, result.stderr


@pytest.mark.parametrize('argv, expected', [
    (['--tasks', '42'], 'tgrpo_eval: error: task ids [42] are out of range for '
     'libero_object (10 tasks: 0..9)'),
    (['--first-init-state', '45', '--num-init-states', '10'], 'tgrpo_eval: error: init '
     'states 45..54 (first_init_state 45, num_init_states 10) are out of range for '
     'libero_object (50 init states per task: 0..49)'),
    (['--policy', 'vla'], "tgrpo_eval: error: policy 'vla' needs --model-path DIR, a "
     'checkpoint directory'),
    (['--policy', 'vla', '--model-path', 'no/such/model'], 'tgrpo_eval: error: '
     "--model-path 'no/such/model' does not exist; give a checkpoint directory"),
])
def test_tgrpo_eval_checks_its_arguments_in_one_line(argv, expected):
    code, out, err = _run('-m', 'tgrpo_ros.sim.evaluate', '--no-progress', *argv)
    assert code == 2
    assert err.strip().startswith(expected), err
    assert len(err.strip().splitlines()) == 1 and 'Hub' not in err and 'repo' not in err


def test_tgrpo_sft_checks_its_model_and_adapter_in_one_line(tmp_path):
    model = os.path.join(ROOT, 'models', 'standin_sft_task0')
    cases = [
        (['--model-path', 'no/such/model'], 'tgrpo_sft: error: --model-path '
         "'no/such/model' does not exist; give a checkpoint directory"),
        (['--model-path', model, '--adapter', 'no/such/adapter'],
         "tgrpo_sft: error: --adapter 'no/such/adapter': no such adapter directory"),
        (['--model-path', model, '--demos', str(tmp_path / 'none')],
         'tgrpo_sft: error: --demos '),
    ]
    for argv, expected in cases:
        full = ['--demos', str(tmp_path), '--out', str(tmp_path / 'out')] + argv
        code, out, err = _run('-m', 'tgrpo_ros.training.sft', *full)
        assert code == 2, err
        assert err.strip().startswith(expected), err
        assert len(err.strip().splitlines()) == 1 and 'Hub' not in err and 'repo' not in err


def test_tgrpo_demos_checks_task_ids_before_any_env():
    code, out, err = _run('-m', 'tgrpo_ros.sim.demos', '--out', '/tmp/never', '--tasks',
                          '3,42', '--no-progress')
    assert code == 2
    assert err.strip() == ('tgrpo_demos: error: task ids [42] are out of range for '
                           'libero_object (10 tasks: 0..9)')


@pytest.mark.parametrize('module, shown', [
    ('tgrpo_ros.sim.evaluate', ['(default: 256)', '(default: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9])',
                                '(default: 50)', 'px']),
    ('tgrpo_ros.sim.demos', ['(default: 256)', '(default: 50)']),
    ('tgrpo_ros.training.sft', ['(default: 0.0005)', '(default: 15)', '--lora-rank',
                                '--lora-target-modules']),
])
def test_help_shows_defaults_and_units(module, shown):
    code, out, err = _run('-m', module, '--help')
    assert code == 0
    flat = ' '.join(out.split())
    for text in shown:
        assert text in flat, (text, out)


def test_tgrpo_replay_help_lists_its_subcommands():
    code, out, err = _run('-m', 'tgrpo_ros.nodes.replay', '--help')
    assert code == 0
    flat = ' '.join(out.split())
    assert 'subcommands: info, check, play' in flat
    assert 'tgrpo_replay check BAG' in flat and 'tgrpo_replay play BAG' in flat


@pytest.mark.parametrize('argv, expected', [
    (['bench/success.py', '--model-path', 'no/such/model'],
     "success.py: error: --model-path 'no/such/model' does not exist"),
    (['bench/success.py', '--task', '12'],
     'success.py: error: task ids [12] are out of range for libero_object'),
    (['bench/success.py', '--eval-init-states', '60'],
     'success.py: error: init state ids 50..59 are out of range for libero_object (50 '
     'init states per task: 0..49)'),
    (['bench/learn.py', '--init-state', '50'],
     'learn.py: error: init state ids [50] are out of range for libero_object'),
])
def test_bench_scripts_check_their_arguments_in_one_line(argv, expected):
    code, out, err = _run(*argv)
    assert code == 2
    assert err.strip().startswith(expected), err
    assert len(err.strip().splitlines()) == 1
