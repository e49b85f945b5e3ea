"""User-facing failures: each is printed by the CLI as one line, with no traceback.

- ``ConfigError``: a mistake in the configuration or inputs (exit code 2), raised before anything
  compiles wherever possible.
- ``Diverged``: the run kept producing non-finite gradients and stopped (exit code 3); its last
  good checkpoint is intact.
- ``Preempted``: SIGTERM/SIGINT; a checkpoint was written and the message says how to resume
  (exit code 128 + signal number, the shell convention).
- ``WriteFailed``: a file of the run could not be written (disk full, quota, read-only file
  system, ...); the message names the file, the cause, the last intact checkpoint and the resume
  command (exit code 74, ``EX_IOERR`` of sysexits.h).
- ``RunDirInUse``: another live process holds the run directory's lock (exit code 75,
  ``EX_TEMPFAIL``: try again once it has finished, or use another directory).
"""


class GaxpError(Exception):
    exit_code = 1


class ConfigError(GaxpError, ValueError):
    """A problem with the user's configuration or inputs, explained in one line with the fix."""

    exit_code = 2


class Diverged(GaxpError):
    exit_code = 3


class Preempted(GaxpError):
    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


class WriteFailed(GaxpError):
    """``what`` (e.g. "checkpoint 40") could not be written to ``path`` because of ``cause``.
    ``after`` is filled in by the run (``gaxp.run_dir.one_run``): what is intact, how to resume."""

    exit_code = 74

    def __init__(self, path, cause: str, what: str = ""):
        self.path, self.cause, self.what, self.after = str(path), cause, what, ""
        super().__init__(str(self))

    def __str__(self) -> str:
        what = f"{self.what} to " if self.what else ""
        return f"could not write {what}{self.path}: {self.cause}{self.after}"


class RunDirInUse(GaxpError):
    exit_code = 75


def unknown(kind: str, name: str, valid) -> ConfigError:
    """`unknown model 'foo'; valid: a, b, c`: the standard message for a bad registry name."""
    return ConfigError(f"unknown {kind} {name!r}; valid: {', '.join(sorted(valid))}")
