import time

from agent.model import Sample
from agent.outputs.local import LocalStore, measurements, query

NOW = time.time_ns()


def s(ts, host="a", **fields):
    return Sample("m", {"host": host}, fields or {"v_count": 1}, ts)


def test_write_query_roundtrip_and_filters(tmp_path):
    st = LocalStore(tmp_path / "db.sqlite")
    st.write([s(NOW - 2_000, v_count=1, x_bytes=2.5, ok=True, name="gpu 0"), s(NOW - 1_000, "b", v_count=2)])
    st.close()
    got = query(tmp_path / "db.sqlite", "m")
    assert [(x.tags, x.fields, x.ts) for x in got] == [
        ({"host": "a"}, {"v_count": 1, "x_bytes": 2.5, "ok": True, "name": "gpu 0"}, NOW - 2_000),
        ({"host": "b"}, {"v_count": 2}, NOW - 1_000)]
    assert [x.tags["host"] for x in query(tmp_path / "db.sqlite", "m", tags={"host": "b"})] == ["b"]
    assert [x.fields for x in query(tmp_path / "db.sqlite", "m", fields=["x_bytes"])] == [{"x_bytes": 2.5}]
    assert len(query(tmp_path / "db.sqlite", "m", since_ns=NOW - 1_500)) == 1
    assert len(query(tmp_path / "db.sqlite", "m", limit=1)) == 1
    assert measurements(tmp_path / "db.sqlite") == ["m"]


def test_same_series_and_timestamp_merges_like_influxdb(tmp_path):
    st = LocalStore(tmp_path / "db.sqlite")
    st.write([s(NOW, v_count=1, a_count=1)])
    st.write([s(NOW, v_count=5, b_count=2)])  # a replay or a second poller
    got = query(tmp_path / "db.sqlite", "m")
    assert len(got) == 1 and got[0].fields == {"v_count": 5, "a_count": 1, "b_count": 2}
    st.close()


def test_retention_deletes_old_points(tmp_path):
    st = LocalStore(tmp_path / "db.sqlite", retention_s=60)
    st.write([s(NOW - 120 * 10**9), s(NOW - 30 * 10**9)])
    st.housekeeping(NOW)
    assert st.expired == 1
    assert [x.ts for x in query(tmp_path / "db.sqlite", "m", since_ns=0)] == [NOW - 30 * 10**9]
    st.close()


def test_size_cap_evicts_oldest_and_counts_exactly(tmp_path):
    st = LocalStore(tmp_path / "db.sqlite", max_size=200_000)
    total = 0
    for batch in range(40):
        st.write([Sample("m", {"host": "a", "gpu": str(g)}, {"power_watts": 700.5 + g, "label": "x" * 40},
                         NOW - (10_000 - batch * 100 - g) * 10**6) for g in range(100)])
        total += 100
        st.enforce_size_cap()
    left = query(tmp_path / "db.sqlite", "m", since_ns=0)
    assert st.evicted > 0
    assert len(left) + st.evicted == total  # every point is either kept or counted
    assert st.size_bytes() <= 200_000
    oldest_left = min(x.ts for x in left)
    # what is left is the newest: every evicted point is older than every kept one
    assert oldest_left > NOW - (10_000 - (st.evicted // 100) * 100 + 100) * 10**6
    st.housekeeping()  # gives pages back to the OS
    st.close()
    assert (tmp_path / "db.sqlite").stat().st_size < 400_000


def test_survives_reopen(tmp_path):
    st = LocalStore(tmp_path / "db.sqlite")
    st.write([s(NOW)])
    st.close()
    st2 = LocalStore(tmp_path / "db.sqlite")
    st2.write([s(NOW + 1)])
    st2.close()
    assert len(query(tmp_path / "db.sqlite", "m", since_ns=0)) == 2
