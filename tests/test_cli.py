"""The command line runs the same queries as the Python API."""

from __future__ import annotations

import subprocess
import sys

from dfgpt.cli import main


def test_run_prints_logits_and_probabilities(capsys):
    assert main(["run", "CABACA", "--model", "sort-random"]) == 0
    out = capsys.readouterr().out
    assert "pos  5 'A'" in out and "greedy next tokens" in out
    assert out.count("logit") >= 6


def test_formula_and_precedents(capsys, sort_random):
    assert main(["formula", "logit[5][A]", "--model", "sort-random"]) == 0
    out = capsys.readouterr().out
    assert "logit[5][A] = Σ_{i=0..47} ln_f.out[5][i] · lm_head.w[A][i]" in out
    value = sort_random.sheet("CABACA").value("logit[5][A]")
    assert f"value: {value:.10g}" in out
    assert main(["precedents", "logit[5][A]", "--model", "sort-random"]) == 0
    lines = capsys.readouterr().out.split()
    assert len(lines) == 96 and lines[0] == "ln_f.out[5][0]" and lines[-1] == "lm_head.w[A][47]"


def test_bad_input_exits_2_with_a_message(capsys):
    assert main(["formula", "logti[5][A]", "--model", "sort-random"]) == 2
    assert "Did you mean 'logit'" in capsys.readouterr().err


def test_python_dash_m_works():
    out = subprocess.run(
        [sys.executable, "-m", "dfgpt", "precedents", "h[0].ln_1.mean[0]", "--model", "sort-neat"],
        capture_output=True, text=True, check=True,
    ).stdout
    assert out.split()[:2] == ["emb[0][0]", "emb[0][1]"]
