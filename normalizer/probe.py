"""Which templates of a chart can render differently from one render to the next: the probe.

A chart that generates values (`normalizer.determinism`) is rendered a second time to name the
fields that differ. Rendering the whole chart again costs as much as the first render, while
what can differ is usually one Secret: kube-prometheus-stack renders 250 templates, megabytes
of dashboards among them, to generate Grafana's admin password in one. So the second render is
a probe: a chart holding only the templates whose output can differ, those they need, and what
Helm reads to load every chart (Chart.yaml, values, schemas); the same templates of the first
render are compared with it.

The templates are read as Go's text/template reads them, as far as it matters here: actions
between `{{` and `}}` (strings, raw strings and comments inside them skipped), the named
templates each file defines (`define`, `block`), and what each file and each named template
calls. A template file is in the probe, conservatively, when it or any template it includes or
calls with `template` (transitively, through subcharts too: named templates are global to a
chart):

- calls a function whose result differs between renders (`NONDETERMINISTIC_FUNCTIONS`: the
  generating ones, `now`, `lookup`, DNS, and sprig's `keys`/`values`, whose order follows
  Go's map order);
- calls `tpl` while a text it may render calls one of those or includes a template
  (`tpl_text`: the values given, the charts' default values, their other files when a
  template reads `.Files`, and the strings in the templates' actions are looked at);
- changes a dictionary that is not a new `(dict ...)` (`set`, `unset`, `merge`...): Helm
  renders the templates one after the other with the same values, so such a change is seen
  by the templates rendered after it, and the probe must make it too.

A template that does both (a generated value stored where any template may read it) gives no
probe: the whole chart is rendered again. So does a template the probe renders that includes
a template by a name computed otherwise than the checksum idiom below.

Every file that defines a named template is kept (a later definition replaces an earlier one
of the same name, so which files define what must not change), and so is every template file
a kept one includes by its path (`include (print $.Template.BasePath "/config.yaml")`, the
checksum idiom). A chart's other files (its `crds/` among them) are kept when a kept template
of that chart reads `.Files`, itself or through the named templates it calls.

Not followed: template text assembled piece by piece from strings that do not hold a whole
action (`print "{{ rand" "AlphaNum 4 }}"`) and then rendered by `tpl`.

Where it can be shown to change nothing Helm renders, the probe is no second engine call:
the template files whose output can differ are rendered beside a copy of each in the chart's
own render (`ChartTemplates.copies`, which says when it cannot be shown).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from normalizer.determinism import GENERATING_FUNCTIONS

NONDETERMINISTIC_FUNCTIONS = frozenset(
    (*GENERATING_FUNCTIONS, "lookup", "getHostByName", "keys", "values")
)
"""Functions whose result may differ between two renders of the same inputs."""
MUTATING_FUNCTIONS = frozenset(
    ("set", "unset", "merge", "mergeOverwrite", "mustMerge", "mustMergeOverwrite")
)
"""Sprig functions that change a dictionary in place."""

_DQ = r'"[^"\\\n]*(?:\\.[^"\\\n]*)*"'
_CHAR = r"'[^'\\\n]*(?:\\.[^'\\\n]*)*'"
_ACTION = re.compile(
    r"\{\{([^\"`'}/]*(?:(?:"
    + _DQ
    + "|`[^`]*`|"
    + _CHAR
    + r"|/\*.*?\*/|/|\}(?!\}))[^\"`'}/]*)*)\}\}",
    re.DOTALL,
)
"""One action's text; strings, raw strings, characters and comments may hold `}}`."""
_RAW_AND_COMMENTS = re.compile("(" + _DQ + "|" + _CHAR + r")|(`)[^`]*`|/\*.*?\*/", re.DOTALL)
"""Strings (group 1), raw strings (group 2) and comments."""
_STRINGS = re.compile(_DQ + "|" + _CHAR + "|``")
_NAMES = tuple(sorted({*NONDETERMINISTIC_FUNCTIONS, *MUTATING_FUNCTIONS, "tpl"}))
_NAME = {name: re.compile(name + r"(?![\w.$])") for name in _NAMES}


