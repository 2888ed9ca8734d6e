from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from groundsynth.caption.corpora import (
    CaptionRecord,
    detect_format,
    read_captions,
    table_streams,
)
from groundsynth.classes import CLASS_NAMES
from groundsynth.data.contract import CAPTION_STREAMS
from groundsynth.errors import InputError
from tests.caption.dataset import write_dataset_tables


def write_aras_csv(path: Path, rows: int = 7, split: str = "train") -> Path:
    """A tiny ARAS-layout captions CSV: filename, split, 7 percentages, 5 streams."""
    data = []
    for i in range(rows):
        pct = [0] * 7
        pct[i % 7], pct[(i + 1) % 7] = 60, 40
        caps = [f"caption {i} of {s}" for s in CAPTION_STREAMS]
        data.append([f"N40E033_{i:03d}_001.png", split, *pct, *caps])
    df = pd.DataFrame(data, columns=["filename", "split", *CLASS_NAMES, *CAPTION_STREAMS])
    if rows > 2:
        df.loc[2, "text_qwen3-4b"] = ""
    df.to_csv(path, index=False)
    return path


def test_aras_table_streams_in_chunks(tmp_path: Path) -> None:
    path = write_aras_csv(tmp_path / "captions.csv")
    assert detect_format(path) == "table"
    assert table_streams(path) == list(CAPTION_STREAMS)
    rows = list(read_captions(path, chunksize=3))
    assert len(rows) == 7 * 5
    first = rows[0]
    assert first == CaptionRecord(
        "N40E033_000_001.png#hybrid_gemma3-4b",
        "N40E033_000_001.png",
        "hybrid_gemma3-4b",
        "caption 0 of hybrid_gemma3-4b",
        "train",
        (60.0, 40.0, 0.0, 0.0, 0.0, 0.0, 0.0),
    )
    empty = [
        r for r in rows if r.image_id.startswith("N40E033_002") and r.stream.startswith("text")
    ]
    assert empty[0].text == ""
    only = list(read_captions(path, streams=["vision_gemma3-4b"]))
    assert len(only) == 7 and {r.stream for r in only} == {"vision_gemma3-4b"}
    with pytest.raises(InputError, match="streams here: hybrid_gemma3-4b"):
        list(read_captions(path, streams=["nope"]))


def test_dataset_folder_and_parquet_tables(tmp_path: Path) -> None:
    (tmp_path / "captions").mkdir()
    write_aras_csv(tmp_path / "captions" / "val.csv", rows=2, split="val")
    write_aras_csv(tmp_path / "captions" / "train.csv", rows=3, split="train")
    assert detect_format(tmp_path) == "table"
    splits = [r.split for r in read_captions(tmp_path)]
    assert splits == ["train"] * 15 + ["val"] * 10  # split order, not file-name order
    pq = tmp_path / "t.parquet"
    pd.read_csv(tmp_path / "captions" / "val.csv", keep_default_na=False).to_parquet(pq)
    assert detect_format(pq) == "table" and len(list(read_captions(pq))) == 10


def test_table_without_percentages(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    pd.DataFrame({"id": ["a", "b"], "mine": ["A lake.", "NA"]}).to_csv(path, index=False)
    rows = list(read_captions(path))
    assert [(r.image_id, r.stream, r.text, r.split, r.composition) for r in rows] == [
        ("a", "mine", "A lake.", None, None),
        ("b", "mine", "NA", None, None),
    ]


def test_karpathy_json(tmp_path: Path) -> None:
    data = {
        "dataset": "UCM",
        "images": [
            {"filename": "1.tif", "imgid": 0, "split": "train",
             "sentences": [{"raw": "A farm .", "sentid": 0}, {"tokens": ["a", "farm"]}]},
            {"imgid": 7, "sentences": [{"raw": "Some trees."}]},
        ],
    }  # fmt: skip
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps(data))
    assert detect_format(path) == "karpathy"
    rows = list(read_captions(path))
    assert [(r.caption_id, r.image_id, r.stream, r.text, r.split) for r in rows] == [
        ("0", "1.tif", "ucm", "A farm .", "train"),
        ("1.tif#1", "1.tif", "ucm", "a farm", "train"),
        ("7#0", "7", "ucm", "Some trees.", None),
    ]
    with pytest.raises(InputError, match="only stream is 'ucm'"):
        list(read_captions(path, streams=["rsicd"]))


