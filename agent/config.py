"""Typed, strict configuration (YAML + pydantic, extra="forbid").

Errors name the file, the line, the dotted key and what was expected; the CLI turns
a ConfigError into exit status 78 (EX_CONFIG) before anything starts.

Collectors bring their own option models (``Collector.Options``); this module never
names a collector, so adding one never edits ``agent/``.
"""

from __future__ import annotations

import math
import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    create_model,
    model_validator,
)

from .secretfile import check_secret_file
from .units import format_duration, parse_duration, parse_size

DEFAULT_CONFIG_PATH = Path("/etc/aifactory/agent.yaml")
CONFIG_ENV = "AIFACTORY_CONFIG"
EX_CONFIG = 78
EX_TEMPFAIL = 75  # sysexits: try again later (another agent holds the state dir; a collector needs a new process)


MAX_DURATION = 3660 * 86400.0  # ten years: anything longer is a typo, and overflows timers


def _dur(v: Any) -> float:
    d = parse_duration(v)
    if not math.isfinite(d) or d > MAX_DURATION:
        raise ValueError(f"{v!r} is not a usable duration (at most 3660d)")
    return d


def _size(v: Any) -> int:
    return parse_size(v)


_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")


def _host(v) -> str:
    """A host name (RFC 1123 labels, at most 253 characters) or an IPv4/IPv6 address, as the collectors will
    use it: no port, no space, no scheme."""
    import ipaddress

    if not isinstance(v, str) or not v.strip():
        raise ValueError("expected a host name or an IP address, got an empty value")
    v = v.strip()
    try:
        ipaddress.ip_address(v.strip("[]"))
        return v.strip("[]")
    except ValueError:
        pass
    if ":" in v or "/" in v:
        raise ValueError(f"{v!r} is not a host name or an IP address (a port goes in `port`, not in the host)")
    name = v[:-1] if v.endswith(".") else v
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in name.split(".")):
        raise ValueError(f"{v[:80]!r} is not a valid host name (letters, digits and '-' in dot-separated labels "
                         "of at most 63 characters, 253 in all)")
    return v


def _http_url(v: str) -> str:
    """An http(s) URL with a host and a valid port, and no credentials in it (they would be printed in
    logs, `config show` and status: use the options' token/password files)."""
    if not isinstance(v, str):
        raise ValueError("expected an http:// or https:// URL")
    u = urlsplit(v.strip())
    if u.scheme not in ("http", "https"):
        raise ValueError(f"{v!r} is not an http:// or https:// URL")
    if not u.hostname:
        raise ValueError(f"{v!r} has no host")
    if u.username is not None or u.password is not None:
        raise ValueError("credentials in the URL are refused (they would be logged and shown): "
                         "use the token_file / password_file options")
    try:
        port = u.port
    except ValueError:
        raise ValueError(f"{v!r} has an invalid port (1-65535)") from None
    if port == 0:
        raise ValueError(f"{v!r} has an invalid port (1-65535)")
    try:
        _host(u.hostname)
    except ValueError as e:
        raise ValueError(f"{v!r}: {e}") from None
    import urllib3

    try:  # parsed here exactly as the HTTP clients will parse it
        urllib3.util.parse_url(v.strip())
    except urllib3.exceptions.LocationParseError as e:
        raise ValueError(f"{v!r} cannot be parsed as a URL: {e}") from None
    return v.strip()


def _regexes(v: list[str]) -> list[str]:
    for i, p in enumerate(v):
        try:
            re.compile(p)
        except re.error as e:
            raise ValueError(f"item {i}: {p!r} is not a regular expression: {e}") from None
    return v


def _secret_file(v: str | None) -> str | None:
    check_secret_file(v)
    return v


