"""Hostile inputs (issue #19): absurd sizes, huge ids, endless generation, odd numeric types,
unwritable paths and long names each get a typed DfgptError that names the problem, what was
expected and the fix; nothing is changed by a failed call; the command line prints one line."""

from __future__ import annotations

import json
import time
import tracemalloc
from fractions import Fraction

import numpy as np
import pytest
import tokenizers
from conftest import TINY, random_model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dfgpt
from dfgpt.cli import train as train_cli
from dfgpt.cli.main import main
from dfgpt.core.config import MAX_LAYERS, Config, ConfigError, physical_memory
from dfgpt.errors import (
    CheckpointError,
    DfgptError,
    EditError,
    IndexError_,
    OutputError,
    TokenError,
    UnknownNameError,
)
from dfgpt.export.writers import ExportError
from dfgpt.generation import generate as generation_module
from dfgpt.generation.generate import MAX_NEW_TOKENS, GenerateError
from dfgpt.views.colors import RenderError, new_digraph, write


def _cli(capsys, *argv: str) -> tuple[int, str]:
    """The exit code and stderr of one `dfgpt` command; stderr must be one `dfgpt: error:` line."""
    code = main(list(argv))
    err = capsys.readouterr().err
    return code, err


def _one_line_error(code: int, err: str) -> str:
    assert code != 0
    assert err.startswith("dfgpt: error: ")
    assert err.count("\n") == 1 and err.endswith("\n")
    return err


