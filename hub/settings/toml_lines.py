"""Where each key of a TOML file is, so a settings error can name its line.

Neither ``tomllib`` nor pydantic keep positions; this scanner tracks tables,
arrays of tables and dotted keys line by line.
"""

from __future__ import annotations

import re


def line_of(key_lines: dict[tuple[str, ...], int], loc: tuple[str | int, ...]) -> int | None:
    """Line of the key at ``loc``, else of the closest enclosing table or key (a missing key)."""
    path = tuple(str(part) for part in loc)
    for end in range(len(path), 0, -1):
        if (line := key_lines.get(path[:end])) is not None:
            return line
    return None


def key_lines(text: str) -> dict[tuple[str, ...], int]:
    """Line of every key, table and array-of-tables item in TOML ``text``, by full path.

    ``port`` under ``[channels.email]`` is ``("channels", "email", "port")``; the
    second ``[[subscriptions]]`` is ``("subscriptions", "1")``. Best effort:
    lines inside a multi-line string or array are skipped, not parsed.
    """
    scanner = _TomlScanner()
    for number, line in enumerate(text.splitlines(), start=1):
        scanner.feed(number, line)
    return scanner.lines


# One part of a dotted key: "quoted", 'literal' or bare; group 4 is the dot after it.
_KEY_PART = re.compile(r"""\s*(?:"((?:[^"\\]|\\.)*)"|'([^']*)'|([\w-]+))\s*(\.?)""")
_QUOTED = re.compile(r""""(?:[^"\\]|\\.)*"|'[^']*'""")


class _TomlScanner:
    """Tracks the current table line by line; see :func:`_key_lines`."""

    def __init__(self) -> None:
        self.lines: dict[tuple[str, ...], int] = {}
        self._arrays: dict[tuple[str, ...], int] = {}  # last index of each array of tables
        self._table: tuple[str, ...] = ()
        self._string_end = ""  # the closing quotes of an open multi-line string
        self._depth = 0  # brackets still open in a multi-line array

    def feed(self, number: int, line: str) -> None:
        if self._string_end:
            if self._string_end in line:
                self._string_end = ""
            return
        if self._depth:
            self._depth = max(self._depth + _open_brackets(line), 0)
            return
        stripped = line.strip()
        if stripped.startswith("["):
            self._header(number, stripped)
            return
        parts, rest = _split_key(stripped)
        if parts and rest.startswith("="):
            self._record(self._table + tuple(parts), number)
            self._value(rest[1:].strip())

    def _header(self, number: int, stripped: str) -> None:
        is_array = stripped.startswith("[[")
        parts, rest = _split_key(stripped[2 if is_array else 1 :])
        if not parts or not rest.startswith("]"):
            return
        if is_array:
            array = self._resolve(parts[:-1]) + (parts[-1],)
            self._arrays[array] = self._arrays.get(array, -1) + 1
            self._table = array + (str(self._arrays[array]),)
        else:
            self._table = self._resolve(parts)
        self._record(self._table, number)

    def _resolve(self, parts: list[str]) -> tuple[str, ...]:
        """The path of ``parts``, with the current index after each array of tables."""
        path: tuple[str, ...] = ()
        for part in parts:
            path += (part,)
            if path in self._arrays:
                path += (str(self._arrays[path]),)
        return path

    def _record(self, path: tuple[str, ...], number: int) -> None:
        for end in range(1, len(path)):
            self.lines.setdefault(path[:end], number)
        self.lines[path] = number

    def _value(self, value: str) -> None:
        quotes = value[:3]
        if quotes in ('"""', "'''") and quotes not in value[3:]:
            self._string_end = quotes
        elif value.startswith(("[", "{")):
            self._depth = max(_open_brackets(value), 0)


def _split_key(text: str) -> tuple[list[str], str]:
    """The parts of the (dotted) key at the start of ``text``, and the text after it."""
    parts: list[str] = []
    position = 0
    while match := _KEY_PART.match(text, position):
        quoted, literal, bare, dot = match.groups()
        parts.append(next(part for part in (quoted, literal, bare) if part is not None))
        position = match.end()
        if not dot:
            break
    return parts, text[position:].lstrip()


def _open_brackets(line: str) -> int:
    """Brackets and braces ``line`` opens minus those it closes, outside strings and comments."""
    code = _QUOTED.sub("", line).split("#", 1)[0]
    return sum(code.count(c) for c in "[{") - sum(code.count(c) for c in "]}")
