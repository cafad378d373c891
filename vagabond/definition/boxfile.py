"""Loading box files: boxes/<name>.yaml read strictly (bounded in size and aliases), every problem
reported as file:line: field: message; the boxes of a project and of vagabond, and finding one."""

from __future__ import annotations

import datetime
import difflib
import re
import typing
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import AliasEvent

from vagabond.definition.schema import Box, BoxSpec, ImageBase, MmdebstrapBase, VagrantBase, _Strict, resolve_playbook
from vagabond.errors import BoxDefinitionError, BoxNotFound

BOX_FILE_NAME = re.compile(r"[a-z0-9][a-z0-9._-]*")


def display_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def load_box(path: Path) -> Box:
    """Load and validate one box file; raise BoxDefinitionError listing every problem with its line."""
    shown = display_path(path)
    name = path.name.removesuffix(".yaml").removesuffix(".yml")
    if not BOX_FILE_NAME.fullmatch(name):
        raise BoxDefinitionError(
            [f"{shown}:1: box file name {name!r} must be lowercase letters, digits, '.', '_' or '-'"]
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise BoxDefinitionError([f"{shown}:1: not UTF-8 text ({exc.reason})"]) from None
    except OSError as exc:
        raise BoxNotFound(f"cannot read box file {shown}: {exc.strerror}") from None
    if len(text) > BOX_FILE_MAX:
        raise BoxDefinitionError(
            [f"{shown}:1: a box file is at most {BOX_FILE_MAX // 1024} KiB ({len(text) // 1024} KiB given)"]
        )
    yaml = YAML(typ="rt")
    try:
        _check_aliases(yaml, text, shown)
        doc = yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        problem = exc.problem or exc.context or "invalid YAML"
        raise BoxDefinitionError([f"{shown}:{line}: YAML syntax error: {problem}"]) from None
    except YAMLError as exc:  # e.g. the reader's "special characters are not allowed", with a position
        line = text[: getattr(exc, "position", 0) or 0].count("\n") + 1
        problem = " ".join(str(exc).split("\n")[0].split()) or "invalid YAML"
        raise BoxDefinitionError([f"{shown}:{line}: YAML syntax error: {problem}"]) from None
    if not isinstance(doc, CommentedMap):
        raise BoxDefinitionError([f"{shown}:1: a box file must be a mapping of keys (description, base, ...)"])
    odd = [f"{shown}:{_line_of(doc, loc)}: {_label(doc, loc) or 'value'}: {why}" for loc, why in _unsupported(doc)]
    if odd:
        raise BoxDefinitionError(odd)
    unencodable = [
        f"{shown}:{_line_of(doc, loc)}: {_label(doc, loc) or 'key'}: a lone surrogate ({bad!r}) is not "
        "text; write the character itself"
        for loc, bad in _surrogates(doc)
    ]
    if unencodable:
        raise BoxDefinitionError(unencodable)
    try:
        spec = BoxSpec.model_validate(_plain(doc))
    except ValidationError as exc:
        found = sorted((_line_of(doc, _error_loc(err)), _format_error(shown, doc, err)) for err in exc.errors())
        raise BoxDefinitionError([text for _, text in found]) from None
    box = Box(name=name, path=path, spec=spec)
    missing = [
        f"{shown}:{_line_of(doc, ('playbooks', i))}: playbooks[{i}].path: {p.path!r} does not exist"
        for i, p in enumerate(spec.playbooks)
        if not resolve_playbook(box, p.path).is_file()
    ]
    if missing:
        raise BoxDefinitionError(missing)
    return box


# A box file is a page of YAML: bounded in size and in aliases, so a file of a few hundred bytes
# cannot expand into billions of nodes (the "billion laughs").
BOX_FILE_MAX = 256 * 1024
MAX_ALIASES = 64
MAX_NODES = 20000


def _check_aliases(yaml: YAML, text: str, shown: str) -> None:
    aliases = 0
    for event in yaml.parse(text):
        if isinstance(event, AliasEvent):
            aliases += 1
            if aliases > MAX_ALIASES:
                line = event.start_mark.line + 1 if event.start_mark else 1
                raise BoxDefinitionError(
                    [f"{shown}:{line}: more than {MAX_ALIASES} YAML aliases (*name): write the values out"]
                )


def _unsupported(node: Any, loc: tuple = (), budget: list | None = None) -> Iterator[tuple[tuple, str]]:
    """Values a box file cannot hold, with where they are: what YAML's tags make that JSON (site.yml,
    the definition digest, Ansible's extra vars) cannot carry; and a document that expands into
    more than MAX_NODES values."""
    budget = [MAX_NODES] if budget is None else budget
    budget[0] -= 1
    if budget[0] < 0:
        if budget[0] == -1:
            yield loc, f"the document expands into more than {MAX_NODES} values"
        return
    if isinstance(node, dict):
        for key, value in node.items():
            if not isinstance(key, (str, int)) or isinstance(key, bool):
                yield loc, f"a key must be text, not {type(key).__name__}"
            yield from _unsupported(value, loc + (key,), budget)
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from _unsupported(value, loc + (i,), budget)
    elif isinstance(node, (set, frozenset)) or type(node).__name__ in ("CommentedSet", "CommentedOrderedMap"):
        yield loc, "a set (!!set) is not supported: write a list"
    elif isinstance(node, bytes):
        yield loc, "binary data (!!binary) is not supported: write text"
    elif isinstance(node, float) and (node != node or node in (float("inf"), float("-inf"))):
        yield loc, "NaN and infinity are not supported"
    elif node is not None and not isinstance(node, (str, int, float, bool, datetime.date)):
        yield loc, f"a {type(node).__name__} value is not supported"


_SURROGATE = re.compile(r"[\ud800-\udfff]")


def _surrogates(node: Any, loc: tuple = ()) -> Iterator[tuple[tuple, str]]:
    """Strings YAML's \\uXXXX escapes made that no UTF-8 output can hold (every one, with where it is)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(key, str) and (m := _SURROGATE.search(key)):
                yield loc, m.group()
            yield from _surrogates(value, loc + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _surrogates(value, loc + (i,))
    elif isinstance(node, str) and (m := _SURROGATE.search(node)):
        yield loc, m.group()


def _plain(node: Any) -> Any:
    """ruamel's round-trip types -> plain dict/list/str/int/float/bool, so strict mode sees plain types."""
    if isinstance(node, dict):
        return {str(k) if not isinstance(k, (int, bool)) else k: _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    if isinstance(node, bool):
        return bool(node)
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    if isinstance(node, str):
        return str(node)
    if isinstance(node, datetime.date):  # an unquoted date (release: 2024-01-01): Ansible gets it as text
        return node.isoformat()
    return node


def _walk(doc: Any, loc: tuple) -> Iterator[tuple[Any, Any, Any]]:
    """Follow a pydantic error location through the YAML document: yields (parent, key, label).

    Location parts that are not in the data (union tags such as 'vagrant', validator names) are
    skipped so the user sees the path as written in the file.
    """
    node = doc
    for part in loc:
        if isinstance(node, CommentedMap) and part in node:
            yield node, part, str(part)
            node = node[part]
        elif isinstance(node, CommentedSeq) and isinstance(part, int) and 0 <= part < len(node):
            yield node, part, f"[{part}]"
            node = node[part]
        elif isinstance(node, CommentedMap) and isinstance(part, str) and not _is_tag(part):
            # A key that is missing from the data: name it, report at its parent.
            yield node, None, part
            return
        # else: a union tag or validator name pydantic put in the location; not in the file.


_TAGS = {"vagrant", "mmdebstrap", "image", "str", "int"}


def _is_tag(part: str) -> bool:
    return part in _TAGS or "[" in part or part.startswith("function-")


def _line_of(doc: CommentedMap, loc: tuple) -> int:
    line = 0
    for parent, key, _ in _walk(doc, loc):
        if key is None:
            line = parent.lc.line
            continue
        if isinstance(parent, CommentedMap):
            line = parent.lc.key(key)[0]
        else:
            line = parent.lc.item(key)[0]
    return line + 1


def _label(doc: CommentedMap, loc: tuple) -> str:
    label = ""
    for _, _, part in _walk(doc, loc):
        label += part if part.startswith("[") or not label else "." + part
    return label


_BASE_KINDS = {"vagrant": VagrantBase, "mmdebstrap": MmdebstrapBase, "image": ImageBase}


def _error_loc(err: dict) -> tuple:
    loc = tuple(err.get("loc", ()))
    if err.get("type") == "union_tag_invalid":
        return loc + ("kind",)
    if len(loc) > 1 and loc[0] == "base" and loc[1] in _BASE_KINDS:
        # pydantic names the tagged union's member ('image'), which is not a key of the file (and
        # 'image' is also a real key of an image base): keep it out of the path.
        return (loc[0], *loc[2:])
    return loc


def _format_error(shown: str, doc: CommentedMap, err: dict) -> str:
    loc = _error_loc(err)
    message = err["msg"]
    kind = err.get("type")
    if kind == "extra_forbidden":
        raw = tuple(err.get("loc", ()))
        model = _BASE_KINDS[raw[1]] if len(raw) > 2 and raw[0] == "base" and raw[1] in _BASE_KINDS else None
        known = list(model.model_fields) if model is not None and len(raw) == 3 else _known_keys(loc[:-1])
        message = "unknown key" + _did_you_mean(str(loc[-1]), known)
    elif kind == "missing":
        message = "required key is missing"
    elif kind in ("value_error", "assertion_error"):
        message = message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    elif "input" in err and isinstance(err["input"], (str, int, float, bool)) and kind != "missing":
        message += f" (got {err['input']!r})"  # the offending value, echoed
    if kind in ("greater_than_equal", "less_than_equal") and loc and loc[-1] in ("memory", "disk"):
        message += f"; {loc[-1]} is in {'MiB' if loc[-1] == 'memory' else 'GiB'} unless it has a unit (2G, 2048M)"
    elif kind == "union_tag_invalid":
        message = f"must be one of: vagrant, mmdebstrap, image (got {err.get('input', {}).get('kind')!r})"
    label = _label(doc, loc)
    return f"{shown}:{_line_of(doc, loc)}: {label + ': ' if label else ''}{message}"


def _known_keys(loc: tuple) -> list[str]:
    """The keys the schema takes where an unknown one was found (every key of every part, when
    the place cannot be told)."""
    model: Any = BoxSpec
    for part in loc:
        if isinstance(part, int):
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:  # a tagged union member (base: mmdebstrap ...) or a mapping
            model = None
            break
        model = _model_of(field.annotation)
    if model is not None and hasattr(model, "model_fields"):
        return list(model.model_fields)
    return sorted({k for m in _Strict.__subclasses__() + [MmdebstrapBase, ImageBase] for k in m.model_fields})


def _model_of(annotation: Any) -> Any:
    """The pydantic model inside list[...], Optional[...] and Annotated[...], if any."""
    if hasattr(annotation, "model_fields"):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _did_you_mean(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if close:
        return f": did you mean {close[0]!r}?"
    return (
        f" (this place takes: {', '.join(sorted(known))})"
        if len(known) <= 12
        else " (see the box reference in README.md)"
    )


def box_files(directory: Path) -> list[Path]:
    found = (p for p in directory.glob("*.y*ml") if p.suffix in (".yaml", ".yml") and p.is_file())
    return sorted(found, key=lambda p: p.stem)


# Where boxes are looked up: one directory, or (directory, origin) pairs in order (project.box_dirs).
BoxDirs = Path | Sequence[tuple[Path, str]]


def _dirs(where: BoxDirs) -> list[tuple[Path, str]]:
    dirs = [(where, "")] if isinstance(where, Path) else list(where)
    for directory, origin in dirs:
        # A directory the user named must exist; the project's boxes/ may not (yet).
        if origin != "project" and not directory.is_dir():
            raise BoxNotFound(f"boxes directory {display_path(directory)} does not exist")
    return [(d, o) for d, o in dirs if d.is_dir()]


@dataclass(frozen=True)
class Listed:
    """One box name as `vagabond list` shows it: the box, or why its file does not load."""

    name: str
    origin: str
    path: Path
    box: Box | None
    problems: tuple[str, ...] = ()
    overrides: str | None = None  # the origin of a box of the same name that this one hides


def scan(where: BoxDirs) -> list[Listed]:
    """Every box name, the first directory's file winning; a broken file is an entry with its problems."""
    entries: dict[str, Listed] = {}
    for directory, origin in _dirs(where):
        for path in box_files(directory):
            name = path.name.removesuffix(".yaml").removesuffix(".yml")
            if name in entries:
                if entries[name].overrides is None and entries[name].origin != origin:
                    entries[name] = replace(entries[name], overrides=origin)
                continue
            try:
                entries[name] = Listed(name, origin, path, replace(load_box(path), origin=origin))
            except (BoxDefinitionError, BoxNotFound) as exc:
                problems = tuple(exc.problems) if isinstance(exc, BoxDefinitionError) else (str(exc),)
                entries[name] = Listed(name, origin, path, None, problems)
    return sorted(entries.values(), key=lambda e: e.name)


def list_boxes(where: BoxDirs) -> list[Box]:
    """Load every box; all problems of all files are reported together."""
    entries = scan(where)
    problems = [p for e in entries for p in e.problems]
    if problems:
        raise BoxDefinitionError(problems)
    return [e.box for e in entries if e.box is not None]


def default_selection(where: BoxDirs) -> list[Box]:
    """The boxes a command means when none is named: the project's own, or the shipped boxes
    when the project has none yet. A broken file among them is an error (all problems together)."""
    loaded = list_boxes(where)
    own = [b for b in loaded if b.origin != "shipped"]
    return own or loaded


def find_box(name: str, where: BoxDirs) -> Box:
    dirs = _dirs(where)
    for directory, origin in dirs:
        for suffix in (".yaml", ".yml"):
            path = directory / f"{name}{suffix}"
            if path.is_file():
                return replace(load_box(path), origin=origin)
    available = ", ".join(sorted({p.stem for d, _ in dirs for p in box_files(d)})) or "none"
    searched = (
        " or ".join("the shipped boxes" if o == "shipped" else display_path(d) for d, o in dirs) or "no boxes directory"
    )
    raise BoxNotFound(f"no box named {name!r} in {searched} (available: {available})")
