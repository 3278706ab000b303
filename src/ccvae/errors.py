"""User-facing errors: one line, exit code 2, no traceback (see cli.main)."""


class UserError(Exception):
    """Bad input from the user (a file, an option, a config value).

    The CLI prints ``ccvae: error: <message>`` and exits with status 2.
    """
