"""Read terraform/ with python-hcl2 and evaluate it per module instance, without Terraform.

`terraform validate` and `plan` need the provider registry, which CI cannot reach; these tests need less:
the names, environment variables and messages the configuration would produce. python-hcl2 parses the
files; an `Instance` is a module with its variable values (and `each` inside a for_each), and evaluates
attributes with tests/terraform/hcl_expressions.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any

import hcl2

from tests.terraform.hcl_expressions import EvalError, Unknown, Unsupported, evaluate_attribute

__all__ = ["EvalError", "Instance", "Module", "Unknown", "Unsupported", "block", "blocks", "load_module",
           "module_instance", "root_instance"]  # fmt: skip

REPO = Path(__file__).resolve().parents[2]
TERRAFORM = REPO / "terraform"
_OPTIONS = hcl2.SerializationOptions(with_comments=False, strip_string_quotes=True)


# -- parsed modules -----------------------------------------------------------------------------------


def blocks(value: Any) -> list[dict[str, Any]]:
    """The nested blocks of an attribute (python-hcl2 gives a list of dicts)."""
    return [b for b in (value or []) if isinstance(b, dict)]


def block(body: dict[str, Any], name: str) -> dict[str, Any]:
    """The one nested block `name` of a body."""
    found = blocks(body.get(name))
    assert len(found) == 1, f"expected one {name} block, found {len(found)}"
    return found[0]


@dataclass
class Module:
    """The top-level blocks of one Terraform module folder."""

    path: Path
    files: list[str]
    variables: dict[str, dict[str, Any]] = field(default_factory=dict)
    locals: dict[str, Any] = field(default_factory=dict)
    resources: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    data: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    modules: dict[str, dict[str, Any]] = field(default_factory=dict)
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    terraform: list[dict[str, Any]] = field(default_factory=list)

    def resource(self, kind: str, name: str) -> dict[str, Any]:
        return self.resources[(kind, name)]

    def of_type(self, kind: str) -> dict[str, dict[str, Any]]:
        return {name: body for (k, name), body in self.resources.items() if k == kind}


@cache
def load_module(path: Path) -> Module:
    """Parse every .tf file of a folder into one Module."""
    module = Module(path=path, files=sorted(p.name for p in path.glob("*.tf")))
    for name in module.files:
        with (path / name).open() as handle:
            parsed = hcl2.load(handle, serialization_options=_OPTIONS)
        for item in parsed.get("variable", []):
            module.variables.update(item)
        for item in parsed.get("locals", []):
            module.locals.update({k: v for k, v in item.items() if not k.startswith("__")})
        for item in parsed.get("module", []):
            module.modules.update(item)
        for item in parsed.get("output", []):
            module.outputs.update(item)
        for kind, target in (("resource", module.resources), ("data", module.data)):
            for item in parsed.get(kind, []):
                for rtype, named in item.items():
                    target.update({(rtype, rname): body for rname, body in named.items()})
        module.terraform.extend(parsed.get("terraform", []))
    return module


# -- evaluation ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instance:
    """A module as Terraform would evaluate it: variable values, and `each` inside a for_each."""

    module: Module
    variables: dict[str, Any]
    root: Path
    each: tuple[str, Any] | None = None

    def eval(self, value: Any) -> Any:
        """The value of an attribute as python-hcl2 gives it (a template string, dict, list or literal)."""
        if isinstance(value, dict):
            return {k: self.eval(v) for k, v in value.items() if not k.startswith("__")}
        if isinstance(value, list):
            return [self.eval(v) for v in value]
        if isinstance(value, str):
            return evaluate_attribute(value, self)
        return value

    def local(self, name: str) -> Any:
        return replace(self, each=None).eval(self.module.locals[name])

    def paths(self) -> dict[str, str]:
        return {"module": str(self.module.path), "root": str(self.root)}

    def with_each(self, key: str, value: Any) -> Instance:
        return replace(self, each=(key, value))

    def for_each(self, body: dict[str, Any]) -> dict[str, Any]:
        """The keys and values a block's for_each iterates over."""
        values = self.eval(body["for_each"])
        assert isinstance(values, dict), f"for_each is not a known map: {values!r}"
        return values


def root_instance(variables: dict[str, Any]) -> Instance:
    """terraform/ with its variable defaults, overridden by `variables` (required ones must be given)."""
    module = load_module(TERRAFORM)
    return Instance(module, _variable_values(module, variables, lambda v: v), TERRAFORM)


def module_instance(parent: Instance, call: str, key: str | None = None) -> Instance:
    """The child module `call` of `parent` (its `key` instance when the call has for_each)."""
    body = parent.module.modules[call]
    if "for_each" in body:
        assert key is not None, f"module {call} has for_each: name the instance"
        parent = parent.with_each(key, parent.for_each(body)[key])
    module = load_module((parent.module.path / body["source"]).resolve())
    given = {name: body[name] for name in module.variables if name in body}
    return Instance(module, _variable_values(module, given, parent.eval), parent.root)


def _variable_values(module: Module, given: dict[str, Any], evaluate: Any) -> dict[str, Any]:
    for name, spec in module.variables.items():
        if name not in given and "default" not in spec:
            raise KeyError(f"variable {name} of {module.path} has no default and was not given")
    return _Variables(module, given, evaluate)


class _Variables(dict):
    """`var.NAME`, evaluated when asked for: an argument a test never reads may be beyond hcl_config."""

    def __init__(self, module: Module, given: dict[str, Any], evaluate: Any) -> None:
        super().__init__()
        self.module, self.given, self.evaluate = module, given, evaluate

    def __getitem__(self, name: str) -> Any:
        if name in self.given:
            return self.evaluate(self.given[name])
        return Instance(self.module, {}, self.module.path).eval(self.module.variables[name]["default"])
