"""The one exception of the run layer."""


class RunError(Exception):
    """A bad setting or a run directory that cannot be used; the message is one line and
    names the option or path. The ``jlvm`` command reports it and exits with status 2."""
