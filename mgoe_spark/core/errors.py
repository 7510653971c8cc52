"""Mistakes a user can fix, as types that carry their own hint.

Every exception the user's data, config or environment can cause derives from :class:`UserError` (often
beside the built-in type callers already catch, e.g. ``class StorageError(UserError, ValueError)``). The
command line prints :meth:`UserError.user_message` as one line, ``mgoe: error: <message>; <hint>``, with
exit code 2 and no traceback; any other exception is a bug and keeps its traceback. The hint belongs to the
error's type (or is given where it is raised), so renaming a function never changes what a user reads.

>>> err = UserError("--run-date 'x' is not a date", hint="use YYYY-MM-DD")
>>> err.user_message()
"--run-date 'x' is not a date; use YYYY-MM-DD"
"""

from __future__ import annotations


def one_line(text: object) -> str:
    """``text`` on one line (a multi-line message would break the one-line contract)."""
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


class UserError(Exception):
    """A mistake the user can fix (bad path, empty input, a config the data cannot satisfy ...).

    ``hint``: what to do about it, appended after ``; `` unless the message already says it. A subclass
    sets a class-level ``hint`` that fits every instance; a raise site may pass its own.
    """

    hint: str | None = None

    def __init__(self, *args: object, hint: str | None = None) -> None:
        super().__init__(*args)
        if hint is not None:
            self.hint = hint

    def user_message(self) -> str:
        """The message and its hint, on one line."""
        text = one_line(self)
        return f"{text}; {self.hint}" if self.hint and self.hint not in text else text


class InputFormatError(UserError, ValueError):
    """The input file does not look like ``input.format`` says (columns, layout, values)."""

    hint = "check input.format and the input.*_column settings"


TRAINER_DATA_HINT = "build the examples first (`mgoe build --run-date D --output ROOT`) or point --examples-root there"