Duration = Annotated[float, BeforeValidator(_dur), PlainSerializer(format_duration, return_type=str)]
Size = Annotated[int, BeforeValidator(_size)]
PositiveDuration = Annotated[Duration, Field(gt=0)]
# Collection intervals and run deadlines: below 100 ms a run cannot finish, above a day it is a typo.
Interval = Annotated[Duration, Field(ge=0.1, le=86400)]
HttpUrl = Annotated[str, AfterValidator(_http_url)]
Host = Annotated[str, AfterValidator(_host)]
RegexList = Annotated[list[str], AfterValidator(_regexes)]
# A secret file that exists and is readable now, or a bare credential name checked when the service starts.
SecretFile = Annotated[str | None, AfterValidator(_secret_file)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class AgentSection(Strict):
    hostname: str | None = Field(None, description="value of the `host` tag; default: the system hostname")
    interval: Interval = Field(10.0, description="default collection interval")
    jitter: Duration = Field(0.0, description="random delay added to each run, spreads a fleet's load")
    align: bool = Field(True, description="align runs and timestamps to the interval grid")
    state_dir: Path | None = Field(None, description="local store, buffers and status; see README")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="log level (journald)")
    queue_size: int = Field(100_000, gt=0, description="samples held per output before the oldest are dropped")
    proc_root: Path = Field(Path("/proc"), description="procfs root (containers: the host's /proc)")
    sys_root: Path = Field(Path("/sys"), description="sysfs root")


class TagsSection(Strict):
    site: str | None = Field(None, description="tag `site` on every sample")
    cluster: str | None = Field(None, description="tag `cluster` on every sample")
    rack: str | None = Field(None, description="tag `rack` on every sample (rack-scope efficiency groups by it)")
    role: str | None = Field(None, description="tag `role` on every sample (e.g. gpu, storage, poller)")
    extra: dict[str, str] = Field(default_factory=dict, description="any further global tags")

    def as_tags(self) -> dict[str, str]:
        out = {k: v for k, v in (("site", self.site), ("cluster", self.cluster),
                                 ("rack", self.rack), ("role", self.role)) if v}
        out.update(self.extra)
        return out


class CollectorOptions(Strict):
    """Options every collector instance has. Collectors subclass this."""

    name: str | None = Field(None, description="instance name, when a collector runs more than once")
    enabled: bool = Field(True, description="run this collector")
    interval: Interval | None = Field(None, description="default: agent.interval")
    timeout: Interval | None = Field(None, description="run deadline; default: the interval")

    def unique_keys(self) -> list[tuple[tuple, str, str]]:
        """(where under this instance, value, what it keys) of each value that keys state (counter files,
        sessions, series) and so must be unique across every instance of this collector. None by default."""
        return []


class Receiver(Strict):
    """Where alert notifications go: a JSON webhook or an Alertmanager (API v2)."""

    name: str = Field(..., pattern=r"^[A-Za-z0-9_.-]+$", description="named by rules' `notify:`")
    type: Literal["webhook", "alertmanager"] = Field("webhook", description="a JSON webhook, or Alertmanager API v2")
    url: HttpUrl = Field(..., description="webhook URL, or Alertmanager base URL")
    token_file: SecretFile = Field(None, description="bearer token for the receiver (file or credential name)")
    timeout: PositiveDuration = Field(5.0, description="per request")
    max_attempts: int = Field(8, ge=1, description="tries per notification before it is dropped")
    resend: PositiveDuration = Field(60.0, description="Alertmanager: re-send firing alerts this often")


class AlertsSection(Strict):
    enabled: bool = Field(True, description="evaluate alert rules in the agent")
    default_rules: bool = Field(True, description="the built-in rule pack (agent/alerts/default_rules.yaml)")
    disable: list[str] = Field(default_factory=list, description="rules to leave out, by name (to tune one: "
                                                                 "disable it and define your own version)")
    rules: list[Path] = Field(default_factory=list, description="rule files (YAML, Prometheus-shaped)")
    receivers: list[Receiver] = Field(default_factory=list, description="notification receivers")
    default_receivers: list[str] = Field(default_factory=list,
                                         description="receivers of rules that name none (`notify:`)")

    @model_validator(mode="after")
    def _known_receivers(self):
        names = {r.name for r in self.receivers}
        unknown = [n for n in self.default_receivers if n not in names]
        if unknown:
            raise ValueError(f"default_receivers names unknown receivers: {', '.join(unknown)}")
        return self