def _kept_literal(found: re.Match[str]) -> str:
    """`_RAW_AND_COMMENTS`' replacement: strings kept, raw strings emptied, comments dropped."""
    return found.group(1) or ("``" if found.group(2) else "")


_SHARED_PARTS = ("rand", "gen", "erge", "set")


def _shared_part(name: str) -> str:
    return next((part for part in _SHARED_PARTS if part in name), name)


_NAMES_BY_PART = {
    part: [name for name in _NAMES if _shared_part(name) == part]
    for part in dict.fromkeys(map(_shared_part, _NAMES))
}
"""`_NAMES` by a part several of them share (`rand` for `randAlpha`, `randInt`...): a code
without that part calls none of them."""


def _names_called(code: str) -> set[str]:
    """Which of `_NAMES` `code` (strings emptied) calls: found as fixed strings first, since
    this runs over every action of a chart."""
    called = set()
    for part, names in _NAMES_BY_PART.items():
        if part not in code:
            continue
        for name in names:
            if name in code:
                called |= _whole_name_called(name, code)
    return called


def _whole_name_called(name: str, code: str) -> set[str]:
    """{name} if `code` calls `name` (not a longer name, a field or a variable), or {}."""
    for found in _NAME[name].finditer(code):
        before = code[found.start() - 1] if found.start() > 0 else " "
        if not (before.isalnum() or before in "_.$"):
            return {name}
    return set()


_CALLS = tuple(
    re.compile(word + r"(?![\w.$])\s*(" + _DQ + ")?") for word in ("include", "template")
)
_NESTED_VARYING = re.compile(
    r"(?<![\w.$])(?:"
    + "|".join(sorted({*NONDETERMINISTIC_FUNCTIONS, "include", "template"}))
    + r")(?![\w.$])"
)
_NESTED_CHANGING = re.compile(
    r"(?<![\w.$])(?:"
    + "|".join(sorted({*MUTATING_FUNCTIONS, "include", "template"}))
    + r")(?![\w.$])"
)
"""In an action of a text that `tpl` may render: a call of what varies (or changes state), or
of another template, which may."""
_TOKEN = re.compile(
    "(" + _DQ + r")|`([^`]*)`|" + _CHAR + r"|/\*.*?\*/"
    r"|((?:\$\.?|\.)?[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)|(\S)",
    re.DOTALL,
)
_CHART_TEMPLATES = re.compile(r"[^/]+(?:/charts/[^/]+)*/templates(?=/)")
"""`.Template.BasePath` of a template file: its chart's templates directory."""


def is_template_file(name: str) -> bool:
    """Whether a file of a chart archive is a template (under a chart's `templates/`)."""
    return _CHART_TEMPLATES.match(name) is not None


_OPENS = frozenset(("if", "range", "with", "define", "block"))


@dataclass
class _Unit:
    """A template file's own text (outside its definitions) or one named template."""

    varies: bool = False
    mutates: bool = False
    calls: set[str] = field(default_factory=set)
    uses_files: bool = False
    renders_text: bool = False
    """It calls `tpl`."""
    dynamic: bool = False
    """It calls a template by a name computed while rendering: any template at all."""
    names_template: bool = False
    """It reads `.Template` otherwise than as `.Template.BasePath` (its `.Name` above all),
    or names something `Template`: what differs between a template and a copy of it."""


@dataclass
class _File:
    top: _Unit
    defines: dict[str, _Unit]
    template_text: TplText = field(default_factory=lambda: TplText())
    """What the strings of its actions do, rendered by `tpl`."""

    @property
    def units(self) -> tuple[_Unit, ...]:
        return (self.top, *self.defines.values())


def _string(token: re.Match[str]) -> str | None:
    quoted, raw = token.group(1), token.group(2)
    if raw is not None:
        return raw
    if quoted is None:
        return None
    if "\\" not in quoted:
        return quoted[1:-1]
    return quoted[1:-1].encode("utf-8", "backslashreplace").decode("unicode_escape")


