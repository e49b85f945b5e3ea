"""The one exception type for user mistakes: caught by the CLI, printed as one line, exit code 2."""


class ConfigError(ValueError):
    """A problem with the user's configuration or inputs, explained in one line with the fix."""


def unknown(kind: str, name: str, valid) -> ConfigError:
    """`unknown model 'foo'; valid: a, b, c`: the standard message for a bad registry name."""
    return ConfigError(f"unknown {kind} {name!r}; valid: {', '.join(sorted(valid))}")
