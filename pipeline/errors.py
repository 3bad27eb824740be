"""What went wrong, as an exit code: one scheme for every `winnow` command.

A script driving winnow needs to tell "you typed it wrong" from "your config is
wrong", "an input is bad" and "the run itself failed" without parsing messages.
Every error winnow raises on purpose carries an ``exit_code``; the command
line's ``main()`` prints the message as one line and exits with that code (with
``--debug``, after the traceback). Anything without one is a bug in winnow and
exits with :data:`EXIT_INTERNAL`.

====  =====================================================================
code  meaning
====  =====================================================================
0     success
1     ``winnow check`` found problems (the list is printed)
2     usage: unknown command or option, a bad option value
3     config: the YAML or a value in it (a key, a type, a range, a filter name)
4     input: an input file, a run folder or a stage output that is missing,
      unreadable, damaged or not what the command needs
5     run failure: a shard task raised, a stage broke conservation, a write failed
70    internal error: a bug in winnow; ``--debug`` shows the traceback to report
130   interrupted (Ctrl-C); finished shards are kept and a rerun resumes
====  =====================================================================
"""
from __future__ import annotations

import os
import sys
import traceback
from typing import Any, Callable

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_USAGE = 2
EXIT_CONFIG = 3
EXIT_INPUT = 4
EXIT_RUN = 5
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130


class WinnowError(Exception):
    """An error winnow raises on purpose: its message is one line a user can act on."""

    exit_code = EXIT_RUN


# The categories below are mixins: an error class keeps its built-in base for callers that catch it
# (``class ConfigError(ConfigProblem, ValueError)``) and gains the category's exit code.


class UsageError(WinnowError):
    """A command-line value winnow cannot use (``inspect -n 0``)."""

    exit_code = EXIT_USAGE


class ConfigProblem(WinnowError):
    """A config file or value winnow cannot accept."""

    exit_code = EXIT_CONFIG


class InputProblem(WinnowError):
    """An input file, run folder or stage output that is missing, damaged or not what is needed."""

    exit_code = EXIT_INPUT


class RunFailure(WinnowError):
    """The run itself failed (a task raised, a stage lost documents)."""

    exit_code = EXIT_RUN


def exit_code_for(exc: BaseException) -> int:
    """The exit code of ``exc``: its own, else the first one found along its causes, else by kind.

    A shard task that failed on a bad input file surfaces as a task failure whose
    cause is the input error; the input error decides the code.
    """
    seen = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        code = getattr(type(e), "exit_code", None)
        if isinstance(code, int) and code not in (EXIT_RUN,):
            return code
        e = e.__cause__
    if isinstance(getattr(type(exc), "exit_code", None), int):
        return type(exc).exit_code
    if isinstance(exc, (FileNotFoundError, NotADirectoryError, IsADirectoryError)):
        return EXIT_INPUT
    if isinstance(exc, OSError):  # disk full, permission denied: the run could not finish
        return EXIT_RUN
    return EXIT_INTERNAL


def top_level_code(e: BaseException) -> int:
    """:func:`exit_code_for` at the top of a command: there, a plain ``ValueError`` with a message (an
    experiment setting checked by hand) is taken for a config problem rather than a bug."""
    code = exit_code_for(e)
    if code == EXIT_INTERNAL and type(e) is ValueError and str(e):
        return EXIT_CONFIG
    return code


def _one_line(e: BaseException) -> str:
    msg = " ".join(str(e).split()) or type(e).__name__
    return msg if len(msg) <= 2000 else msg[:2000] + " …"


def run_guarded(fn: Callable[[], Any], prog: str = "winnow", debug: bool = False) -> int:
    """Run a command's body; every failure becomes one line on stderr and an exit code (the table above).

    The one place this happens: ``winnow``'s ``main()`` and the ``python -m`` scripts the README names
    use it alike. ``debug`` (or ``WINNOW_DEBUG=1``) prints the traceback first.
    """
    debug = debug or bool(os.environ.get("WINNOW_DEBUG"))
    try:
        return int(fn() or 0)
    except KeyboardInterrupt:
        print(f"\n{prog}: interrupted; finished shards are kept and a rerun resumes", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `winnow filters | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Exception as e:  # noqa: BLE001 - every error becomes a line and a code here
        if debug:
            traceback.print_exc()
        code = top_level_code(e)
        if code == EXIT_INTERNAL:
            print(f"{prog}: internal error: {type(e).__name__}: {_one_line(e)}", file=sys.stderr)
            if not debug:
                print(f"{prog}: this is a bug in winnow; rerun with --debug (or WINNOW_DEBUG=1) for the traceback "
                      f"and report it", file=sys.stderr)
        else:
            print(f"{prog}: error: {_one_line(e)}", file=sys.stderr)
        return code
