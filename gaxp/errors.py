"""User-facing failures: each is printed by the CLI as one line, with no traceback.

- ``ConfigError``: a mistake in the configuration or inputs (exit code 2), raised before anything
  compiles wherever possible.
- ``Diverged``: the run kept producing non-finite gradients and stopped (exit code 3); its last
  good checkpoint is intact.
- ``Preempted``: SIGTERM/SIGINT; a checkpoint was written and the message says how to resume
  (exit code 128 + signal number, the shell convention).
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


def unknown(kind: str, name: str, valid) -> ConfigError:
    """`unknown model 'foo'; valid: a, b, c`: the standard message for a bad registry name."""
    return ConfigError(f"unknown {kind} {name!r}; valid: {', '.join(sorted(valid))}")
