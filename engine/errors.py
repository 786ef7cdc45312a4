"""Errors a user can act on. Each carries a hint that says what to do; both processes raise them and the
protocol carries their type name, message and hint across the pipe."""

from __future__ import annotations


class AnimateGaussiansError(Exception):
    """Base of every error we show to the user (Operator.report in Blender, one stderr line in batch)."""

    hint: str = ""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        if hint:
            self.hint = hint

    def user_message(self) -> str:
        text = str(self)
        return f"{text} ({self.hint})" if self.hint else text


class PlyFormatError(AnimateGaussiansError):
    """The file is not a readable 3D Gaussian Splatting PLY."""

    hint = "export the scene from your 3DGS trainer as a binary INRIA-layout .ply"


class InputFileError(AnimateGaussiansError):
    """A path the user gave does not exist or cannot be read."""

    hint = "check the path"


class EngineError(AnimateGaussiansError):
    """The engine process failed, died, or answered something we do not understand."""

    hint = "check the engine interpreter in the add-on preferences; the next request starts a new engine"


class ProtocolError(EngineError):
    """A frame on the pipe was malformed."""


class CancelledError(AnimateGaussiansError):
    """The user cancelled a running request."""

    hint = "frames already written are kept"


class CameraError(AnimateGaussiansError):
    """No usable camera."""

    hint = "add a camera and make it the scene's active camera"


class FallbackRefusedError(AnimateGaussiansError):
    """The engine would have fallen back to a lesser method, and the user asked it not to (`--require-…`)."""

    hint = "install what the message names, or leave out the --require option to accept the fallback"


class SplatFormatError(PlyFormatError):
    """A splat file (.splat, .spz, compressed .ply, SOG) that cannot be read: truncated, wrong magic or version."""

    hint = "the file is damaged or not what its name says; export it again from the tool that made it"
