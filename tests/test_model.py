import math

from hypothesis import given
from hypothesis import strategies as st

from agent.model import Accumulator, Sample, to_line, to_line_protocol

from .lp_parser import parse, parse_line


def test_line_protocol_escaping_and_types():
    s = Sample("gpu stats,x", {"uuid": "GPU-1 a,b=c", "host": "n1"},
               {"power_watts": 701.25, "energy_joules_total": 12345678901, "lost": False, "name": 'H200 "SXM" \\'},
               1_700_000_000_000_000_000)
    line = to_line(s)
    assert line == ('gpu\\ stats\\,x,host=n1,uuid=GPU-1\\ a\\,b\\=c power_watts=701.25,'
                    'energy_joules_total=12345678901i,lost=false,name="H200 \\"SXM\\" \\\\" 1700000000000000000')
    assert parse_line(line) == ("gpu stats,x", {"host": "n1", "uuid": "GPU-1 a,b=c"},
                                {"power_watts": 701.25, "energy_joules_total": 12345678901, "lost": False,
                                 "name": 'H200 "SXM" \\'}, 1_700_000_000_000_000_000)


def test_accumulator_merges_series_drops_nan_and_refuses_late_adds():
    acc = Accumulator(5, {"host": "n1", "site": "s"})
    acc.add("m", {"a_count": 1, "nan_watts": math.nan, "none": None}, {"gpu": "0", "empty": ""})
    acc.add("m", {"b_count": 2}, {"gpu": "0"})
    acc.add("m", {"inf_watts": math.inf})  # nothing valid: no sample
    out = acc.close()
    assert [(s.tags, s.fields, s.ts) for s in out] == [
        ({"host": "n1", "site": "s", "gpu": "0"}, {"a_count": 1, "b_count": 2}, 5)]
    assert acc.invalid_values == 2
    acc.add("m", {"c_count": 3})
    assert acc.late_adds == 1 and len(out) == 1


names = st.text(st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\\"), min_size=1, max_size=20)
# Field keys come from the catalogue (letters, digits, underscores); quotes are never among them.
field_keys = st.text(st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters='\\"'), min_size=1,
                     max_size=20)
values = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r"), max_size=30),
)


# A line starting with '#' is a comment in line protocol; our measurement names come from the catalogue.
@given(measurement=names.filter(lambda m: not m.startswith("#")), tags=st.dictionaries(names, names, max_size=4),
       fields=st.dictionaries(field_keys, values, min_size=1, max_size=6),
       ts=st.integers(min_value=0, max_value=2**62))
def test_line_protocol_roundtrips_through_a_parser(measurement, tags, fields, ts):
    text = to_line_protocol([Sample(measurement, tags, fields, ts)])
    ((m, t, f, got_ts),) = parse(text)
    assert (m, t, got_ts) == (measurement, tags, ts)
    assert f == fields


def test_a_key_or_value_no_destination_can_take_is_handled_field_by_field_and_said(caplog):
    """Telegraf's serializer cases: an empty field key is dropped, an integer past int64 clamped, a trailing
    backslash (which line protocol cannot escape) dropped from the name; each is counted and said once, and the
    sample's other fields are kept."""
    from agent.model import Accumulator, to_line

    acc = Accumulator(1, {"host": "n"})
    acc.add("m", {"": 1, "big": 2**64, "path\\": 2.0, "ok": 3.0})
    acc.add("m", {"path\\": 2.5}, {"x": "y"})
    (a, b) = acc.close()
    assert a.fields == {"big": 2**63 - 1, "path\\": 2.0, "ok": 3.0} and acc.invalid_values == 4
    assert to_line(a) == "m,host=n big=9223372036854775807i,path=2.0,ok=3.0 1"
    said = [r.getMessage() for r in caplog.records]
    assert sum("backslash" in m for m in said) == 1 and any("empty field key" in m for m in said)
