"""Names parse and print the same way, and resolve against a sheet with clear errors."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dfgpt
from dfgpt.core.names import ALL, format_index, parse, path_matches
from dfgpt.errors import IndexError_, NameError_, TokenError, UnknownNameError

ident = st.from_regex(r"[a-z_][a-z0-9_]{0,6}", fullmatch=True)
token = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,4}", fullmatch=True)
index = st.one_of(
    st.integers(-50, 50),
    token,
    st.just(ALL),
    st.builds(slice, st.one_of(st.none(), st.integers(0, 9)), st.one_of(st.none(), st.integers(0, 9))),
)
segment = st.tuples(ident, st.lists(st.integers(0, 20).map(str) | st.just("*"), max_size=2))


@settings(max_examples=200, deadline=None)
@given(st.lists(segment, min_size=0, max_size=3), ident, st.lists(index, max_size=4))
def test_parse_print_round_trip(segs, last, idx):
    path = ".".join([s + "".join(f"[{b}]" for b in br) for s, br in segs] + [last])
    text = path + "".join(f"[{format_index(i)}]" for i in idx)
    sel = parse(text)
    assert sel.path == path
    assert parse(str(sel)) == sel
    assert str(parse(str(sel))) == str(sel)


def test_logit_parses_verbatim():
    sel = parse("logit[5][A]")
    assert (sel.path, sel.index) == ("logit", (5, "A"))


@pytest.mark.parametrize(
    "pattern, path, expected",
    [
        ("h[*].attn.att", "h[2].attn.att", True),
        ("h[0]", "h[0].ln_1.out", True),
        ("h[0:2].ln_1", "h[1].ln_1.mean", True),
        ("h[0:2].ln_1", "h[2].ln_1.mean", False),
        ("h[1]", "h[10].mid", False),
        ("logit", "logit_max", False),
    ],
)
def test_path_patterns(pattern, path, expected):
    assert path_matches(pattern, path) is expected


@pytest.mark.parametrize("bad", ["", "logit[5", "3abc", "logit[5]x", "h[0]..q", "logit[]"])
def test_unparsable_names_raise_name_errors(bad):
    with pytest.raises(NameError_):
        parse(bad)


def test_every_cell_name_round_trips_through_the_sheet(tiny):
    s = tiny.sheet("abcab")
    for tensor in s.tensors():
        for name in s.cells(tensor)[:40]:
            t, idx = s.cell(name)
            assert t == tensor and s.name(t, idx) == name


def test_vocab_axes_take_text_or_id(sort_random):
    s = sort_random.sheet("CABACA")
    assert s.value("logit[5][A]") == s.value("logit[5][0]") == s.value("logits[5][A]")
    assert s.value("wte[C][17]") == s.value("wte[2][17]")
    assert s.cells("logit[5]") == ["logit[5][A]", "logit[5][B]", "logit[5][C]"]


def test_wildcards_and_slices_select_many(sort_random):
    s = sort_random.sheet("CABACA")
    atts = s.value("h[*].attn.att[1][5][:]")  # stacked in layer order: [layer, key]
    assert atts.shape == (3, 6) and all((atts[l] == s.values(f"h[{l}].attn.att")[1, 5]).all() for l in range(3))
    assert len(s.cells("h[0].attn.att[1][5][0:3]")) == 3
    assert s.value("logit[-1][A]") == s.value("logit[5][A]")


@pytest.mark.parametrize(
    "name, error, words",
    [
        ("logti[5][A]", UnknownNameError, "Did you mean 'logit'"),
        ("h[0].attn.qq[0][0][0]", UnknownNameError, "h[0].attn.q"),
        ("logit[5][A][1]", IndexError_, "2 axes"),
        ("logit[6][A]", IndexError_, "size 6 (0..5)"),
        ("logit[5][D]", TokenError, "A B C"),
        ("emb[A][0]", IndexError_, "takes a number"),
    ],
)
def test_bad_names_say_what_and_how(sort_random, name, error, words):
    s = sort_random.sheet("CABACA")
    with pytest.raises(error) as e:
        s.value(name)
    assert words in str(e.value)
    assert isinstance(e.value, dfgpt.DfgptError)
