"""Save-time checks of template sources: what the editor shows before a version is saved.

Each check takes one part's source (an email subject, an SMS body...) and
returns :class:`Finding` objects with the line, and the column where it is
known, in that part's own source. Nothing here touches the store or renders on
its own: :func:`undefined_findings` is handed a ``render`` callable.

- :func:`syntax_findings`: Jinja syntax errors, with the tag at fault;
- :func:`unsafe_findings`: server-side template injection refused statically;
- :func:`undefined_findings` and :func:`render_finding`: variables outside the
  event's schema, and optional fields used without a guard;
- :func:`html_findings`: unbalanced HTML tags (warnings);
- :func:`sms_finding`: more SMS segments than allowed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from html.parser import HTMLParser
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.exceptions import SecurityError, TemplateAssertionError, UndefinedError
from jinja2.lexer import Token, TokenStream, newline_re
from jinja2.parser import Parser

from hub.templates import MAX_EXPONENT, MAX_REPEAT


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem in one part's source; line and column are 1-based, None when unknown."""

    message: str
    line: int | None = None
    column: int | None = None
    kind: str = "syntax"  # syntax | undefined | unsafe | html | sms_segments | render


# --- syntax -----------------------------------------------------------------

_TAG_BEGINS = frozenset({"variable_begin", "block_begin", "comment_begin", "raw_begin"})


def syntax_findings(env: jinja2.Environment, source: str, name: str) -> list[Finding]:
    """Jinja syntax errors in ``source``, pointing at the start of the tag at fault.

    Jinja reports a line only, and for an unclosed block the template's last
    line; here the column is that of the ``{{``/``{%`` at fault, and an
    unclosed ``{% if %}`` points at the ``if``. Unknown filters and tests,
    which Jinja finds when compiling, are reported too.
    """
    text = newline_re.sub("\n", source)
    parser = _TrackingParser(env, text, name)
    try:
        tree = parser.parse()
        env.compile(tree, name=name, filename=name)
    except TemplateAssertionError as exc:
        return [_at(text, parser.offset_of_name(exc), exc)]
    except jinja2.TemplateSyntaxError as exc:
        return [_at(text, parser.offset_of_error(exc), exc)]
    return []


def _at(text: str, offset: int | None, exc: jinja2.TemplateSyntaxError) -> Finding:
    if offset is None:
        return Finding(exc.message or str(exc), exc.lineno)
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return Finding(exc.message or str(exc), line, column)


class _TrackingParser(Parser):
    """Jinja's parser over a token stream that remembers where each token's tag starts.

    Jinja's tokens carry a line but no column. Each raw token is found in the
    source after the previous one (text the lexer strips for ``-`` and
    ``lstrip_blocks`` is only whitespace, so searching forward stays exact),
    then wrapped exactly as Jinja's own stream wraps it.
    """

    def __init__(self, env: jinja2.Environment, source: str, name: str) -> None:
        # The stream is built in parse(): building it lexes, and may raise.
        super().__init__(env, "", name, name)
        self._source = source
        self._tag_of: dict[int, int] = {}  # id(token) -> offset of its tag's first character
        self._tokens: list[Token] = []  # kept alive so that ids stay unique
        self._last_tag = 0
        self._lexer_failed = False
        self._open: list[int] = []  # tags of the statements being parsed, innermost last

    def parse(self) -> nodes.Template:
        self.stream = TokenStream(self._positioned(), self.name, self.filename)
        return super().parse()

    def parse_statement(self) -> nodes.Node | list[nodes.Node]:
        # Popped only on success: after a failure the stack holds the unclosed blocks.
        self._open.append(self._tag_of.get(id(self.stream.current), self._last_tag))
        statement = super().parse_statement()
        self._open.pop()
        return statement

    def offset_of_error(self, exc: jinja2.TemplateSyntaxError) -> int:
        """Where the tag at fault starts: the unclosed block's, else the current token's."""
        if "innermost block that needs to be closed" in (exc.message or "") and self._open:
            return self._open[-1]
        if self._lexer_failed:
            return self._last_tag
        # End of template is a token of the stream's own making: the last tag is at fault.
        return self._tag_of.get(id(self.stream.current), self._last_tag)

    def offset_of_name(self, exc: TemplateAssertionError) -> int | None:
        """The tag holding the filter or test that a compile error names, on its line."""
        named = re.search(r"'([^']+)'", exc.message or "")
        for token in self._tokens:
            if named and (token.type, token.value, token.lineno) == ("name", named[1], exc.lineno):
                return self._tag_of[id(token)]
        return None

    def _positioned(self) -> Iterator[Token]:
        lexer = self.environment.lexer
        cursor = 0
        try:
            for lineno, kind, raw in lexer.tokeniter(self._source, self.name, self.filename):
                cursor = max(cursor, self._source.find(raw, cursor)) if raw else cursor
                if kind in _TAG_BEGINS:
                    self._last_tag = cursor
                for token in lexer.wrap([(lineno, kind, raw)], self.name, self.filename):
                    self._tokens.append(token)
                    self._tag_of[id(token)] = self._last_tag
                    yield token
                cursor += len(raw)
        except jinja2.TemplateSyntaxError:
            self._lexer_failed = True
            raise


