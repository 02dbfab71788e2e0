"""The package installs both ways (colcon's ament_python and pip) with files where ROS expects."""

import configparser
from pathlib import Path
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

ROOT = Path(__file__).resolve().parents[1]
EXECUTABLES = ['policy_server', 'sim_bridge', 'learner', 'safety_controller', 'sim_arm',
               'tgrpo_launch', 'tgrpo_build_standin', 'tgrpo_eval', 'tgrpo_demos', 'tgrpo_replay',
               'tgrpo_plot', 'tgrpo_sft', 'tgrpo_record', 'tgrpo_arm']


def _console_scripts():
    """Return {name: 'module:function'} as setup.py declares them."""
    namespace = {}
    setup_py = (ROOT / 'setup.py').read_text()
    captured = {}

    def fake_setup(**kwargs):
        captured.update(kwargs)

    import setuptools
    real_setup = setuptools.setup
    setuptools.setup = fake_setup
    try:
        exec(compile(setup_py, 'setup.py', 'exec'), namespace)
    finally:
        setuptools.setup = real_setup
    scripts = captured['entry_points']['console_scripts']
    return dict(line.replace(' ', '').split('=', 1) for line in scripts)


def _copy_source(tmp_path):
    src = tmp_path / 'src'
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        '.venv', '.git', 'build', 'install', 'log', 'runs', '.cache', '*.egg-info',
        '__pycache__'))
    return src


def test_package_xml_is_format_3_with_the_declared_dependencies():
    root = ET.parse(ROOT / 'package.xml').getroot()
    assert root.get('format') == '3'
    assert root.findtext('name') == 'tgrpo_ros'
    exec_deps = {e.text for e in root.findall('exec_depend')}
    test_deps = {e.text for e in root.findall('test_depend')}
    assert {'rclpy', 'sensor_msgs', 'std_msgs', 'std_srvs', 'rcl_interfaces', 'launch',
            'launch_ros'} <= exec_deps
    assert {'ament_flake8', 'ament_pep257', 'ament_copyright', 'python3-pytest'} <= test_deps
    assert root.find('export/build_type').text == 'ament_python'


def test_setup_cfg_puts_scripts_where_ros2_run_looks():
    config = configparser.ConfigParser()
    config.read(ROOT / 'setup.cfg')
    assert config['develop']['script_dir'] == '$base/lib/tgrpo_ros'
    assert config['install']['install_scripts'] == '$base/lib/tgrpo_ros'


def test_every_console_script_names_an_importable_main():
    scripts = _console_scripts()
    assert sorted(scripts) == sorted(EXECUTABLES)
    import importlib
    for name, target in scripts.items():
        module, function = target.split(':')
        assert callable(getattr(importlib.import_module(module), function)), name


def test_colcon_style_install_lands_files_where_ros_expects(tmp_path):
    """What colcon's ament_python build runs: setup.py install into a prefix."""
    src = _copy_source(tmp_path)
    prefix = tmp_path / 'install'
    subprocess.run(
        [sys.executable, 'setup.py', '-q', 'install', '--prefix', str(prefix),
         '--single-version-externally-managed', '--record', str(tmp_path / 'record.txt')],
        cwd=src, check=True, capture_output=True)
    assert (prefix / 'share/ament_index/resource_index/packages/tgrpo_ros').is_file()
    assert (prefix / 'share/tgrpo_ros/package.xml').is_file()
    for pattern, folder in (('launch/*.launch.py', 'launch'), ('config/*.yaml', 'config')):
        for source in ROOT.glob(pattern):
            assert (prefix / 'share/tgrpo_ros' / folder / source.name).is_file(), source.name
    for name in EXECUTABLES:
        assert (prefix / 'lib/tgrpo_ros' / name).is_file(), name


def test_pip_wheel_carries_the_data_files_and_console_scripts(tmp_path):
    """
    What `pip install .` installs: the wheel's data files go to <prefix>/share.

    The wheel is inspected rather than installed: installing it, even with
    --prefix, would first uninstall this environment's editable install.
    """
    import zipfile
    src = _copy_source(tmp_path)
    subprocess.run(
        [sys.executable, '-m', 'pip', 'wheel', '-q', '--no-deps', '--no-build-isolation',
         '--disable-pip-version-check', '-w', str(tmp_path / 'dist'), str(src)],
        check=True, capture_output=True)
    (wheel,) = (tmp_path / 'dist').glob('tgrpo_ros-*.whl')
    names = set(zipfile.ZipFile(wheel).namelist())
    data = 'tgrpo_ros-0.1.0.data/data/'
    assert data + 'share/ament_index/resource_index/packages/tgrpo_ros' in names
    assert data + 'share/tgrpo_ros/package.xml' in names
    for source in ROOT.glob('launch/*.launch.py'):
        assert data + 'share/tgrpo_ros/launch/' + source.name in names
    for source in ROOT.glob('config/*.yaml'):
        assert data + 'share/tgrpo_ros/config/' + source.name in names
    entry_points = zipfile.ZipFile(wheel).read(
        'tgrpo_ros-0.1.0.dist-info/entry_points.txt').decode()
    for name in EXECUTABLES:
        assert f'{name} = ' in entry_points, name


def test_this_environment_resolves_the_package_share_directory():
    from ament_index_python.packages import get_package_share_directory
    share = Path(get_package_share_directory('tgrpo_ros'))
    assert (share / 'package.xml').is_file()
    for source in ROOT.glob('config/*.yaml'):
        assert (share / 'config' / source.name).is_file()
    for name in EXECUTABLES:
        assert shutil.which(name), f'{name} is not on PATH'
