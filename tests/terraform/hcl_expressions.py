"""Evaluate the plain HCL expressions terraform/ is written in, as Terraform would, without Terraform.

Supported: literals, templates with ${...}, references (var, local, each, path; anything else is an
`Unknown` known only after apply, which remembers its expression), attribute and index access, objects,
lists, conditionals, == != && || !, and the functions tostring, merge, replace, file, yamldecode,
jsonencode, base64encode, coalesce and try. Anything else raises `Unsupported`, so a test fails loudly
instead of checking nothing.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import yaml


class Unsupported(Exception):
    """An expression these tests cannot evaluate: keep the Terraform simple, or teach this module."""


class EvalError(Exception):
    """Evaluation failed the way Terraform's would (e.g. an attribute of null); `try` catches it."""


@dataclass(frozen=True)
class Unknown:
    """A value known only after apply, e.g. `module.kms.crypto_key_id`."""

    expr: str


class Scope(Protocol):
    """Where an expression is evaluated: a module instance (tests/terraform/hcl_config.Instance)."""

    variables: dict[str, Any]
    each: tuple[str, Any] | None

    def local(self, name: str) -> Any: ...

    def paths(self) -> dict[str, str]: ...


def evaluate_attribute(value: str, scope: Scope) -> Any:
    """The value of an attribute python-hcl2 gives as a string: a template, maybe one whole ${...}."""
    return _evaluate(_template(value, 0, len(value)), scope)


# A template is text with ${...} interpolations; an expression is parsed into tuples, then evaluated.
_TOKEN = re.compile(
    r"\s*(?:(?P<num>\d+(?:\.\d+)?)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<op>==|!=|&&|\|\||=>|[?:.,\[\](){}=!<>*+-]))"
)


def _close(text: str, start: int) -> int:
    """Index of the `}` closing the interpolation whose body starts at `start`."""
    depth, i = 1, start
    while i < len(text):
        char = text[i]
        if char == '"':
            i = _string_end(text, i + 1)
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise Unsupported(f"unbalanced interpolation in {text!r}")


def _string_end(text: str, i: int) -> int:
    """Index just past the `"` closing a quoted string whose content starts at `i`."""
    while i < len(text):
        if text[i] == "\\":
            i += 2
        elif text.startswith("${", i):
            i = _close(text, i + 2) + 1
        elif text[i] == '"':
            return i + 1
        else:
            i += 1
    raise Unsupported(f"unterminated string in {text!r}")


def _template(text: str, start: int, end: int, *, quoted: bool = False) -> tuple:
    parts: list[Any] = []
    i, literal = start, []
    while i < end:
        if text.startswith("$${", i):
            literal.append("${")
            i += 3
        elif text.startswith("${", i):
            close = _close(text, i + 2)
            if literal:
                parts.append("".join(literal))
                literal = []
            parts.append(_parse(text[i + 2 : close]))
            i = close + 1
        elif quoted and text[i] == "\\":
            literal.append({"n": "\n", "t": "\t"}.get(text[i + 1], text[i + 1]))
            i += 2
        else:
            literal.append(text[i])
            i += 1
    if literal:
        parts.append("".join(literal))
    return ("template", parts)


class _Parser:
    def __init__(self, text: str) -> None:
        self.text, self.pos = text, 0

    def peek(self) -> tuple[str, str] | None:
        if self.text[self.pos :].strip() == "":
            return None
        if self.text[self.pos :].lstrip().startswith('"'):
            return ("str", '"')
        match = _TOKEN.match(self.text, self.pos)
        if not match:
            raise Unsupported(f"cannot read {self.text[self.pos :]!r}")
        kind = match.lastgroup or "op"
        return (kind, match.group(kind))

    def take(self, expected: str | None = None) -> tuple[str, str]:
        token = self.peek()
        if token is None or (expected is not None and token[1] != expected):
            raise Unsupported(f"expected {expected!r} at {self.text[self.pos :]!r} in {self.text!r}")
        if token[0] == "str":
            start = self.text.index('"', self.pos) + 1
            self.pos = _string_end(self.text, start)
            return ("str", self.text[start : self.pos - 1])
        self.pos = _TOKEN.match(self.text, self.pos).end()  # type: ignore[union-attr]
        return token

    def expression(self) -> tuple:
        condition = self.binary(0)
        if self.peek() == ("op", "?"):
            self.take("?")
            when_true = self.expression()
            self.take(":")
            return ("cond", condition, when_true, self.expression())
        return condition

    _LEVELS = (("||",), ("&&",), ("==", "!="))

    def binary(self, level: int) -> tuple:
        if level == len(self._LEVELS):
            return self.unary()
        left = self.binary(level + 1)
        while (token := self.peek()) and token[0] == "op" and token[1] in self._LEVELS[level]:
            self.take()
            left = ("binary", token[1], left, self.binary(level + 1))
        return left

    def unary(self) -> tuple:
        if self.peek() == ("op", "!"):
            self.take()
            return ("not", self.unary())
        node = self.primary()
        while (token := self.peek()) in (("op", "."), ("op", "[")):
            self.take()
            if token[1] == ".":
                node = ("attr", node, self.take()[1])
            else:
                node = ("index", node, self.expression())
                self.take("]")
        return node

    def primary(self) -> tuple:
        kind, value = self.take()
        if kind == "num":
            return ("literal", float(value) if "." in value else int(value))
        if kind == "str":
            return _template(value, 0, len(value), quoted=True)
        if kind == "name":
            if value in ("true", "false", "null"):
                return ("literal", {"true": True, "false": False, "null": None}[value])
            if value == "for":
                raise Unsupported(f"for expressions are not evaluated: {self.text!r}")
            if self.peek() == ("op", "("):
                self.take("(")
                return ("call", value, self.sequence(")"))
            return ("ref", value)
        if value == "(":
            inner = self.expression()
            self.take(")")
            return inner
        if value == "[":
            return ("list", self.sequence("]"))
        if value == "{":
            return self.object()
        raise Unsupported(f"unexpected {value!r} in {self.text!r}")

    def sequence(self, closing: str) -> list[tuple]:
        items = []
        while self.peek() != ("op", closing):
            items.append(self.expression())
            if self.peek() == ("op", ","):
                self.take(",")
        self.take(closing)
        return items

    def object(self) -> tuple:
        items = []
        while self.peek() != ("op", "}"):
            if self.peek() == ("name", "for"):
                raise Unsupported(f"for expressions are not evaluated: {self.text!r}")
            key_kind, key = self.take()
            key_node = _template(key, 0, len(key), quoted=True) if key_kind == "str" else ("literal", key)
            self.take(self.peek()[1] if self.peek() in (("op", "="), ("op", ":")) else "=")  # type: ignore[index]
            items.append((key_node, self.expression()))
            if self.peek() == ("op", ","):
                self.take(",")
        self.take("}")
        return ("object", items)


