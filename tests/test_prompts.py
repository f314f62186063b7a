"""Prompt sets: text, JSONL, the PartiPrompts TSV with selectors, packaged sets."""

import pytest

from parrot_t2i.config import ConfigError
from parrot_t2i.prompts import read_prompt_file

PARTI = (
    "Prompt\tCategory\tChallenge\tNote\n"
    "bond\tAbstract\tBasic\tBiology-inspired concepts with multiple meanings\n"
    "a cat sitting on a mat\tAnimals\tBasic\t\n"
    "a red cube on top of a blue sphere\tArtifacts\tProperties & Positioning\tcolour binding\n"
    "an owl wearing a tuxedo, oil painting\tAnimals\tImagination\t\n"
)


def test_partiprompts_tsv_and_selectors(tmp_path):
    path = tmp_path / "PartiPrompts.tsv"
    path.write_text(PARTI)
    assert read_prompt_file(str(path), "eval.file") == [
        "bond",
        "a cat sitting on a mat",
        "a red cube on top of a blue sphere",
        "an owl wearing a tuxedo, oil painting",
    ]
    assert read_prompt_file(f"{path}#Category=Animals", "eval.file") == [
        "a cat sitting on a mat",
        "an owl wearing a tuxedo, oil painting",
    ]
    assert read_prompt_file(f"{path}#Challenge=Properties & Positioning", "eval.file") == [
        "a red cube on top of a blue sphere"
    ]
    with pytest.raises(
        ConfigError,
        match="selector '#Colour=red' must be COLUMN=VALUE with a column of \\['Prompt', 'Category', 'Challenge', "
        "'Note'\\]",
    ):
        read_prompt_file(f"{path}#Colour=red", "eval.file")
    with pytest.raises(ConfigError, match="holds no prompts"):
        read_prompt_file(f"{path}#Category=Vehicles", "eval.file")
    bad = tmp_path / "bad.tsv"
    bad.write_text("Text\tCategory\nx\ty\n")
    with pytest.raises(ConfigError, match="needs a 'Prompt' column"):
        read_prompt_file(str(bad), "eval.file")


def test_jsonl_and_text_files(tmp_path):
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text('{"prompt": "a cat", "id": 1}\n\n"a dog"\n')
    assert read_prompt_file(str(jsonl), "prompts.file") == ["a cat", "a dog"]
    jsonl.write_text('{"text": "a cat"}\n')
    with pytest.raises(ConfigError, match="line 1: expected"):
        read_prompt_file(str(jsonl), "prompts.file")
    text = tmp_path / "p.txt"
    text.write_text("# a comment\na cat\n\n a dog \n")
    assert read_prompt_file(str(text), "prompts.file") == ["a cat", "a dog"]
    with pytest.raises(ConfigError, match="selector works with PartiPrompts .tsv files only"):
        read_prompt_file(f"{text}#Category=x", "prompts.file")
    assert len(read_prompt_file("builtin:mini-heldout", "eval.file")) == 30
