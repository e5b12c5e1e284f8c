"""segtutor.claims: a claim recorded in a executed notebook is read back with its values."""

from __future__ import annotations

import json

import nbformat
import pytest
import torch
from nbclient import NotebookClient

from segtutor import claims


def _executed(code: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(code)]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    return nb


def test_claim_in_a_kernel_is_shown_glued_and_collected(tmp_path):
    nb = _executed(
        "from segtutor.claims import claim\n"
        "a = claim('A beats B', 0.7 > 0.5, a_score=0.7, b_score=0.5)\n"
        "b = claim('B beats A', 0.5 > 0.7, a_score2=0.7, b_score2=0.5)\n"
        "print(a, b)"
    )
    outputs = nb.cells[0].outputs
    texts = [o.get("data", {}).get("text/plain", "") for o in outputs]
    assert "claim holds: A beats B (a_score = 0.7, b_score = 0.5)" in texts
    assert "claim does NOT hold: B beats A (a_score2 = 0.7, b_score2 = 0.5)" in texts
    glued = {
        o["metadata"]["scrapbook"]["name"] for o in outputs if "scrapbook" in o.get("metadata", {})
    }
    assert {"a_score", "b_score", "a_score2", "b_score2"} <= glued
    assert any(o.get("text") == "True False\n" for o in outputs)

    found = claims.collect([("book/x.md", nb)], tmp_path / "claims.json")
    assert found == [
        {
            "chapter": "book/x.md",
            "claim": "A beats B",
            "values": {"a_score": 0.7, "b_score": 0.5},
            "holds": True,
        },
        {
            "chapter": "book/x.md",
            "claim": "B beats A",
            "values": {"a_score2": 0.7, "b_score2": 0.5},
            "holds": False,
        },
    ]
    assert json.loads((tmp_path / "claims.json").read_text()) == found
    assert claims.failing(found) == ["book/x.md: B beats A ({'a_score2': 0.7, 'b_score2': 0.5})"]


def test_claim_values_are_plain_numbers_and_nan_never_holds(capsys):
    assert claims.claim("t", True, x=torch.tensor(0.25)) is True
    assert claims.claim("nan", True, x=float("nan")) is False
    with pytest.raises(TypeError, match="'x' must be a real number"):
        claims.claim("t", True, x="0.3")
    with pytest.raises(TypeError, match="'x' must be a real number"):
        claims.claim("t", True, x=True)
    with pytest.raises(ValueError, match="give the values"):
        claims.claim("t", True)
    with pytest.raises(ValueError, match="sentence"):
        claims.claim(" ", True, x=1.0)


def test_a_long_claim_line_is_wrapped_at_88_columns(capsys, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_ipython(name, *args, **kwargs):
        if name.startswith(("IPython", "myst_nb")):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ipython)
    sentence = "the full pipeline beats the U-Net baseline " * 4
    claims.claim(sentence.strip(), True, pipeline_score=0.61, baseline_score=0.55)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) > 1 and all(len(line) <= 88 for line in lines)
    assert " ".join(line.strip() for line in lines).startswith("claim holds: the full pipeline")