def _called_name(
    tokens: list[re.Match[str]], at: int, dollar_base: str | None, dot_base: str | None
) -> str | None:
    """The template name `include`/`template` at `tokens[at]` calls: a string, or the file's
    `.Template.BasePath` joined to a string by `print`/`printf "%s/..."` (the checksum idiom)
    where the context says whose base path it is (`dollar_base` for `$.Template.BasePath`,
    `dot_base` for `.Template.BasePath`); None for any other name."""
    rest = tokens[at + 1 : at + 6]
    if rest:
        name = _string(rest[0])
        if name is not None:
            return name
    texts = [token.group(0) for token in rest]
    bases = {"$.Template.BasePath": dollar_base, ".Template.BasePath": dot_base}
    if len(texts) >= 4 and texts[0] == "(":
        if texts[1] == "print" and bases.get(texts[2]) is not None:
            suffix = _string(rest[3])
            if suffix is not None:
                return f"{bases[texts[2]]}{suffix}"
        if texts[1] == "printf" and bases.get(texts[3]) is not None:
            pattern = _string(rest[2])
            if pattern is not None and pattern.startswith("%s") and "%" not in pattern[2:]:
                return f"{bases[texts[3]]}{pattern[2:]}"
    return None


_CHANGES = {
    word: re.compile(word + r"(?![\w.$])\s*(\(\s*dict(?![\w.$]))?") for word in MUTATING_FUNCTIONS
}
"""A call changing a dictionary; the group matches when that dictionary is a new one."""


def _changes_state(code: str, words: set[str]) -> bool:
    """Whether `code` (whose `words` are given) calls a function changing a dictionary other
    than a new `(dict ...)`."""
    for word in words & MUTATING_FUNCTIONS:
        for found in _CHANGES[word].finditer(code):
            before = code[found.start() - 1] if found.start() > 0 else " "
            if not (before.isalnum() or before in "_.$") and found.group(1) is None:
                return True
    return False


_TEMPLATE_OBJECT = re.compile(r"(?<![\w$])Template(?!\.BasePath(?!\w))")
"""`.Template`, `$.Template.Name`, a key "Template"... anything but `.Template.BasePath`."""


def _names_template(code: str) -> bool:
    return "Template" in code and _TEMPLATE_OBJECT.search(code) is not None


def _note_words(unit: _Unit, words: set[str], code: str) -> None:
    if not words.isdisjoint(NONDETERMINISTIC_FUNCTIONS):
        unit.varies = True
    if _changes_state(code, words):
        unit.mutates = True
    if ".Files" in code:
        unit.uses_files = True
    if "tpl" in words:
        unit.renders_text = True
    if _names_template(code):
        unit.names_template = True


@dataclass(frozen=True)
class TplText:
    """What a text `tpl` may render does: call what varies, change state."""

    varies: bool = False
    changes_state: bool = False
    names_template: bool = False
    """It reads `.Template` (see `_Unit.names_template`)."""

    def __or__(self, other: TplText) -> TplText:
        return TplText(
            self.varies or other.varies,
            self.changes_state or other.changes_state,
            self.names_template or other.names_template,
        )


def tpl_text(text: str) -> TplText:
    """What `text`, rendered by `tpl`, may do (calling another template: anything)."""
    varies = changes = names = False
    start = text.find("{{")
    while start >= 0 and not (varies and changes and names):
        end = text.find("}}", start + 2)
        end = len(text) if end < 0 else end
        varies = varies or _NESTED_VARYING.search(text, start + 2, end) is not None
        changes = changes or _NESTED_CHANGING.search(text, start + 2, end) is not None
        names = names or _names_template(text[start + 2 : end])
        start = text.find("{{", start + 2)
    return TplText(varies, changes, names)


def _unescaped(quoted: str) -> str:
    """A Go double-quoted string's text."""
    if "\\" not in quoted:
        return quoted[1:-1]
    return quoted[1:-1].encode("utf-8", "backslashreplace").decode("unicode_escape")