# --- unsafe constructs --------------------------------------------------------

# Attributes that lead from any object to code, frames or modules without a leading "_".
UNSAFE_ATTRIBUTES = frozenset(
    {
        "mro", "func_globals", "func_code", "func_closure", "func_defaults",
        "gi_frame", "gi_code", "cr_frame", "cr_code", "ag_frame", "ag_code",
        "f_globals", "f_locals", "f_builtins", "f_back", "f_code",
        "tb_frame", "tb_next", "im_func", "im_self", "im_class",
    }
)  # fmt: skip
# Jinja's globals are functions and classes: their attributes lead to Python internals.
GLOBALS = frozenset({"cycler", "joiner", "namespace", "lipsum", "range", "dict"})
# Filters and tests that read an attribute named by a string argument.
ATTRIBUTE_FILTERS = frozenset(
    {"attr", "map", "selectattr", "rejectattr", "sort", "groupby", "sum", "unique", "min", "max"}
)
MAX_RANGE_ITEMS = 10_000
MAX_LIPSUM_PARAGRAPHS = 100
# Constant arithmetic is estimated, never computed beyond this: `10**10**10` must not hang a save.
_HUGE = 10**18


def unsafe_findings(env: jinja2.Environment, source: str, name: str) -> list[Finding]:
    """Constructs that template injection uses, refused before they are saved.

    Refused: attributes or items whose name starts with ``_`` or leads to
    internals (``mro``, ``func_globals``...), ``self``, attributes of Jinja's
    globals (``cycler.__init__``), ``range()`` of more than 10,000 items,
    repetition and powers of constants beyond the render-time limits, and a
    variable that doubles on each pass of a loop. Only what can be seen
    without rendering: the sandbox and render limits stay the guard for the
    rest. A source that does not parse has no findings here (see
    :func:`syntax_findings`).
    """
    try:
        tree = env.parse(source, name=name)
    except jinja2.TemplateSyntaxError:
        return []
    findings: list[Finding] = []
    for node in tree.find_all(nodes.Node):
        for why in _unsafe(node):
            findings.append(Finding(why, node.lineno, kind="unsafe"))
    return list(dict.fromkeys(findings))


def _unsafe(node: nodes.Node) -> Iterator[str]:
    if isinstance(node, nodes.Getattr | nodes.Getitem):
        yield from _unsafe_lookup(node)
    elif isinstance(node, nodes.Name) and node.name == "self" and node.ctx == "load":
        yield "`self` gives access to the template's internals"
    elif isinstance(node, nodes.Filter | nodes.Test) and node.name in ATTRIBUTE_FILTERS:
        for argument in [*node.args, *(kwarg.value for kwarg in node.kwargs)]:
            if isinstance(argument, nodes.Const) and isinstance(argument.value, str):
                yield from _unsafe_access(None, argument.value)
    elif isinstance(node, nodes.Call):
        yield from _unsafe_call(node)
    elif isinstance(node, nodes.Mul | nodes.Pow):
        yield from _unsafe_arithmetic(node)
    elif isinstance(node, nodes.For):
        yield from _doubling(node)


def _unsafe_lookup(node: nodes.Getattr | nodes.Getitem) -> Iterator[str]:
    key = node.attr if isinstance(node, nodes.Getattr) else _estimate(node.arg)
    if isinstance(key, str):
        yield from _unsafe_access(node.node, key)


