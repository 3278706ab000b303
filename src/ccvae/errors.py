"""User-facing errors: one line, exit code 2 (3 for a diverged training), no traceback (see cli.main).

No torch here: the CLI tells them apart without loading it."""


class UserError(Exception):
    """Bad input from the user (a file, an option, a config value).

    The CLI prints ``ccvae: error: <message>`` and exits with status 2.
    """


class TrainingDiverged(UserError):
    """A loss term became NaN or Inf; the last good checkpoint is kept. The CLI exits with status 3."""


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (its type's name when the message is empty)."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
