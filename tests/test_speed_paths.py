"""The explorer's fast paths give the numbers the slow ones give, bit for bit (no timing here).

Each fast path is checked against the path it replaces, run on a twin sheet: a receipt's
"before" from the rows the sheet held against the trial that recomputes them; the engine's
bitwise cut-off against the float comparison it replaced.
"""

import numpy as np
import pytest

import dfgpt
from dfgpt.core.batches import rows_moved
from dfgpt.models.catalog import random_params

SMALL = dfgpt.Config(n_layer=2, n_head=4, n_embd=32, block_size=64, vocab_size=300, dtype="float32", name="g2")
GPT = dfgpt.Model(SMALL, random_params(SMALL, seed=5))
SORT = dfgpt.load("sort")

# (name, value) edits in order, each read whole (settled) before the next unless marked "unread"
SCRIPT = [("h[1].mlp.c_proj.b[3]", 50.0), ("undo", None), ("wpe[4][1]", 2.5), ("tokens[2]", 7),
          ("temperature", 0.5), ("pin:h[0].out[5][0]", 3.0), ("h[0].ln_1.g[2]", -1.0, "unread"),
          ("h[1].attn.c_attn.w[0][5]", 4.0), ("undo", None), ("redo", None)]


# the explorer's script on a float32 (fast mode) model: edits whose cones span every position, and
# appends, so the receipts take the held rows (in fast mode only rows computed in whole batches do)
WHOLE = [("h[1].mlp.c_proj.b[3]", 50.0), ("undo", None), ("append", 17), ("undo", None),
         ("h[1].attn.c_attn.w[70][0]", 4.0), ("undo", None), ("redo", None), ("ln_f.b[0]", 3.0),
         ("h[0].mlp.c_fc.w[7][2]", -2.0, "unread"), ("lm_head.w[3][1]", 1.5), ("temperature", 0.7)]


def _run(model, text, fast, script=SCRIPT):
    """Receipts' (max_change, flipped, counts, held) along a script; `fast`: receipts may use the held rows."""
    sheet = model.sheet(text)
    sheet.values("prob"), sheet.values("logit")
    out = []
    vocab_edit = model.config.vocab_size <= 3
    for step in script:
        name, value = step[0], step[1]
        if name == "append":
            r = sheet.append(value)
        elif name == "undo":
            r = sheet.undo()
        elif name == "redo":
            r = sheet.redo()
        elif name.startswith("pin:"):
            r = sheet.set(name[4:], value)
        elif name == "tokens[2]" and vocab_edit:
            r = sheet.set(name, "A" if sheet.value("tokens[2]") != 0 else "B")
        elif name.startswith("h[1]") and model.config.n_layer < 2:
            r = sheet.set(name.replace("h[1]", "h[0]"), value)
        else:
            r = sheet.set(name, value)
        held = r._live.held
        if not fast:
            r._live.held = False
        if len(step) > 2:  # not read: the next edit finds its outputs stale, and must not take the fast path
            continue
        r.settle()
        out.append((r.max_change, r.flipped, r.recomputed, r.reused, r.cutoff, r.stale_by_tensor,
                    held and sheet.engine.batch_T in (None, sheet.T) if fast else None))
    return out


@pytest.mark.parametrize("model,text", [(SORT, "CABACA"), (GPT, list(range(10, 26)))], ids=["sort", "gpt-f32"])
def test_receipts_from_held_rows_equal_the_trials(model, text):
    fast, slow = _run(model, text, True), _run(model, text, False)
    assert [f[:-1] for f in fast] == [s[:-1] for s in slow]
    assert any(m["logit"] for m, *_ in fast)  # the edits moved the logits: real numbers compared
    assert fast[0][-1]  # the first edit found every output row current: it took the held rows


def test_fast_mode_receipts_take_the_held_rows_and_equal_the_trials():
    text = list(range(10, 26))
    fast, slow = _run(GPT, text, True, WHOLE), _run(GPT, text, False, WHOLE)
    assert not GPT.sheet(text).engine.exact
    assert [f[:-1] for f in fast] == [s[:-1] for s in slow]
    used = [f[-1] for f in fast]
    # every edit at the sheet's first length found its rows whole; the edit after an unread one did not
    assert used == [True, True, False, False, True, True, True, True, False, True], used
    assert all(max(f[0].values()) > 0 for f, u in zip(fast, used) if u)  # each moved an output