def _unsafe_access(owner: nodes.Node | None, attribute: str) -> Iterator[str]:
    if any(part.startswith("_") or part in UNSAFE_ATTRIBUTES for part in attribute.split(".")):
        yield f"`{attribute}` is private: no names starting with '_', nor Python internals"
    elif isinstance(owner, nodes.Name) and owner.name in GLOBALS:
        yield f"`{owner.name}.{attribute}`: attributes of Jinja's `{owner.name}` are off limits"


def _unsafe_call(node: nodes.Call) -> Iterator[str]:
    if not isinstance(node.node, nodes.Name) or node.dyn_args or node.dyn_kwargs:
        return
    if node.node.name == "range" and not node.kwargs:
        bounds = [bound for argument in node.args if isinstance(bound := _estimate(argument), int)]
        if bounds and len(bounds) == len(node.args) <= 3:
            items = _range_length(*bounds)
            if items is not None and items > MAX_RANGE_ITEMS:
                yield f"range() of {items:,} items (at most {MAX_RANGE_ITEMS:,})"
    elif node.node.name == "lipsum":
        count = [_estimate(k.value) for k in node.kwargs if k.key == "n"] + [
            _estimate(argument) for argument in node.args[:1]
        ]
        if count and isinstance(count[0], int) and count[0] > MAX_LIPSUM_PARAGRAPHS:
            yield f"lipsum() of {count[0]:,} paragraphs (at most {MAX_LIPSUM_PARAGRAPHS})"


def _range_length(start: int, stop: int | None = None, step: int = 1) -> int | None:
    if stop is None:
        start, stop = 0, start
    if step == 0:
        return None
    return max(0, math.ceil((stop - start) / step))


def _unsafe_arithmetic(node: nodes.Mul | nodes.Pow) -> Iterator[str]:
    if isinstance(node, nodes.Pow):
        exponent = _estimate(node.right)
        if isinstance(exponent, int) and abs(exponent) > MAX_EXPONENT:
            yield f"an exponent of {exponent:,} (at most {MAX_EXPONENT:,})"
        return
    product = _estimate(node)
    if isinstance(product, _Sequence) and product.length > MAX_REPEAT:
        yield f"repeats a string or list to {product.length:,} items (at most {MAX_REPEAT:,})"


@dataclass(frozen=True, slots=True)
class _Sequence:
    """A constant string or list, known by its length only."""

    length: int


def _estimate(node: nodes.Node) -> int | str | _Sequence | None:
    """What a constant expression amounts to, with numbers capped at _HUGE; None if not constant.

    A string is returned whole only where it is a literal; anything built is a _Sequence.
    """
    if isinstance(node, nodes.Const):
        return _constant(node.value)
    if isinstance(node, nodes.List | nodes.Tuple):
        return _Sequence(len(node.items))
    if isinstance(node, nodes.Neg):
        operand = _estimate(node.node)
        return -operand if isinstance(operand, int) else None
    if isinstance(node, nodes.Add | nodes.Mul | nodes.Pow | nodes.Concat):
        operands = [node.left, node.right] if isinstance(node, nodes.BinExpr) else node.nodes
        return _combine(type(node), [_estimate(operand) for operand in operands])
    return None


def _constant(value: Any) -> int | str | None:
    if isinstance(value, bool) or not isinstance(value, int | str):
        return None
    return _cap(value) if isinstance(value, int) else value


def _cap(number: int) -> int:
    return max(-_HUGE, min(_HUGE, number))


def _length(value: int | str | _Sequence | None) -> int | None:
    if isinstance(value, _Sequence):
        return value.length
    return len(value) if isinstance(value, str) else None


def _combine(
    operation: type[nodes.Node], operands: list[int | str | _Sequence | None]
) -> int | _Sequence | None:
    if operation is nodes.Concat:  # `~` makes a string of anything: a number counts its digits
        lengths = [len(str(op)) if isinstance(op, int) else _length(op) for op in operands]
        return None if None in lengths else _Sequence(sum(x for x in lengths if x is not None))
    left, right = operands
    if isinstance(left, int) and isinstance(right, int):
        return _numbers(operation, left, right)
    if operation is nodes.Mul:
        sequence, times = (left, right) if isinstance(right, int) else (right, left)
        length = _length(sequence)
        if length is not None and isinstance(times, int):
            return _Sequence(_cap(length * times))
    if operation is nodes.Add and (left_length := _length(left)) is not None:
        right_length = _length(right)
        return None if right_length is None else _Sequence(left_length + right_length)
    return None


