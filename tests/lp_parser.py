"""A strict line-protocol parser for tests (InfluxDB 1.x/2.x grammar)."""

from __future__ import annotations


def _split_unescaped(text: str, sep: str, quotes: bool = False) -> list[str]:
    out, cur, i, inq = [], [], 0, False
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            cur.append(text[i:i + 2])
            i += 2
            continue
        if quotes and c == '"':
            inq = not inq
        if c == sep and not inq:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    out.append("".join(cur))
    return out


def _unescape(text: str, chars: str) -> str:
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in chars:
            out.append(text[i + 1])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _value(v: str):
    if v.startswith('"'):
        if not v.endswith('"') or len(v) < 2:
            raise ValueError(f"bad string field {v!r}")
        return _unescape(v[1:-1], '"\\')
    if v.endswith("i"):
        return int(v[:-1])
    if v in ("t", "T", "true", "True", "TRUE"):
        return True
    if v in ("f", "F", "false", "False", "FALSE"):
        return False
    return float(v)


def parse_line(line: str):
    # The series ends at the first unescaped space (quotes are plain characters there);
    # in the field set, double quotes delimit string values.
    head = _split_unescaped(line, " ")
    series = head[0]
    rest = _split_unescaped(line[len(series) + 1:], " ", quotes=True)
    if len(rest) != 2:
        raise ValueError(f"expected 'series fields timestamp': {line!r}")
    fields, ts = rest
    sp = _split_unescaped(series, ",")
    measurement = _unescape(sp[0], ", ")
    if not measurement:
        raise ValueError("empty measurement")
    tags = {}
    for t in sp[1:]:
        kv = _split_unescaped(t, "=")
        if len(kv) != 2 or not kv[0] or not kv[1]:
            raise ValueError(f"bad tag {t!r}")
        tags[_unescape(kv[0], ",= ")] = _unescape(kv[1], ",= ")
    fv = {}
    for f in _split_unescaped(fields, ",", quotes=True):
        kv = _split_unescaped(f, "=", quotes=True)
        if len(kv) != 2 or not kv[0]:
            raise ValueError(f"bad field {f!r}")
        fv[_unescape(kv[0], ",= ")] = _value(kv[1])
    if not fv:
        raise ValueError("no fields")
    return measurement, tags, fv, int(ts)


def parse(text: str):
    return [parse_line(line) for line in text.split("\n") if line and not line.startswith("#")]