def test_sydney_text_with_split_lists(tmp_path: Path) -> None:
    path = tmp_path / "descriptions_SIDNEY.txt"
    path.write_bytes(
        b"1 a residential area\r\n1 houses and roads\r\n\r\n2 a river \r\n3 an airport"
    )
    (tmp_path / "filenames_train.txt").write_bytes(b"1.tif\r\n2.tif\r\n")
    (tmp_path / "filenames_test.txt").write_text("3.tif\n")
    assert detect_format(path) == "sydney"
    rows = list(read_captions(path))
    assert [(r.caption_id, r.image_id, r.text, r.split) for r in rows] == [
        ("1.tif#0", "1.tif", "a residential area", "train"),
        ("1.tif#1", "1.tif", "houses and roads", "train"),
        ("2.tif#0", "2.tif", "a river", "train"),
        ("3.tif#0", "3.tif", "an airport", "test"),
    ]
    bad = tmp_path / "more.txt"
    bad.write_text("4 fine\nnot a numbered line\n")
    with pytest.raises(InputError, match=r"more\.txt:2"):
        list(read_captions(bad, format="sydney"))


def test_detect_format_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        detect_format(tmp_path / "missing.csv")
    odd = tmp_path / "odd.txt"
    odd.write_text("hello world\n")
    with pytest.raises(InputError, match="unknown caption format"):
        detect_format(odd)
    with pytest.raises(InputError, match="valid formats"):
        list(read_captions(odd, format="coco"))


@pytest.mark.realdata
def test_real_sydney_and_ucm_corpora(shared_data: Path) -> None:
    sydney = shared_data / "captions" / "sydney" / "descriptions_SIDNEY.txt"
    rows = list(read_captions(sydney))
    assert len(rows) == 3065
    assert len({r.image_id for r in rows}) == 613
    assert {r.split for r in rows} == {"train", "val", "test"}
    ucm = list(read_captions(shared_data / "captions" / "ucm" / "dataset.json"))
    assert len(ucm) == 10_500 and len({r.image_id for r in ucm}) == 2100


def test_extra_caption_columns_fold_into_their_stream(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    pd.DataFrame(
        {
            "filename": ["a.png"],
            "text_template": ["One."],
            "text_template_3": ["Three."],
            "text_template_2": ["Two."],
            "other_2": ["Alone."],  # no column "other": a stream of its own
        }
    ).to_csv(path, index=False)
    assert table_streams(path) == ["text_template", "other_2"]
    rows = list(read_captions(path))
    assert [(r.caption_id, r.stream, r.text) for r in rows] == [
        ("a.png#text_template", "text_template", "One."),
        ("a.png#text_template#2", "text_template", "Two."),
        ("a.png#text_template#3", "text_template", "Three."),
        ("a.png#other_2", "other_2", "Alone."),
    ]
    assert len(list(read_captions(path, streams=["text_template"]))) == 3


def test_dataset_without_captions_folder_is_an_error(tmp_path: Path) -> None:
    root = write_dataset_tables(tmp_path / "ds")
    message = r"ds: no captions tables \(captions/<split>\.csv\); run `groundsynth caption"
    with pytest.raises(InputError, match=message):
        detect_format(root)
    with pytest.raises(InputError, match=message):
        list(read_captions(root, format="table"))
    (root / "captions").mkdir()  # an empty captions/ folder: the same error
    with pytest.raises(InputError, match=message):
        table_streams(root)
    plain = tmp_path / "plain"  # a folder of tables that is no dataset still reads
    plain.mkdir()
    write_aras_csv(plain / "mine.csv", rows=2)
    assert len(list(read_captions(plain))) == 10
