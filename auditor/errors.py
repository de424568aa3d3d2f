"""One exception type for run-level faults: the CLI turns it into exit code 2 and one clear paragraph."""


class AuditorError(Exception):
    """A fault in the user's config, model or data that they can fix; the message names the fix."""


class ConfigError(AuditorError):
    """An unknown key, a value of the wrong type, or a contradictory combination of settings."""


def first_line(err: BaseException) -> str:
    """An exception as one line, "Type: message": library messages can span many lines, a paragraph cannot."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__