class OutputOptions(Strict):
    """Options every output has (an output's own model, beside its code, subclasses this)."""

    enabled: bool = Field(True, description="write to this output")


class OutputsBase(Strict):
    """The outputs section, one field per registered output (see settings_model)."""

    @model_validator(mode="after")
    def _unique(self):
        # an output's name keys its status row and its buffer file: unique across every output; and two
        # outputs writing one file would interleave and rotate each other's lines
        enabled = []
        for kind in type(self).model_fields:
            section = getattr(self, kind)
            enabled += [(kind, o) for o in (section if isinstance(section, list) else [section]) if o.enabled]
        names = [getattr(o, "name", kind) for kind, o in enabled]  # a single output (local) is named by its kind
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"output names must be unique; repeated: {', '.join(sorted(dup))}")
        paths: dict[str, str] = {}
        for (kind, o), name in zip(enabled, names):
            path = getattr(o, "path", None)
            if path and kind != "local":
                key = os.path.realpath(os.path.expanduser(str(path)))
                if key in paths:
                    raise ValueError(f"outputs {paths[key]!r} and {name!r} write the same file {path}: expected a "
                                     "path of its own for each")
                paths[key] = name
        return self


class Settings(Strict):
    agent: AgentSection = Field(default_factory=AgentSection)
    alerts: AlertsSection = Field(default_factory=AlertsSection)
    tags: TagsSection = Field(default_factory=TagsSection)
    collectors: dict[str, Any] = Field(default_factory=dict)
    outputs: OutputsBase = Field(default_factory=OutputsBase)


_SETTINGS: dict[tuple, type[Settings]] = {}


def settings_model(outputs: dict[str, type]) -> type[Settings]:
    """Settings whose outputs section has one field per registered output (kind -> class with Options and
    many): a list of instances where an output can run more than once, else one. Built from the registry
    handed in, so this module imports no output."""
    key = tuple(sorted((k, id(cls)) for k, cls in outputs.items()))
    model = _SETTINGS.get(key)
    if model is None:
        fields: dict[str, Any] = {}
        for kind, cls in outputs.items():
            if cls.many:
                fields[kind] = (list[cls.Options], Field(default_factory=list))
            else:
                fields[kind] = (cls.Options, Field(default_factory=cls.Options))
        section = create_model("OutputsSection", __base__=OutputsBase, **fields)
        model = _SETTINGS[key] = create_model("Settings", __base__=Settings,
                                              outputs=(section, Field(default_factory=section)))
    return model


@dataclass
class InstanceConfig:
    kind: str  # registered collector name
    name: str  # instance name (== kind for a single instance)
    options: CollectorOptions
    interval: float
    timeout: float


@dataclass
class Config:
    settings: Settings
    instances: list[InstanceConfig]
    source: Path | None  # None: built-in defaults
    unavailable: dict[str, str] = field(default_factory=dict)

    @property
    def hostname(self) -> str:
        return self.settings.agent.hostname or socket.gethostname()

    def global_tags(self) -> dict[str, str]:
        tags = {"host": self.hostname}
        tags.update(self.settings.tags.as_tags())
        return tags

    def show(self) -> dict:
        """The effective configuration, secrets redacted (SecretStr dumps as stars)."""
        data = self.settings.model_dump(mode="json", exclude={"collectors"})
        cols: dict[str, list] = {}
        for inst in self.instances:
            d = inst.options.model_dump(mode="json")
            d["name"] = inst.name
            d["interval"] = format_duration(inst.interval)
            d["timeout"] = format_duration(inst.timeout)
            cols.setdefault(inst.kind, []).append(d)
        data["collectors"] = {k: (v[0] if len(v) == 1 else v) for k, v in cols.items()}
        data["source"] = str(self.source) if self.source else "built-in defaults"
        return data