# -- sizes in config files -----------------------------------------------------------------
def _hf_config(**fields) -> dict:
    d = {"n_layer": 2, "n_head": 2, "n_embd": 8, "n_positions": 6, "vocab_size": 3,
         "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5}  # every field a GPT-2 config must have
    d.update(fields)
    return d


def test_absurd_n_layer_in_a_hugging_face_config_is_refused_with_the_memory_it_needs(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(_hf_config(n_layer=1e30)))
    (tmp_path / "model.safetensors").write_bytes(b"never read")
    tracemalloc.start()
    try:
        with pytest.raises(ConfigError) as e:
            dfgpt.load(tmp_path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20, peak  # refused from the config's numbers: nothing of that size is allocated
    msg = str(e.value)
    assert msg.startswith("config.json: this config needs 8.72e+32 parameters, 3.49e+24 GB as float32")
    assert f"this machine has {physical_memory() / 1e9:.3g} GB of memory" in msg
    assert "n_layer=1000000000000000019884624838656" in msg and "check the sizes" in msg


@pytest.mark.parametrize(
    "field, value, words",
    [
        ("n_layer", 2.5, "n_layer must be a whole number, got 2.5 (float)"),
        ("n_head", "2", "n_head must be a whole number, got '2' (str)"),
        ("n_embd", True, "n_embd must be a whole number, got True (bool)"),
        ("vocab_size", None, "vocab_size must be a whole number, got None (NoneType)"),
        ("layer_norm_epsilon", "1e-5", "layer_norm_epsilon must be a finite number, got '1e-5' (str)"),
        ("tie_word_embeddings", "yes", "tie_word_embeddings must be true or false, got 'yes' (str)"),
        ("n_layer", -1, "n_layer must be a positive integer, got -1 (int)"),
        ("n_layer", 5000, f"n_layer=5000 is more layers than dfgpt builds (at most {MAX_LAYERS}"),
    ],
)
def test_every_hugging_face_config_field_is_checked_before_any_weight_is_read(tmp_path, field, value, words):
    (tmp_path / "config.json").write_text(json.dumps(_hf_config(**{field: value})))
    (tmp_path / "model.safetensors").write_bytes(b"never read")
    with pytest.raises((CheckpointError, ConfigError), match=words.replace("(", r"\(").replace(")", r"\)")):
        dfgpt.load(tmp_path)


def test_a_dfgpt_config_with_an_absurd_block_size_is_refused_before_reading_weights(tmp_path):
    TINY_SAVED = random_model(TINY, seed=0)[0]
    TINY_SAVED.save(tmp_path)
    d = json.loads((tmp_path / "config.json").read_text())
    d["block_size"] = 10**12
    (tmp_path / "config.json").write_text(json.dumps(d))
    with pytest.raises(ConfigError, match=r"this config needs 8e\+12 parameters, 6.4e\+04 GB as float64"):
        dfgpt.load(tmp_path)
    d["n_layer"] = 1e30
    (tmp_path / "config.json").write_text(json.dumps(d))
    with pytest.raises(ConfigError, match=r"n_layer must be a positive integer, got 1e\+30 \(float\)"):
        dfgpt.load(tmp_path)


@pytest.mark.parametrize(
    "change, words",
    [
        ({"ln_eps": float("inf")}, "ln_eps must be a finite positive number"),
        ({"ln_eps": float("nan")}, "ln_eps must be a finite positive number"),
        ({"bias": 1}, "bias must be true or false, got 1"),
        ({"vocab": ("a", "b", 2)}, "vocab holds token texts (strings), got 2 (int)"),
        ({"n_embd": 10**5000, "n_head": 1}, "an integer of about 5000 digits"),
        ({"n_layer": 10**400}, "this config needs about 10^4"),
    ],
)
def test_config_fields_are_typed_and_ranged(change, words):
    with pytest.raises(ConfigError) as e:
        TINY.replace(**change)
    assert words in str(e.value)


def test_config_n_params_matches_the_weights(sort_random):
    assert sort_random.config.n_params == sort_random.n_params == 85728
    assert dfgpt.load("aab").config.n_params == dfgpt.load("aab").n_params


# -- a tokenizer file with an id far past the vocabulary -----------------------------------
def test_a_tokenizer_id_of_10_to_the_8_costs_only_the_real_vocabulary(tmp_path):
    bpe = tokenizers.ByteLevelBPETokenizer()
    bpe.train_from_iterator(["the cat sat on the mat"] * 5, vocab_size=260, min_frequency=1)
    bpe.save(str(tmp_path / "tokenizer.json"))
    V = bpe.get_vocab_size()
    last = bpe.encode("the mat").tokens[-1]
    d = json.loads((tmp_path / "tokenizer.json").read_text())
    d["model"]["vocab"][last] = 10**8
    (tmp_path / "tokenizer.json").write_text(json.dumps(d))
    cfg = Config(n_layer=1, n_head=1, n_embd=4, block_size=8, vocab_size=V)
    random_model(cfg, seed=0)[0].save(tmp_path)
    tracemalloc.start()
    try:
        model = dfgpt.load(tmp_path / "model.safetensors")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2**20, peak  # no table sized by the id 10**8 (800 MB as int64)
    assert len(model.vocab) == V
    assert model.tokenizer.encode("the mat")[-1] == 10**8
    with pytest.raises(TokenError, match="out of range"):
        model.sheet("the mat")
    assert isinstance(model.generate("the cat", max_new_tokens=1), str)


# -- generation ----------------------------------------------------------------------------
def test_cropped_generation_is_bounded(sort_random, monkeypatch):
    def no_decoding(*a, **k):
        pytest.fail("a token was decoded before max_new_tokens was refused")

    monkeypatch.setattr(generation_module, "_run", no_decoding)  # refused from the arguments, before any forward
    with pytest.raises(GenerateError) as e:
        sort_random.generate("CAB", max_new_tokens=10**9, crop=True)
    monkeypatch.undo()
    assert str(e.value) == (
        f"max_new_tokens=1000000000 is more than one call generates (at most {MAX_NEW_TOKENS:,}); "
        "generate in pieces, feeding each output back as the next prompt."
    )
    assert len(dfgpt.load("aab").generate("aab", max_new_tokens=300, crop=True)) == 300


def test_generate_takes_numbers_of_any_numeric_type_like_set(sort_random):
    plain = sort_random.generate("CAB", 3, temperature=0.5, top_k=2, top_p=0.9, seed=4)
    assert plain == sort_random.generate(
        "CAB", np.int64(3), temperature=np.float32(0.5), top_k=np.int64(2), top_p=np.float64(0.9), seed=np.int32(4)
    )
    assert plain == sort_random.generate("CAB", 3, temperature=Fraction(1, 2), top_k=2, top_p=0.9, seed=4)
    assert plain == sort_random.generate("CAB", np.array(3), temperature=np.array(0.5), top_k=2, top_p=0.9, seed=4)
    s = sort_random.sheet("CABACA")
    for v in (np.float32(0.5), Fraction(1, 2), np.int64(2), 0.5):
        s.set("h[0].ln_1.g[0]", v)
        assert s.value("h[0].ln_1.g[0]") == float(v)


@pytest.mark.parametrize("bad", [True, np.bool_(True), "0.5", None, [0.5]])
def test_generate_and_set_refuse_bools_and_non_numbers_alike(sort_random, bad):
    with pytest.raises(GenerateError, match="temperature must be a finite number >= 0"):
        sort_random.generate("CAB", 2, temperature=bad)
    if bad is not None:
        with pytest.raises(GenerateError, match="top_k must be an integer >= 1"):
            sort_random.generate("CAB", 2, top_k=bad)
    s = sort_random.sheet("CABACA")
    with pytest.raises(EditError, match="expected a number"):
        s.set("h[0].ln_1.g[0]", bad)
    assert not s.engine.pins and s.value("h[0].ln_1.g[0]") == sort_random.params["h[0].ln_1.g"][0]


# -- the command line: one line and a nonzero exit -------------------------------------------
@pytest.mark.parametrize("level", [[], ["--level", "attention"]])
def test_draw_below_a_regular_file_is_one_line(capsys, tmp_path, level):
    (tmp_path / "afile").write_text("x")
    err = _one_line_error(*_cli(capsys, "draw", "model", *level, "-o", str(tmp_path / "afile" / "x.svg")))
    assert f"cannot write the picture '{tmp_path}/afile/x.svg': Not a directory." in err
    assert "choose another path" in err
    assert (tmp_path / "afile").read_text() == "x"


@pytest.mark.parametrize("out, words", [
    ("/dev/null", "--out '/dev/null' exists and is not a folder"),
    ("afile/sub", "is below '{tmp}/afile', which is a file, not a folder"),
    ("y" * 5000, "File name too long"),
])
def test_train_out_that_cannot_be_a_folder_is_refused_before_training(capsys, monkeypatch, tmp_path, out, words):
    (tmp_path / "afile").write_text("x")
    path = out if out.startswith("/") else str(tmp_path / out)

    def no_training(*a, **k):
        pytest.fail("training started before --out was checked")

    monkeypatch.setattr(train_cli, "train_sort", no_training)
    err = _one_line_error(*_cli(capsys, "train", "sort", "--out", path))
    assert words.format(tmp=tmp_path) in err


def test_run_with_a_5000_character_model_name_is_one_line(capsys):
    err = _one_line_error(*_cli(capsys, "run", "--model", "x" * 5000))
    assert "no model named 'xxxxx" in err and "(5000 characters)" in err
    assert "cannot be a path (File name too long)" in err and "shipped models are sort" in err


def test_set_a_token_to_a_5000_digit_number_is_one_line(capsys):
    err = _one_line_error(*_cli(capsys, "set", "tokens[2]", "9" * 5000, "--model", "sort-random"))
    assert err == "dfgpt: error: tokens[2]: token id of 5000 digits is out of range; this vocabulary has ids 0..2.\n"
    err = _one_line_error(*_cli(capsys, "set", "h[0].ln_1.g[0]", "x" * 5000, "--model", "sort-random"))
    assert "expected a number, got 'xxxx" in err and "(5000 characters)" in err


# -- library calls that raised TypeError, ValueError, NotADirectoryError -----------------------
def test_to_npz_of_none_is_an_export_error(sort_random, tmp_path):
    s = sort_random.sheet("CABACA")
    with pytest.raises(ExportError, match="the npz path must be text or a path-like object, got NoneType"):
        s.to_npz(None)
    with pytest.raises(ExportError, match="the xlsx path must be text"):
        s.to_xlsx(3)


def test_compute_with_a_mask_of_the_wrong_shape_or_name(sort_random):
    s = sort_random.sheet("CABACA")
    with pytest.raises(IndexError_) as e:
        s.compute({"logit": np.ones((2, 2), bool)})
    assert str(e.value) == (
        "compute: the mask of logit must be a boolean array of shape (6, 3) (the tensor's shape), "
        "got a bool array of shape (2, 2); build it with sheet.masks('logit')."
    )
    with pytest.raises(IndexError_, match="got a float64 array"):
        s.compute({"logit": np.ones((6, 3))})
    with pytest.raises(UnknownNameError, match="Did you mean 'logit'"):
        s.compute({"logi": np.ones((6, 3), bool)})
    s.compute(s.masks("logit[5]"))
    assert s.value("logit[5][A]") == pytest.approx(float(s.values("logit")[5][0]))


def test_save_below_a_regular_file_is_an_output_error(sort_random, tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OutputError) as e:
        sort_random.save(tmp_path / "afile" / "sub")
    assert str(e.value) == (
        f"cannot save a model into '{tmp_path}/afile/sub': Not a directory. Expected a path whose parent "
        "folders exist or can be made and are folders, not files; choose another path."
    )
    with pytest.raises(OutputError, match="it exists and is not a folder"):
        sort_random.save(tmp_path / "afile")
    assert (tmp_path / "afile").read_text() == "x"


def test_picture_write_errors_are_render_errors(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(RenderError, match="Not a directory"):
        write(new_digraph("g"), tmp_path / "afile" / "g.dot")


# -- a gradient's value keeps the sign of a pinned -0.0 ---------------------------------------
def test_grad_value_of_a_cell_pinned_to_negative_zero_keeps_its_sign(sort_random):
    s = sort_random.sheet("CABACA")
    s.set("logit[5][A]", -0.0)
    g = s.grad("logit[5][A]")
    assert g.value == 0.0 and np.signbit(g.value)
    assert not np.signbit(s.grad("logit[4][A]").value) or s.value("logit[4][A]") < 0
    assert s.grad("logit[5]").value == pytest.approx(float(np.sum(s.values("logit")[5])))


# -- any name of up to 5,000 characters is a DfgptError within a second -----------------------
HANG = 30  # seconds: a call that takes this long on sort is stuck (each takes milliseconds), whatever the load
NAMES = st.one_of(
    st.text(max_size=5000),
    st.text(alphabet="h[]0123456789.:*,-_ abcdefgilmnoprstuvwxyzABC", max_size=5000),
    st.builds(lambda a, b: a + b, st.sampled_from(
        ["logit", "h[0].attn.att", "h[0].", "tokens", "wte", "wpe", "h[", "logit[5][", "h[0].mlp.c_fc.w"]
    ), st.text(alphabet="[]0123456789:*-,", max_size=4990)),
    st.builds(lambda a, sign, n, b: f"{a}[{sign}{'9' * n}]{b}",
              st.sampled_from(["logit", "logit[5]", "h", "wte", "tokens", "h[0].attn.att[0]"]),
              st.sampled_from(["", "-", "0:", ":", "1:2:"]),
              st.one_of(st.sampled_from([19, 4301, 4980]), st.integers(0, 4980)), st.sampled_from(["", ".out", "[0]"])),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                HealthCheck.too_slow])
@given(name=NAMES)
def test_no_name_raises_anything_but_a_dfgpt_error_and_none_hangs(sort_random, name):
    s = sort_random.sheet("CABACA")
    calls = [
        s.value, s.formula, s.precedents, s.dependents, s.provenance, s.influence, s.cells,
        s.grad, lambda n: s.set(n, 0.5), dfgpt.load,
    ]
    for call in calls:
        t0 = time.perf_counter()
        try:
            call(name)
        except DfgptError:
            pass
        assert time.perf_counter() - t0 < HANG, (call, name[:80])  # a hang guard, not a speed goal


def test_usage_errors_are_one_line_too(capsys):
    with pytest.raises(SystemExit) as e:
        main(["run", "--top", "x"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err == "dfgpt: error: run: argument --top: invalid int value: 'x'; see `dfgpt run --help`.\n"
    with pytest.raises(SystemExit):
        main(["export", "npz"])
    assert capsys.readouterr().err == (
        "dfgpt: error: export npz: the following arguments are required: path; see `dfgpt export npz --help`.\n"
    )


@pytest.mark.parametrize("fmt", ["npz", "xlsx"])
def test_export_below_a_regular_file_is_one_line(capsys, tmp_path, fmt):
    (tmp_path / "afile").write_text("x")
    err = _one_line_error(*_cli(capsys, "export", fmt, str(tmp_path / "afile" / f"x.{fmt}"), "--model", "sort-random"))
    assert f"the folder {tmp_path}/afile does not exist or is not a folder" in err