def test_a_partial_recompute_in_fast_mode_sends_the_receipt_to_its_trial():
    sheet = GPT.sheet(list(range(10, 26)))
    sheet.values("prob"), sheet.values("logit")
    assert sheet.engine.batch_T == 16
    r = sheet.set("wpe[4][1]", 2.5)  # rows 4..15 recompute: another batch than the rows held
    assert r._live.held
    r.settle()
    assert sheet.engine.batch_T == -1
    assert r._live._held({n: sheet.engine.view(n) for n in ("logit", "prob")}) is None
    assert not sheet.set("wpe[4][1]", 1.0)._live.held


def test_held_rows_are_used_only_when_every_output_row_was_current():
    sheet = GPT.sheet(list(range(10, 26)))
    sheet.values("prob"), sheet.values("logit")
    r = sheet.set("h[1].mlp.c_proj.b[3]", 50.0)
    assert r._live.held
    r2 = sheet.set("h[1].mlp.c_proj.b[4]", 9.0)  # the outputs were not read since the last write
    assert not r2._live.held
    assert r2.max_change["logit"] > 0  # reads every output
    r3 = sheet.set("h[0].mlp.c_proj.b[4]", 1.0)
    assert r3._live.held
    r4 = sheet.set("h[0].mlp.c_proj.b[4]", 2.0)
    assert not r4._live.held  # r3's outputs were never read
    assert r4.max_change["logit"] > 0


def _old_rows_moved(new, old, ra):
    neq = (new != old) | (np.signbit(new) != np.signbit(old))
    return np.moveaxis(neq, ra, 0).reshape(new.shape[ra], -1).any(axis=1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ra", [0, 1])
def test_bitwise_cutoff_equals_the_float_comparison(dtype, ra):
    rng = np.random.default_rng(0)
    old = rng.standard_normal((3, 40, 5)).astype(dtype)
    new = old.copy()
    new[:, 1] = np.nan  # NaN both before and after: changed, as NaN != NaN
    old[:, 1] = np.nan
    new[:, 2, 0] = -0.0  # a signed zero: changed
    old[:, 2, 0] = 0.0
    new[:, 3, 4] += 1  # a value: changed
    new[:, 5, 2] = np.inf  # inf both sides: unchanged
    old[:, 5, 2] = np.inf
    a, b = np.moveaxis(new, 1, ra), np.moveaxis(old, 1, ra)  # rows on axis ra
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    got = rows_moved(a, b, ra)
    assert got.tolist() == _old_rows_moved(a, b, ra).tolist()
    assert got.sum() == 3 and got[1] and got[2] and got[3]


def test_top_k_equals_the_stable_full_sort():
    from dfgpt.server.api import top

    rng = np.random.default_rng(3)
    for trial in range(40):
        x = rng.integers(-5, 5, 500).astype(np.float64)  # many ties
        if trial % 4 == 1:
            x[rng.integers(0, 500, 30)] = np.nan
        if trial % 4 == 2:
            x[:495] = np.nan  # fewer numbers than k
        if trial % 4 == 3:
            x[rng.integers(0, 500, 5)] = np.inf
            x[rng.integers(0, 500, 5)] = -0.0
        for k in (1, 10, 20):
            assert top(x, k).tolist() == np.argsort(-x, kind="stable")[:k].tolist()


def test_the_servers_receipt_asks_the_effect_first_and_shows_the_same_numbers():
    from dfgpt.server.api import number, receipt_json

    def old_order(receipt, sheet):  # the fields asked in the order the answer used to ask them
        receipt.settle()
        by = receipt.stale_by_tensor
        counts = (receipt.stale, receipt.recomputed, receipt.reused, receipt.cutoff)
        change = {k: (None if v is None else number(v)) for k, v in receipt.max_change.items()}
        return counts, change, receipt.flipped, by

    answers = []
    for make in (receipt_json, old_order):
        sheet = dfgpt.Sheet(GPT, list(range(10, 26)))
        sheet.values("prob")
        got = []
        for name, value in (("h[1].mlp.c_proj.b[3]", 50.0), ("wpe[4][1]", 2.5)):
            r = sheet.set(name, value)
            out = make(r, sheet)
            got.append(out if make is old_order else (
                (out["stale"], out["recomputed"], out["reused"], out["cutoff"]), out["max_change"], out["flipped"],
                out["stale_by_tensor"]))
        answers.append(got)
    assert answers[0] == answers[1]
    assert answers[0][0][1]["logit"] > 0 and answers[0][0][0][1] > 0