def _read_code(unit: _Unit, bodies: Iterable[str]) -> None:
    """Note in `unit` what the actions `bodies` call (the name of every `include` and
    `template`: a string, or a computed one, making the unit `dynamic`)."""
    code = "\n".join(
        _RAW_AND_COMMENTS.sub(_kept_literal, body) if "`" in body or "/*" in body else body
        for body in bodies
    )
    bare = _STRINGS.sub(" ", code) if '"' in code or "'" in code else code
    _note_words(unit, _names_called(bare), bare)
    if _names_template(code):
        unit.names_template = True
    for pattern in _CALLS:
        for call in pattern.finditer(code):
            before = code[call.start() - 1] if call.start() > 0 else " "
            if before.isalnum() or before in "_.$":
                continue
            quoted = call.group(1)
            if quoted is None:
                unit.dynamic = True
            else:
                unit.calls.add(_unescaped(quoted))


_LEAD = re.compile(r"-?\s*(define|block|if|range|with|end)(?![\w.$])")


def read_template(name: str, text: str) -> _File:
    """What one template file defines and calls (see the module docstring)."""
    bodies = _ACTION.findall(text)
    held = TplText()
    for body in bodies:
        if "{{" in body:
            held |= tpl_text(body)
    if "define" not in text and "block" not in text and "Template.BasePath" not in text:
        top = _Unit()
        _read_code(top, bodies)
        return _File(top, {}, held)
    base = _CHART_TEMPLATES.match(name)
    chart_base = base.group(0) if base is not None else None
    top = _Unit()
    defines: dict[str, _Unit] = {}
    of_unit: dict[int, list[str]] = {id(top): []}
    opened: list[str] = []  # the keywords of the open blocks
    unit = top
    for body in bodies:
        lead = _LEAD.match(body)
        keyword = lead.group(1) if lead is not None else ""
        if keyword in ("define", "block"):
            tokens = [t for t in _TOKEN.finditer(body) if not t.group(0).startswith("/*")]
            words = [t.group(0) for t in tokens]
            at = words.index(keyword)
            defined = _string(tokens[at + 1]) if at + 1 < len(tokens) else None
            if defined is None:
                unit.dynamic = True
                continue
            if keyword == "block":
                unit.calls.add(defined)
            unit = defines.setdefault(defined, _Unit())
            of_unit.setdefault(id(unit), [])
            opened.append("define")
            continue
        if keyword in _OPENS:
            opened.append(keyword)
        elif keyword == "end" and opened and opened.pop() == "define":
            unit = top
            continue
        if "Template.BasePath" not in body:
            of_unit[id(unit)].append(body)
            continue
        # `.Template.BasePath` is the file's own only where the context is the file's: `$`
        # outside a definition, `.` outside definitions, `with` and `range`
        dollar_base = chart_base if unit is top else None
        dot_base = dollar_base if "with" not in opened and "range" not in opened else None
        tokens = [t for t in _TOKEN.finditer(body) if not t.group(0).startswith("/*")]
        _note_words(unit, {t.group(0) for t in tokens if t.group(3) is not None}, body)
        for index, token in enumerate(tokens):
            if token.group(0) in ("include", "template"):
                called = _called_name(tokens, index, dollar_base, dot_base)
                if called is None:
                    unit.dynamic = True
                else:
                    unit.calls.add(called)
    for each in (top, *defines.values()):
        _read_code(each, of_unit[id(each)])
    return _File(top, defines, held)


_CHART_FILE = re.compile(r"([^/]+(?:/charts/[^/]+)*)/(.+)")
"""A file of a chart archive: its chart directory, and its path in that chart."""
CHART_DEFINITION = frozenset(
    (
        *("Chart.yaml", "Chart.lock", "values.yaml", "values.schema.json"),
        *("requirements.yaml", "requirements.lock"),
    )
)
"""The files Helm reads itself to load a chart; any other file that is not a template is one
of the chart's `.Files` (its `crds/` included)."""


def _chart_of(template: str) -> str:
    base = _CHART_TEMPLATES.match(template)
    return base.group(0).removesuffix("/templates") if base is not None else ""


