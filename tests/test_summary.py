"""The run's summary table and the model report print each metric with its 95 % interval."""

import json

from workflow.reports.intervals import cell
from workflow.reports.model_report import render
from workflow.reports.summary import describe_decision, summary_table


def _flat(auc):
    return {"test_score": auc, "click/auc": auc, "click/auc_lo": auc - 0.0068, "click/auc_hi": auc + 0.0068,
            "click/gauc": 0.61, "click/gauc_lo": 0.6, "click/gauc_hi": 0.62, "click/calibration": 1.02,
            "click/calibration_lo": 0.98, "click/calibration_hi": 1.06}


def test_the_table_shows_each_auc_with_its_interval_then_the_other_metrics():
    lines = summary_table({"mmoe": _flat(0.7129), "ple": _flat(0.7101)},
                          {"split": "test", "source": "true p", "metrics": {"click": {"auc": 0.7371}}})
    assert lines[0] == "| model | test_score | click/auc |"
    assert lines[2] == "| mmoe | 0.7129 | 0.7129 [0.7061, 0.7197] |" and lines[3].startswith("| ple | 0.7101 |")
    assert "| true probabilities (ceiling) |  | 0.7371 |" in lines
    second = lines.index("| model | click/calibration | click/gauc |")
    assert lines[second + 2] == "| mmoe | 1.0200 [0.9800, 1.0600] | 0.6100 [0.6000, 0.6200] |"
    assert any(line.startswith("In brackets: the 95 % interval") for line in lines)


def test_cell_without_an_interval_or_value():
    assert cell({"a": 0.5}, "a") == "0.5000" and cell({}, "a") == "" and cell({"a": float("nan")}, "a") == "nan"


def test_decision_words_of_the_paired_rule_and_the_top_two():
    words = describe_decision({"decision": "rejected", "candidate_version": "5", "champion_version": "3",
                               "words": "kept mmoe (v3): ple (v5) +0.0012 click AUC [-0.0010, +0.0034], not "
                                        "significant (p=0.28)", "metric": "val/click/auc",
                               "candidate_test_score": 0.71, "champion_test_score": 0.70,
                               "top_two": "ple (v5), the run's best by val_score, cannot be separated from ..."},
                              {"3": "mmoe", "5": "ple"})
    assert words == ("kept mmoe (v3): ple (v5) +0.0012 click AUC [-0.0010, +0.0034], not significant (p=0.28) "
                     "(test_score, reported: candidate 0.7100, champion 0.7000). ple (v5), the run's best by "
                     "val_score, cannot be separated from ...")


def test_the_model_report_gives_test_and_validation_with_intervals(tmp_path):
    saved = {"model_name": "mmoe", "best_epoch": 2, "test_score": 0.7129, "val_score": 0.7,
             "test_metrics": {"click": {"auc": 0.7129, "auc_lo": 0.7061, "auc_hi": 0.7197}},
             "val_metrics": {"click": {"auc": 0.70, "auc_lo": 0.69, "auc_hi": 0.71}}}
    (tmp_path / "metrics.json").write_text(json.dumps(saved))
    flat = render(tmp_path, tmp_path / "r.html", tmp_path / "r.md")
    assert flat["click/auc_lo"] == 0.7061
    md = (tmp_path / "r.md").read_text()
    assert "| click/auc | 0.7129 [0.7061, 0.7197] | 0.7000 [0.6900, 0.7100] |" in md
    assert "0.7129 [0.7061, 0.7197]" in (tmp_path / "r.html").read_text()