def _numbers(operation: type[nodes.Node], left: int, right: int) -> int | None:
    if operation is nodes.Add:
        return _cap(left + right)
    if operation is nodes.Mul:
        return _cap(left * right)
    if right < 0:
        return None
    # Beyond 64 bits the exact power does not matter, only that it is huge.
    if abs(left) > 1 and abs(left).bit_length() * min(right, MAX_EXPONENT + 1) > 64:
        return _HUGE if left > 0 or right % 2 == 0 else -_HUGE
    return int(left**right)


def _doubling(loop: nodes.For) -> Iterator[str]:
    """Assignments in a loop whose value holds itself twice (or multiplied): exponential growth."""
    for assign in loop.find_all((nodes.Assign, nodes.AssignBlock)):
        assert isinstance(assign, nodes.Assign | nodes.AssignBlock)
        value = [assign.node] if isinstance(assign, nodes.Assign) else assign.body
        target = assign.target
        if isinstance(target, nodes.Name):
            label = target.name
        elif isinstance(target, nodes.NSRef):
            label = f"{target.name}.{target.attr}"
        else:
            continue
        found = [node for part in value for node in (part, *part.find_all(nodes.Expr))]
        uses = sum(1 for node in found if _names(node) == label)
        multiplied = any(isinstance(node, nodes.Mul | nodes.Pow) for node in found)
        if uses >= 2 or (uses and multiplied):
            yield f"`{label}` is built from itself more than once in a loop: it grows exponentially"


def _names(node: nodes.Node) -> str | None:
    """``x`` for a variable, ``ns.x`` for a namespace attribute; None for anything else."""
    if isinstance(node, nodes.Name):
        return node.name
    if isinstance(node, nodes.Getattr) and isinstance(node.node, nodes.Name):
        return f"{node.node.name}.{node.attr}"
    return None


# --- rendering with the event's sample data -----------------------------------


def render_finding(exc: BaseException, name: str) -> Finding:
    """What rendering template ``name`` raised, at the template line it was raised from.

    Jinja rewrites tracebacks so that template code shows as frames whose
    filename is the template's: compile with ``filename=name`` for the line to
    be found. Exceptions chained with ``from`` (a wrapping TemplateError) are
    followed.
    """
    chain = [exc]
    while (cause := chain[-1].__cause__ or chain[-1].__context__) is not None:
        chain.append(cause)
    lines = [line for raised in chain if (line := _template_line(raised, name)) is not None]
    root = chain[-1]
    message = (
        str(root) if isinstance(root, jinja2.TemplateError) else f"{type(root).__name__}: {root}"
    )
    return Finding(message, lines[-1] if lines else None, kind=_kind(root))


def _template_line(exc: BaseException, name: str) -> int | None:
    if isinstance(exc, jinja2.TemplateSyntaxError) and exc.name == name:
        return exc.lineno
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == name:
            line = tb.tb_lineno  # the innermost template frame is where it was raised
        tb = tb.tb_next
    return line


def _kind(exc: BaseException) -> str:
    if isinstance(exc, UndefinedError):
        return "undefined"
    if isinstance(exc, SecurityError):
        return "unsafe"
    return "render"


def required_only(example: dict[str, Any], schema: Mapping[str, Any]) -> dict[str, Any]:
    """``example`` without the properties ``schema`` does not require, at every depth.

    Objects in arrays are stripped with the array's ``items`` schema. A
    (sub)schema saying nothing of its keys (neither ``properties`` nor
    ``required``, or only ``$ref``/``allOf``...) keeps its value whole: nothing
    is known to be optional there.
    """
    return _required_object(example, schema, "data", [])


def _required_object(
    example: dict[str, Any], schema: Mapping[str, Any], path: str, removed: list[str]
) -> dict[str, Any]:
    if "properties" not in schema and "required" not in schema:
        return dict(example)
    required = set(schema.get("required", ()))
    properties: Mapping[str, Any] = schema.get("properties", {})
    kept: dict[str, Any] = {}
    for key, value in example.items():
        if key not in required:
            removed.append(f"{path}.{key}")
            continue
        kept[key] = _required_value(value, properties.get(key, {}), f"{path}.{key}", removed)
    return kept


def _required_value(value: Any, schema: Any, path: str, removed: list[str]) -> Any:
    schema = schema if isinstance(schema, Mapping) else {}
    if isinstance(value, dict):
        return _required_object(value, schema, path, removed)
    if isinstance(value, list):
        items = schema.get("items", {})
        return [_required_value(item, items, f"{path}[]", removed) for item in value]
    return value