DEFAULT_RULES = Path(__file__).parent / "alerts" / "default_rules.yaml"


class ConfigError(Exception):
    """A configuration problem; ``str()`` is the complete message for the operator."""

    def __init__(self, messages: list[str]):
        self.messages = messages
        super().__init__("\n".join(messages))


# --- YAML with positions --------------------------------------------------------


MAX_YAML_NODES = 200_000  # a real configuration has hundreds; aliases can expand a few bytes to billions


class _TooLarge(Exception):
    pass


def _positions(node: yaml.Node, path: tuple, out: dict[tuple, int], problems: list[str], where: str) -> None:
    if len(out) > MAX_YAML_NODES:
        raise _TooLarge
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: set = set()
        for k, v in node.value:
            key = k.value
            if key in seen:
                problems.append(f"{where}:{k.start_mark.line + 1}: {_dotted(path + (key,))}: duplicate key")
            seen.add(key)
            out[path + (key,)] = k.start_mark.line + 1
            _positions(v, path + (key,), out, problems, where)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            out[path + (i,)] = v.start_mark.line + 1
            _positions(v, path + (i,), out, problems, where)


def _dotted(path: tuple) -> str:
    s = ""
    for p in path:
        s += f"[{p}]" if isinstance(p, int) else (("." if s else "") + str(p))
    return s or "(top level)"


def _line_for(path: tuple, positions: dict[tuple, int]) -> int | None:
    while path:
        if path in positions:
            return positions[path]
        path = path[:-1]
    return positions.get(())


def _explain(err: dict) -> str:
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    msg = err.get("msg", "invalid value")
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    inp = err.get("input")
    if kind not in ("value_error",) and not isinstance(inp, (dict, list)):
        msg += f" (got {inp!r})"
    return msg


def _allowed_keys(model: type[BaseModel] | None) -> str:
    if model is None:
        return ""
    return "; expected one of: " + ", ".join(model.model_fields)


