"""`parrot evaluate`: a report from a tiny run and a base model, side by side."""

import json
from html.parser import HTMLParser

from parrot_t2i.cli import main


class Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.sources, self.files, self.tables = [], [], 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.sources.append(attrs["src"])
            self.files.append(attrs["data-file"])
        self.tables += tag == "table"


def test_evaluate_writes_a_self_contained_report(tmp_path, capsys, train_tiny):
    run = tmp_path / "run"
    assert train_tiny(run) == 0
    prompts = tmp_path / "parti.tsv"
    prompts.write_text(
        "Prompt\tCategory\tChallenge\tNote\na red circle\tShapes\tBasic\t\na blue square\tShapes\tBasic\t\na "
        "cat\tAnimals\tBasic\t\n"
    )
    out = tmp_path / "report"
    argv = [
        "evaluate",
        "--run",
        str(run),
        "--model",
        "builtin:tiny",
        "--prompts",
        f"{prompts}#Category=Shapes",
        "--images-per-prompt",
        "2",
        "--rewards",
        "brightness,colorfulness",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert [e["label"] for e in results["entries"]] == ["run", "builtin:tiny"]
    # The reference is each reward's 10% quantile over the first entry's images, stated in the report.
    first = results["entries"][0]
    assert (
        results["hypervolume_reference_is"] == "each reward's 10% quantile over the images of 'run'"
        and len(results["hypervolume_reference"]) == 2
    )
    for entry in results["entries"]:
        assert entry["images"] == 4 and set(entry["rewards"]) == {"brightness", "colorfulness", "average"}
        brightness = entry["rewards"]["brightness"]
        assert 0 <= brightness["mean"] <= 1 and brightness["ci95"] > 0 and brightness["n"] == 4
        assert entry["hypervolume_per_prompt"] >= 0
        (one, r), (r_t, other) = entry["within_prompt_correlation"]  # each prompt's mean removed
        assert one == other == 1.0 and r == r_t and -1 <= r <= 1
    assert results["entries"][0]["examples"][0]["prompt"] == "a red circle"  # the run expanded it with its PEN
    parser = Images()
    parser.feed((out / "report.html").read_text())
    assert (
        parser.tables == 2  # the rewards, and their within-prompt correlation
        and sorted(parser.files) == sorted(results["plots"])
        and all(s.startswith(("data:image/png;base64,", "data:image/svg+xml;base64,")) for s in parser.sources)
    )
    assert sum(s.startswith("data:image/svg+xml") for s in parser.sources) == 1  # the one front plot, as SVG
    assert (out / "front_brightness_colorfulness.svg").is_file()
    assert {"grid_0.png", "grid_1.png", "front_brightness_colorfulness.png"} <= {p.name for p in out.iterdir()}
    report = (out / "report.md").read_text()
    assert (
        first["hypervolume_per_prompt"] > 0
    )  # 10% of its images sit at or below the reference, the rest cover some volume
    assert (
        "| run |" in report
        and "| builtin:tiny |" in report
        and "HV per prompt: the reward-space volume" in report
        and "](front_brightness_colorfulness.png)" in report
        and "![brightness vs colorfulness: every image" in report
        and "| entry | brightness–colorfulness |" in report
        and f"| run | {first['within_prompt_correlation'][0][1]:+.2f} |" in report
    )
    assert "wrote" in capsys.readouterr().out

    assert main(["evaluate", "--model", "builtin:tiny", "--out", str(out)]) == 2
    assert "--rewards is needed" in capsys.readouterr().err
    assert (
        main(
            ["evaluate", "--model", "builtin:tiny", "--rewards", "brightness", "--reference", "0,1", "--out", str(out)]
        )
        == 2
    )
    assert "--reference needs one value per reward" in capsys.readouterr().err


def test_ema_by_hand():
    from parrot_t2i.plots import ema

    # s1 = 1; s2 = 0.5·3 + 0.5·1 = 2; a NaN carries 2 forward; s4 = 0.5·6 + 0.5·2 = 4.
    assert ema([1.0, 3.0, float("nan"), 6.0], alpha=0.5).tolist() == [1.0, 2.0, 2.0, 4.0]
    assert ema([float("nan"), 2.0], alpha=0.5)[1] == 2.0  # the first finite value starts the average
