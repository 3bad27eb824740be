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
