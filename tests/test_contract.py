"""The command line's contract (DESIGN.md: keep these names) against its record in tests/golden/.

The files were written by the command line before ``compare/`` was cut into its rooms (issue
19), and edited only where a change was meant: ``list``'s lesson column cites each lesson
(docs/LESSONS.md) instead of a private path, and ``parity``'s ``bound.why`` names the
registry's new path; the ``translate`` verb (issue 21) added its own help and a line in the
verbs' list, its ``--weights PATH`` (an Orbax checkpoint unless ``.safetensors``) a help
line, and ``--lr`` (the check's learning rate) one more. Every verb's help, ``list`` (text and
JSON) and two ``parity --json`` runs must still read the same: the same fields, the same
words; numbers to rounding (they are float64 differences of order 1e-16, which another library
version may round otherwise).
"""

import json
import math
import re
from pathlib import Path

import pytest

from compare.cli import main

GOLDEN = Path(__file__).parent / "golden"
VERBS = ("list", "run", "parity", "check", "translate", "bench", "convert")


def same(got, want, where="result"):
    """``got`` has ``want``'s keys, types and words; its numbers agree to rounding."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and list(got) == list(want), f"{where}: {list(got)}"
        for key in want:
            same(got[key], want[key], f"{where}.{key}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            same(g, w, f"{where}[{i}]")
    elif isinstance(want, float) and not isinstance(want, bool):
        assert isinstance(got, float), f"{where}: {got!r}"
        assert math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-12), f"{where}: {got} vs {want}"
    else:
        assert got == want and type(got) is type(want), f"{where}: {got!r} vs {want!r}"


def test_every_verbs_help_reads_as_before(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")  # argparse wraps to the terminal's width
    helps = json.loads((GOLDEN / "help.json").read_text())
    for verb in ("twinnets", *VERBS):
        argv = ["--help"] if verb == "twinnets" else [verb, "--help"]
        with pytest.raises(SystemExit) as done:
            main(argv)
        assert done.value.code == 0
        assert capsys.readouterr().out == helps[verb], verb


def test_list_reads_as_before(cli):
    code, out, err = cli("list", "--json")
    assert code == 0, err
    rows = json.loads(out)
    recorded = json.loads((GOLDEN / "list.json").read_text())
    # the recorded tasks read as before (a task added since adds its row)
    same([row for row in rows if row["name"] in {r["name"] for r in recorded}], recorded)
    assert not any("seeds/" in row["lesson"] for row in rows)
    code, text, err = cli("list")
    assert code == 0 and text.splitlines()[0].split() == ["task", "dataset", "tiers", "lesson"]
    for row in rows:
        assert f"{row['name']} " in text and row["lesson"] in text


@pytest.mark.parametrize(
    "name, argv",
    [
        ("pos", ("pos-tagger", "--steps", "40")),  # a test split scored by accuracy
        ("housing", ("housing-regularization", "--steps", "12")),  # noise, four nets, a forecast
    ],
)
def test_parity_reads_as_before(cli, name, argv):
    code, out, err = cli("parity", *argv, "--json")
    assert code == 0, err
    same(json.loads(out), json.loads((GOLDEN / f"parity_{name}.json").read_text()))


def test_parity_text_reads_as_before(cli):
    code, out, err = cli("parity", "pos-tagger", "--steps", "40", "--no-progress")
    assert code == 0, err

    def words(text):  # numbers masked: the text around them is the contract
        return re.sub(r"\d+(\.\d+)?(e[+-]\d+)?", "#", text)

    assert words(out) == words((GOLDEN / "parity_pos.txt").read_text())


def test_the_comparison_sees_a_renamed_field_a_new_word_and_a_moved_number():
    want = {"loss_max_rel_diff": 1e-16, "passed": True, "noise": "drawn once in numpy"}
    same(dict(want), want)
    same({**want, "loss_max_rel_diff": 3e-16}, want)  # rounding
    for got in (
        {"loss_rel_diff": 1e-16, "passed": True, "noise": "drawn once in numpy"},
        {**want, "noise": "drawn by each side"},
        {**want, "loss_max_rel_diff": 1e-9},
        {**want, "passed": 1},
    ):
        with pytest.raises(AssertionError):
            same(got, want)