def undefined_findings(
    render: Callable[[dict[str, Any]], str],
    name: str,
    example: dict[str, Any],
    schema: Mapping[str, Any],
) -> list[Finding]:
    """Render with the event's sample data, then with its required fields only.

    The first render finds variables outside the event (``data.plna``); the
    second finds optional fields used without ``is defined`` or ``| default``.
    Each reports its first failure, the second only when it differs from the
    first; a missing field that the schema makes optional says so, with the
    guard to use.
    """
    removed: list[str] = []
    required = _required_object(example, schema, "data", removed)
    failures: list[Finding] = []
    findings: list[Finding] = []
    for sample in (example, required):
        try:
            render(sample)
        except Exception as exc:
            failure = render_finding(exc, name)
            if failure in failures:
                continue
            failures.append(failure)
            hinted = _guard_hint(failure, removed, generic=sample is required)
            findings.append(hinted if failure.kind == "undefined" else failure)
    return findings


_MISSING = re.compile(r"(?:attribute|element) '([^']+)'|^'([^']+)' is undefined")
GUARD = "guard it with `is defined` or `| default`"


def _guard_hint(finding: Finding, removed: list[str], *, generic: bool) -> Finding:
    """``finding`` naming the optional field it is about, if one matches; else a general hint."""
    missing = _MISSING.search(finding.message)
    key = missing and (missing[1] or missing[2])
    for path in dict.fromkeys(removed):
        if key and path.rsplit(".", 1)[-1] == key:
            return replace(finding, message=f"{path} is optional in the event schema: {GUARD}")
    if generic:
        return replace(
            finding, message=f"{finding.message} once optional fields are left out: {GUARD}"
        )
    return finding


# --- HTML balance ---------------------------------------------------------------

VOID_ELEMENTS = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param",
     "source", "track", "wbr"}
)  # fmt: skip
# Elements whose end tag HTML lets one leave out.
OPTIONAL_END = frozenset(
    {"p", "li", "dt", "dd", "tr", "td", "th", "thead", "tbody", "tfoot", "option", "optgroup",
     "rt", "rp", "colgroup", "caption", "html", "head", "body"}
)  # fmt: skip
_JINJA_TAG = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.DOTALL)


def html_findings(source: str) -> list[Finding]:
    """Unbalanced HTML tags in a template's source: unclosed elements and stray end tags.

    Jinja tags are blanked to spaces of the same length first, so lines and
    columns are the source's. These are warnings: an element opened in each
    branch of an ``{% if %}`` and closed once after it is fine, yet counted
    twice here.
    """
    blanked = _JINJA_TAG.sub(lambda tag: re.sub(r"[^\n]", " ", tag[0]), source)
    checker = _Balance()
    checker.feed(blanked)
    checker.close()
    return checker.findings


class _Balance(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.findings: list[Finding] = []
        self._open: list[tuple[str, int, int]] = []  # tag, line, column

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in VOID_ELEMENTS:
            line, offset = self.getpos()
            self._open.append((tag, line, offset + 1))

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID_ELEMENTS:
            return
        if tag not in (open_tag for open_tag, _, _ in self._open):
            line, offset = self.getpos()
            self.findings.append(
                Finding(f"</{tag}> closes no open <{tag}>", line, offset + 1, "html")
            )
            return
        while self._open:
            opened = self._open.pop()
            if opened[0] == tag:
                return
            self._unclosed(*opened)

    def close(self) -> None:
        super().close()
        while self._open:
            self._unclosed(*self._open.pop(0))

    def _unclosed(self, tag: str, line: int, column: int) -> None:
        if tag not in OPTIONAL_END:
            self.findings.append(Finding(f"<{tag}> is never closed", line, column, "html"))


# --- SMS ------------------------------------------------------------------------


def sms_finding(describe: dict[str, str | int], max_segments: int) -> Finding | None:
    """A finding when an SMS body needs more than ``max_segments`` segments.

    ``describe`` is what ``SmsChannel.describe`` returns for the rendered body.
    """
    segments = int(describe.get("segments", 0))
    if segments <= max_segments:
        return None
    return Finding(
        f"{segments} SMS segments ({describe.get('encoding', '?')}), "
        f"more than channels.sms.max_segments = {max_segments}",
        kind="sms_segments",
    )
