"""
What README.md and docs/ name must exist: every repository path, every command flag.

A path such as `tgrpo_ros/orchestration/graph.py` or `config/train_sim.yaml` must be in
the repository; a flag written after a command (`tgrpo_eval --tasks 0,3`,
`python bench/success.py --advantage-mode masked`) must appear in that command's
`--help`. Both once went stale silently (docs/training.md named `tgrpo_ros/graph.py`
after the module moved).
"""

import functools
import glob
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = [os.path.join(ROOT, 'README.md')] + sorted(glob.glob(os.path.join(ROOT, 'docs', '*.md')))
TOP = ('tgrpo_ros', 'bench', 'config', 'docs', 'test', 'launch', 'scripts', 'models',
       'requirements', 'resource', '.ci')
PATH = re.compile(r'(?<![\w./~<$-])((?:%s)/[\w./-]*\w)' % '|'.join(re.escape(t) for t in TOP))
# Commands and how to ask for their help (a console script, or a bench script).
COMMANDS = {
    'tgrpo_launch': ['-m', 'tgrpo_ros.orchestration.launcher'],
    'tgrpo_eval': ['-m', 'tgrpo_ros.sim.evaluate'],
    'tgrpo_demos': ['-m', 'tgrpo_ros.sim.demos'],
    'tgrpo_sft': ['-m', 'tgrpo_ros.training.sft'],
    'tgrpo_plot': ['-m', 'tgrpo_ros.training.metrics'],
    'tgrpo_build_standin': ['-m', 'tgrpo_ros.policy.standin'],
    'tgrpo_record': ['-m', 'tgrpo_ros.nodes.record'],
    'tgrpo_replay': ['-m', 'tgrpo_ros.nodes.replay'],
    'tgrpo_arm': ['-m', 'tgrpo_ros.nodes.arm_cli'],
}
SUBCOMMANDS = {'tgrpo_replay': ('info', 'check', 'play')}
COMMAND = re.compile(r'(?:python3? )?(?:(?<![\w/])(tgrpo_\w+)|(bench/\w+\.py))((?:[ \t]+'
                     r'(?:\\\n[ \t]*)?[^\s`|;&]+)*)')
FLAG = re.compile(r'(?<![\w-])(--[a-z][a-z0-9-]*)')


def _texts():
    for path in DOCS:
        with open(path, encoding='utf-8') as stream:
            yield os.path.relpath(path, ROOT), stream.read()


def _code(text):
    """Yield the code spans and code-block lines of a markdown text."""
    blocks = re.findall(r'```[^\n]*\n(.*?)```', text, flags=re.S)
    yield from blocks
    yield from re.findall(r'`([^`\n]+)`', re.sub(r'```.*?```', '', text, flags=re.S))


def test_every_repository_path_named_in_the_docs_exists():
    missing = []
    for name, text in _texts():
        for path in sorted(set(PATH.findall(text))):
            path = path.split('::')[0].rstrip('.')
            if not os.path.exists(os.path.join(ROOT, path)):
                missing.append(f'{name}: {path}')
    assert not missing, 'paths named in the docs that do not exist:\n' + '\n'.join(missing)


@functools.lru_cache(maxsize=None)
def _help(command, sub=None):
    if command.startswith('bench/'):
        argv = [os.path.join(ROOT, command)]
    else:
        argv = list(COMMANDS[command])
    argv += [sub, '--help'] if sub else ['--help']
    result = subprocess.run([sys.executable] + argv, capture_output=True, text=True,
                            timeout=300, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT))
    assert result.returncode == 0, f'{command} {sub or ""} --help failed:\n{result.stderr}'
    return result.stdout


def _uses():
    """Yield (doc, command, subcommand, flag) for every flag written after a command."""
    for name, text in _texts():
        for code in _code(text):
            for match in COMMAND.finditer(code):
                command = match.group(1) or match.group(2)
                if command.startswith('tgrpo_') and command not in COMMANDS:
                    continue
                if command.startswith('bench/') and not os.path.isfile(
                        os.path.join(ROOT, command)):
                    continue
                words = match.group(3).replace('\\\n', ' ').split()
                sub = words[0] if words and words[0] in SUBCOMMANDS.get(command, ()) else None
                for word in words:
                    if word == '--ros-args':
                        break  # what follows is ROS's, not the command's
                    for flag in FLAG.findall(word.split('=')[0]):
                        yield name, command, sub, flag


MENTION = re.compile(r'(?<![\w/])(tgrpo_\w+)(?:[ \t]+(info|check|play)\b)?|(bench/\w+\.py)')
ALONE = re.compile(r'`(--[a-z][a-z0-9-]*)[^`]*`')


def _alone():
    """
    Yield (doc, commands, flag) for a flag in a code span of its own.

    A table row or a sentence such as "`--repeats N` sets ..." names a flag of a
    command its document mentions: ``commands`` lists them as (command, subcommand).
    """
    for name, text in _texts():
        text = re.sub(r'```.*?```', '', text, flags=re.S)
        commands = set()
        for mention in MENTION.finditer(text):
            found = mention.group(1) or mention.group(3)
            if found in COMMANDS or (found.startswith('bench/') and os.path.isfile(
                    os.path.join(ROOT, found))):
                commands.update({(found, mention.group(2)), (found, None)})
        for flag in ALONE.findall(text):
            if commands and flag != '--ros-args':
                yield name, tuple(sorted(commands, key=str)), flag


def _has(flag, text):
    return re.search(r'(?<![\w-])%s(?![\w-])' % re.escape(flag), text) is not None


def test_every_flag_named_in_the_docs_is_in_its_commands_help():
    uses = sorted(set(_uses()), key=lambda u: (u[1], u[2] or '', u[3], u[0]))
    assert len(uses) > 40  # the docs do name flags: the parser found them
    unknown = [f'{doc}: {command}{" " + sub if sub else ""} {flag}'
               for doc, command, sub, flag in uses
               if flag != '--help' and not _has(flag, _help(command, sub))]
    alone = sorted(set(_alone()), key=str)
    assert len(alone) > 40
    unknown += [f'{doc}: {flag} (in no --help of {sorted({c for c, _ in commands})})'
                for doc, commands, flag in alone
                if flag != '--help' and not any(_has(flag, _help(c, sub))
                                                for c, sub in commands)]
    assert not unknown, 'flags the docs name that the command lacks:\n' + '\n'.join(unknown)


def test_every_command_shows_its_defaults():
    for command in COMMANDS:
        if command in ('tgrpo_record', 'tgrpo_replay'):
            continue  # helper i20's commands
        text = _help(command)
        assert 'default' in text, f'{command} --help shows no defaults'
    assert all(sub in _help('tgrpo_replay') for sub in SUBCOMMANDS['tgrpo_replay'])