def _parse(text: str) -> tuple:
    parser = _Parser(text)
    node = parser.expression()
    if parser.peek() is not None:
        raise Unsupported(f"cannot read past {text[parser.pos :]!r} in {text!r}")
    return node


def _source(node: tuple) -> str:
    """A readable form of an expression (what an Unknown remembers)."""
    kind = node[0]
    if kind == "ref":
        return node[1]
    if kind == "attr":
        return f"{_source(node[1])}.{node[2]}"
    if kind == "index":
        index = node[2]
        shown = json.dumps(index[1]) if index[0] == "literal" else _source(index)
        return f"{_source(node[1])}[{shown}]"
    return repr(node)


def _evaluate(node: tuple, scope: Scope) -> Any:
    kind = node[0]
    if kind == "literal":
        return node[1]
    if kind == "template":
        values = [part if isinstance(part, str) else _evaluate(part, scope) for part in node[1]]
        if len(values) == 1 and not isinstance(node[1][0], str):
            return values[0]
        if any(isinstance(v, Unknown) for v in values):
            return Unknown("".join(v.expr if isinstance(v, Unknown) else _text(v) for v in values))
        return "".join(_text(v) for v in values)
    if kind == "ref":
        return _reference(node[1], scope)
    if kind in ("attr", "index"):
        target = _evaluate(node[1], scope)
        key = node[2] if kind == "attr" else _evaluate(node[2], scope)
        if isinstance(target, Unknown):
            step = (
                ("index", ("ref", target.expr), ("literal", key))
                if kind == "index"
                else ("attr", ("ref", target.expr), key)
            )
            return Unknown(_source(step))
        if isinstance(key, Unknown):
            return Unknown(_source(node))
        try:
            return target[key]
        except (KeyError, IndexError, TypeError):
            raise EvalError(f"{_source(node)}: no {key!r} in {target!r}") from None
    if kind == "object":
        return {_evaluate(k, scope): _evaluate(v, scope) for k, v in node[1]}
    if kind == "list":
        return [_evaluate(item, scope) for item in node[1]]
    if kind == "cond":
        condition = _evaluate(node[1], scope)
        if isinstance(condition, Unknown):
            return Unknown(f"conditional on {condition.expr}")
        return _evaluate(node[2] if condition else node[3], scope)
    if kind == "not":
        return not _evaluate(node[1], scope)
    if kind == "binary":
        left, right = _evaluate(node[2], scope), _evaluate(node[3], scope)
        return {"==": lambda: left == right, "!=": lambda: left != right,
                "&&": lambda: left and right, "||": lambda: left or right}[node[1]]()  # fmt: skip
    if kind == "call":
        return _call(node[1], node[2], scope)
    raise Unsupported(f"cannot evaluate {node!r}")


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)) or value is None:
        raise EvalError(f"cannot put {value!r} in a string")
    return str(value)


def _reference(name: str, scope: Scope) -> Any:
    if name == "var":
        return scope.variables
    if name == "local":
        return _Locals(scope)
    if name == "each":
        if scope.each is None:
            raise EvalError("each outside a for_each")
        return {"key": scope.each[0], "value": scope.each[1]}
    if name == "path":
        return scope.paths()
    return Unknown(name)  # module.*, data.*, resources: known after apply


class _Locals(dict):
    """`local.NAME`, evaluated when asked for (locals may refer to each other)."""

    def __init__(self, scope: Scope) -> None:
        super().__init__()
        self.scope = scope

    def __getitem__(self, name: str) -> Any:
        return self.scope.local(name)


def _call(name: str, args: list[tuple], scope: Scope) -> Any:
    if name == "try":
        for arg in args:
            try:
                return _evaluate(arg, scope)
            except EvalError:
                continue
        raise EvalError("no argument of try() could be evaluated")
    values = [_evaluate(arg, scope) for arg in args]
    if any(isinstance(v, Unknown) for v in values):
        return Unknown(f"{name}(...)")
    functions = {
        "tostring": lambda v: _text(v),
        "merge": lambda *maps: {k: v for m in maps for k, v in m.items()},
        "replace": lambda text, old, new: text.replace(old, new),
        "file": lambda path: Path(path).read_text(),
        "yamldecode": lambda text: yaml.safe_load(text),
        "jsonencode": lambda value: json.dumps(value, separators=(",", ":"), sort_keys=True),
        "base64encode": lambda text: base64.b64encode(text.encode()).decode(),
        "coalesce": lambda *items: next(v for v in items if v not in (None, "")),
    }
    if name not in functions:
        raise Unsupported(f"function {name}() is not evaluated by tests/terraform/hcl_config.py")
    return functions[name](*values)
