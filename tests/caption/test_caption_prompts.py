from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from groundsynth.caption.facts import facts_from_mask, facts_from_percentages
from groundsynth.caption.prompts import (
    FIELDS,
    STREAMS,
    load_template,
    prompt_fields,
    render_prompt,
)
from groundsynth.errors import InputError


@pytest.fixture
def facts():
    mask = np.full((60, 60), 3, dtype=np.uint8)
    mask[:, :20] = 0
    mask[28:31, :] = 6
    return facts_from_mask(mask, "N40E033_041_023")


@pytest.mark.parametrize("stream", STREAMS)
def test_builtin_templates_render(stream, facts) -> None:
    text = render_prompt(stream, facts)
    assert "{" not in text and "}" not in text
    assert not any(line.lstrip().startswith("#") for line in text.splitlines())
    if stream == "vision":
        assert "Crop" not in text  # the vision stream sees no facts
    else:
        assert "- Crop: 63 %" in text and "north-west: Tree" in text
        assert "river or canal" in text
        assert "absent here: Shrub, Grass, Built-up and Barren" in text


def test_text_stream_without_layout() -> None:
    f = facts_from_percentages([30, 0, 0, 70, 0, 0, 0], "a.png")
    text = render_prompt("text", f)
    assert "- Crop: 70 %\n- Tree: 30 %" in text
    assert "ninth" not in text and "\n\n\n" not in text


def test_fields_cover_every_name(facts) -> None:
    values = prompt_fields(facts)
    assert set(values) == set(FIELDS)
    assert values["pct_built_up"] == "0" and values["dominant"] == "Crop"
    assert values["composition"].startswith("Crop 63 %, Tree 32 %")


def test_user_templates_override_and_are_validated(tmp_path: Path, facts) -> None:
    (tmp_path / "text.txt").write_text("# mine\nDescribe {composition}; braces {{ok}}.\n")
    t = load_template("text", tmp_path)
    assert t.fields == ("composition",)
    assert t.render(facts) == "Describe Crop 63 %, Tree 32 %, Water 5 %; braces {ok}.\n"
    single = tmp_path / "one.txt"
    single.write_text("Water: {pct_water}\n")
    assert load_template("hybrid", single).render(facts) == "Water: 5\n"
    (tmp_path / "bad.txt").write_text("{colour}\n")
    with pytest.raises(InputError, match=r"bad\.txt.*colour.*valid fields"):
        load_template("text", tmp_path / "bad.txt")
    (tmp_path / "brace.txt").write_text("a { b\n")
    with pytest.raises(InputError, match="brace"):
        load_template("text", tmp_path / "brace.txt")
    with pytest.raises(InputError, match="not found"):
        load_template("vision", tmp_path)
    with pytest.raises(InputError, match="valid streams: hybrid, vision, text"):
        load_template("audio")