def _model_at(root: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The model that owns the last key of ``loc`` (for 'unknown key' hints)."""
    model: Any = root
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        f = getattr(model, "model_fields", {}).get(part)
        if f is None:
            return None
        ann = f.annotation
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
        if model is None:
            return None
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def validation_messages(exc: ValidationError, model: type[BaseModel], prefix: tuple,
                         positions: dict[tuple, int], where: str) -> list[str]:
    out = []
    for err in exc.errors():
        loc = prefix + tuple(err["loc"])
        line = _line_for(loc, positions)
        msg = _explain(err)
        if err.get("type") == "extra_forbidden":
            msg += _allowed_keys(_model_at(model, tuple(err["loc"])))
        at = f"{where}:{line}" if line else where
        out.append(f"{at}: {_dotted(loc)}: {msg}")
    return out


def error_lines(exc: ValidationError) -> list[str]:
    """``key: what is wrong`` per problem, for options that come from flags rather than a file."""
    return [f"{_dotted(tuple(err['loc']))}: {_explain(err)}" for err in exc.errors()]


def load_yaml(path: Path) -> tuple[Any, dict[tuple, int]]:
    where = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{where}: configuration file not found"]) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError([f"{where}: cannot read configuration: {e}"]) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        line = e.problem_mark.line + 1 if e.problem_mark else "?"
        raise ConfigError([f"{where}:{line}: YAML syntax error: {e.problem}"]) from None
    if node is None:
        return {}, {}
    positions: dict[tuple, int] = {}
    problems: list[str] = []
    try:
        _positions(node, (), positions, problems, where)
    except (_TooLarge, RecursionError):
        raise ConfigError([f"{where}: the YAML expands to more than {MAX_YAML_NODES} values (nested aliases "
                           "or a recursive alias?); refused"]) from None
    if problems:
        raise ConfigError(problems)
    loader = yaml.SafeLoader(text)
    try:
        data = loader.construct_document(node)
    except yaml.YAMLError as e:
        raise ConfigError([f"{where}: YAML error: {e}"]) from None
    finally:
        loader.dispose()
    return data, positions


def resolve_config_path(cli_path: str | os.PathLike | None) -> tuple[Path | None, bool]:
    """(path, must_exist). An explicit -c or $AIFACTORY_CONFIG must exist; the default may not."""
    if cli_path:
        return Path(cli_path), True
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env), True
    return DEFAULT_CONFIG_PATH, False


def load_config(cli_path: str | os.PathLike | None, registry: Any) -> Config:
    """The configuration from -c, $AIFACTORY_CONFIG or the default path, checked against the collectors of
    ``registry`` (agent.registry.default_registry(): passed in, as the registry imports this module)."""
    path, must_exist = resolve_config_path(cli_path)
    data: Any = {}
    positions: dict[tuple, int] = {}
    source: Path | None = None
    if path is not None and (must_exist or path.exists()):
        data, positions = load_yaml(path)
        source = path
    return build_config(data, positions, source, registry)


def build_config(data: Any, positions: dict[tuple, int], source: Path | None, registry: Any) -> Config:
    where = str(source) if source else "<defaults>"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([f"{where}:1: the configuration must be a mapping of sections "
                           f"(agent, tags, collectors, outputs)"])
    model = settings_model(getattr(registry, "outputs", {}))
    try:
        settings = model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(validation_messages(e, model, (), positions, where)) from None

    problems: list[str] = []
    instances: list[InstanceConfig] = []
    raw = settings.collectors or {}
    known = registry.names()
    for kind in raw:
        if kind not in known:
            line = _line_for(("collectors", kind), positions)
            problems.append(f"{where}:{line}: collectors.{kind}: unknown collector; expected one of: "
                            + ", ".join(sorted(known)))
    for kind in sorted(known):
        spec = registry.get(kind)
        if kind in raw:
            value = raw[kind]
            items = value if isinstance(value, list) else [value]
            is_list = isinstance(value, list)
        elif spec.default_enabled:
            items, is_list = [{}], False
        else:
            continue
        names: set[str] = set()
        keyed: dict[str, tuple] = {}  # a value that keys state -> where it was first seen
        for i, item in enumerate(items):
            loc: tuple = ("collectors", kind) + ((i,) if is_list else ())
            if item is None:
                item = {}
            if not isinstance(item, dict):
                problems.append(f"{where}:{_line_for(loc, positions)}: {_dotted(loc)}: expected a mapping "
                                f"of options (or a list of them), got {item!r}")
                continue
            try:
                opts = spec.options_model.model_validate(item)
            except ValidationError as e:
                problems.extend(validation_messages(e, spec.options_model, loc, positions, where))
                continue
            for suffix, value, what in opts.unique_keys():
                first = keyed.setdefault(value, loc + suffix)
                if first != loc + suffix:
                    problems.append(f"{where}:{_line_for(loc + suffix, positions)}: {_dotted(loc + suffix)}: "
                                    f"{value!r} is already used at line {_line_for(first, positions)} "
                                    f"({_dotted(first)}); it keys {what}: expected a unique name")
            name = opts.name or (kind if not is_list or len(items) == 1 else f"{kind}-{i}")
            if name in names:
                problems.append(f"{where}:{_line_for(loc, positions)}: {_dotted(loc)}.name: "
                                f"instance name {name!r} is used twice")
                continue
            names.add(name)
            interval = opts.interval or settings.agent.interval
            timeout = opts.timeout or interval
            if timeout > interval:
                problems.append(f"{where}:{_line_for(loc + ('timeout',), positions)}: {_dotted(loc)}.timeout: "
                                f"must not exceed the interval ({format_duration(interval)})")
                continue
            if opts.enabled:
                instances.append(InstanceConfig(kind, name, opts, interval, timeout))
    if problems:
        raise ConfigError(problems)
    return Config(settings=settings, instances=instances, source=source)
