"""One command says each data warning once (issue 34 item 10: the Isles of Scilly warning came twice in
the demo, whose fit and report each load the table)."""

from __future__ import annotations

import warnings

from hierarchy import cli
from hierarchy.cli import tables
from hierarchy.data import reference, simulate
from hierarchy.data import table as data


def test_a_table_loaded_twice_in_one_command_warns_once(tmp_path, monkeypatch):
    geo = reference.synthetic_geography(6, seed=0, lsoa_per_la=8)
    table, _ = simulate.simulate(geo, seed=0)
    one = table["la"].iloc[0]
    keep = ~table["la"].eq(one) | table.index.isin(table.index[table["la"].eq(one)][:1])
    path = tmp_path / "t.csv"
    table[keep].to_csv(path, index=False)  # the first LA keeps one neighbourhood: a small-LA warning

    def twice(args):
        data.load(path)
        data.load(path)
        return 0

    monkeypatch.setattr(tables, "_validate", twice)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # Python's own once-per-location filter is not what dedupes
        assert cli.main(["validate", str(path)]) == 0
    said = [str(w.message) for w in caught if f"e.g. {one}: 1" in str(w.message)]
    assert len(said) == 1, said
    with warnings.catch_warnings(record=True) as caught:  # the next command says it again
        warnings.simplefilter("always")
        cli.main(["validate", str(path)])
    assert sum(f"e.g. {one}: 1" in str(w.message) for w in caught) == 1


def test_different_warnings_are_all_shown():
    shown = []
    once = cli._once(lambda message, *a, **k: shown.append(str(message)))
    for text in ("a", "b", "a", "c", "b"):
        once(UserWarning(text), UserWarning, "f.py", 1)
    assert shown == ["a", "b", "c"]
    with warnings.catch_warnings():  # the warnings module calls it with the same signature
        warnings.simplefilter("always")
        warnings.showwarning = once
        warnings.warn("d", UserWarning, stacklevel=1)
    assert shown[-1] == "d"