@dataclass(frozen=True)
class ProbePlan:
    """The template files a probe render needs, and whose other files it reads (`.Files`)."""

    templates: frozenset[str]
    reads_files_of: frozenset[str]
    """The chart directories (`app`, `app/charts/db`) whose files a rendered template reads
    with `.Files`, itself or through the named templates it calls: a template holds no
    other chart's context than its own, so it reads its own chart's files only."""

    def keeps(self, name: str) -> bool:
        """Whether the probe chart needs a file of the archive: its templates, what Helm
        reads to load each chart, and the other files of the charts whose files it reads."""
        if is_template_file(name):
            return name in self.templates
        found = _CHART_FILE.fullmatch(name)
        if found is None:
            return True
        return found.group(2) in CHART_DEFINITION or found.group(1) in self.reads_files_of


COPY_SUFFIX = ".fleetbus-probe"
"""A template's copy is rendered beside it, under its name with this suffix (`copies`): at
the same depth, so Helm renders it next to its original."""


def copy_name(template: str) -> str:
    """The name of a template file's copy (`ChartTemplates.copies`)."""
    return template + COPY_SUFFIX


def render_order(template: str) -> tuple[int, str]:
    """Helm renders a chart's template files by this key, highest first: deepest paths first
    (subcharts' before their parent's), then names in reverse order."""
    return template.count("/"), template


def _varies(unit: _Unit, tpl: TplText) -> bool:
    """Whether what `unit` renders may differ between renders (`tpl`: what texts `tpl`
    renders may do)."""
    return unit.varies or unit.dynamic or (tpl.varies and unit.renders_text)


def _mutates(unit: _Unit, tpl: TplText) -> bool:
    """Whether `unit` may change a dictionary other templates see."""
    return unit.mutates or unit.dynamic or (tpl.changes_state and unit.renders_text)


def _rendered_alone(template: str) -> bool:
    """Whether Helm renders a template file into its output: not a partial (`_*`), not
    NOTES.txt (which is no object)."""
    base = template.rsplit("/", 1)[-1]
    return not base.startswith("_") and base != "NOTES.txt"


def _callers(units: Mapping[str, list[_Unit]]) -> dict[str, set[str]]:
    """The names (files and named templates) calling each name."""
    callers: dict[str, set[str]] = {}
    for name, named in units.items():
        for unit in named:
            for called in unit.calls:
                callers.setdefault(called, set()).add(name)
    return callers


def _closure(
    units: Mapping[str, list[_Unit]],
    marked: Callable[[_Unit], bool],
    callers: Mapping[str, set[str]],
) -> set[str]:
    """The names (files and named templates) with a `marked` unit, or calling one (`callers`:
    `_callers(units)`)."""
    found = {name for name, named in units.items() if any(marked(unit) for unit in named)}
    pending = list(found)
    while pending:
        for caller in callers.get(pending.pop(), ()):
            if caller not in found:
                found.add(caller)
                pending.append(caller)
    return found


