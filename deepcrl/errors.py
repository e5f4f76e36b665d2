"""The one exception type users see: a single sentence that names the problem."""


class DeepcrlError(Exception):
    """A user-facing error. The CLI prints its message (one sentence) and exits with code 2."""


class ArtifactError(DeepcrlError):
    """A run directory or exported file is missing, corrupt, of the wrong kind or of a newer format."""


class UnknownEnvError(DeepcrlError, KeyError):
    """An environment id that is not registered."""

    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return str(self.args[0]) if self.args else ""