class ChartTemplates:
    """Every template file of a chart and its subcharts, read (see the module docstring)."""

    def __init__(self, templates: Iterable[tuple[str, str]]) -> None:
        self.files = {name: read_template(name, text) for name, text in templates}
        self.units: dict[str, list[_Unit]] = {name: [read.top] for name, read in self.files.items()}
        for read in self.files.values():
            for defined, unit in read.defines.items():
                self.units.setdefault(defined, []).append(unit)
        self._callers = _callers(self.units)

    @property
    def read_files(self) -> bool:
        """Whether a template reads the chart's other files (`.Files`)."""
        return any(unit.uses_files for named in self.units.values() for unit in named)

    @property
    def template_text(self) -> TplText:
        """What the strings of the templates' actions do, rendered by `tpl`."""
        found = TplText()
        for read in self.files.values():
            found |= read.template_text
        return found

    def probe(self, tpl: TplText) -> ProbePlan | None:
        """The probe, given whether a text `tpl` renders (from the values, the chart's
        files or the templates' strings: `tpl_text_varies`) may vary; None when a template
        the probe renders calls one by a name this reading cannot resolve."""

        files = self.files
        varying = _closure(self.units, lambda unit: _varies(unit, tpl), self._callers)
        changing = _closure(self.units, lambda unit: _mutates(unit, tpl), self._callers)
        if varying & changing & self._reachable():
            return None  # what varies may be stored where any template reads it
        kept = {name for name, read in files.items() if read.defines}
        kept |= (varying | changing) & files.keys()
        # what the kept files render: their own text and every template it calls,
        # transitively; a template file called by its name must be in the probe too
        pending = list(kept)
        reading: set[str] = set()
        while pending:
            name = pending.pop()
            for unit in self._rendered_by(name):
                if unit.dynamic:
                    return None
                if unit.uses_files:
                    reading.add(_chart_of(name))
                for called in unit.calls:
                    if called in files and called not in kept:
                        kept.add(called)
                        pending.append(called)
        return ProbePlan(
            templates=frozenset(kept),
            reads_files_of=frozenset(reading),
        )

    def copies(self, tpl: TplText) -> frozenset[str] | None:
        """The template files to render twice in one render, each beside a copy of itself
        (`copy_name`), or None when the copies could change
        what a template renders (then the probe is rendered on its own: `probe`).

        One render then gives both renders of every template whose output can differ: the
        chart is loaded and its values merged once. Helm renders a chart's templates one after
        the other, deepest paths first and names in reverse order at each depth, all with the
        same values; a copy renders the same text with the same values, so it renders as its
        original does, with its own random draws, unless:

        - it reads `.Template` (other than `.Template.BasePath`, which a copy shares), whose
          `Name` is the copy's own (a `tpl` text may read it too);
        - it, or a template it calls, changes a dictionary: every template rendered after it
          would see the change twice;
        - a template that changes a dictionary renders between the copy and its original, so
          that they see different values;
        - it defines named templates (a later definition replaces an earlier one), or calls
          one by a computed name.

        Partials (`_*`) and NOTES.txt render no object and are not copied."""
        if self.probe(tpl) is None:
            return None
        copied = frozenset(
            name
            for name in _closure(self.units, lambda unit: _varies(unit, tpl), self._callers)
            & self.files.keys()
            if _rendered_alone(name)
        )
        return copied if self._copies_hold(copied, tpl) else None

    def copies_hold(self, copied: frozenset[str], tpl: TplText) -> bool:
        """Whether rendering the template files `copied` each beside a copy of itself gives a
        second render of every template whose output can differ, without changing what any
        template renders (see `copies`)."""
        needed = self.copies(tpl)
        return needed is not None and needed <= copied and self._copies_hold(copied, tpl)

    def _copies_hold(self, copied: frozenset[str], tpl: TplText) -> bool:
        files = self.files
        if not copied <= files.keys() or any(name.endswith(COPY_SUFFIX) for name in files):
            return False
        changing = (
            _closure(self.units, lambda unit: _mutates(unit, tpl), self._callers) & files.keys()
        )
        for name in copied:
            if name in changing or files[name].defines or not _rendered_alone(name):
                return False
            for unit in self._rendered_by(name):
                if (
                    unit.dynamic
                    or unit.names_template
                    or (tpl.names_template and unit.renders_text)
                ):
                    return False
            low, high = sorted((render_order(name), render_order(copy_name(name))))
            if any(low < render_order(other) < high for other in changing):
                return False
        return True

    def _reachable(self) -> set[str]:
        """The names of the templates a full render renders: every file, and what they call."""
        found = set(self.files)
        pending = list(found)
        while pending:
            for unit in self.units.get(pending.pop(), ()):
                for called in unit.calls - found:
                    found.add(called)
                    pending.append(called)
        return found

    def _rendered_by(self, name: str) -> list[_Unit]:
        """A template file's own text and every named template it calls, transitively."""
        found = [self.files[name].top]
        seen = {id(found[0])}
        index = 0
        while index < len(found):
            for called in found[index].calls:
                for unit in self.units.get(called, ()):
                    if id(unit) not in seen:
                        seen.add(id(unit))
                        found.append(unit)
            index += 1
        return found
