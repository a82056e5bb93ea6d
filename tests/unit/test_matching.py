import numpy as np
import pandas as pd

from ctcid.segmentation.matching import match_centres
from ctcid.segmentation.stage import attach_truth
from factory import make_annotations


def test_each_detection_gets_its_nearest_annotated_cell():
    truths = np.array([[10.0, 10.0], [50.0, 50.0], [90.0, 20.0]])
    detections = np.array([[51.0, 49.0], [9.0, 11.5], [88.0, 21.0]])
    assert match_centres(detections, truths, 6.0).tolist() == [1, 0, 2]


def test_far_detections_stay_unmatched():
    truths = np.array([[10.0, 10.0]])
    detections = np.array([[10.5, 10.0], [40.0, 40.0]])
    assert match_centres(detections, truths, 6.0).tolist() == [0, -1]
    assert match_centres(np.array([[17.0, 10.0]]), truths, 6.0).tolist() == [-1]


def test_one_annotated_cell_is_matched_once_to_the_closest_detection():
    truths = np.array([[20.0, 20.0]])
    detections = np.array([[23.0, 20.0], [21.0, 20.0]])
    assert match_centres(detections, truths, 6.0).tolist() == [-1, 0]


def test_assignment_maximises_matches_over_greedy_nearest():
    # Greedy would give truth 0 to detection 0 (distance 1) and leave detection 1 unmatched.
    truths = np.array([[0.0, 0.0], [6.0, 0.0]])
    detections = np.array([[1.0, 0.0], [-4.0, 0.0]])
    assert match_centres(detections, truths, 5.0).tolist() == [1, 0]


def test_empty_inputs():
    assert match_centres(np.zeros((0, 2)), np.array([[1.0, 1.0]]), 6.0).tolist() == []
    assert match_centres(np.array([[1.0, 1.0]]), np.zeros((0, 2)), 6.0).tolist() == [-1]


def test_attach_truth_fills_true_columns_and_leaves_unmatched_rows_empty():
    table = pd.DataFrame({"x": np.float32([10, 60]), "y": np.float32([10, 60])})
    truth = make_annotations(
        cell_id=["f000-c000"], x=[11.0], y=[9.0], cell_type="ctc", label="CTC", cep8_copies=4,
        cd45_status="negative",
    )
    out = attach_truth(table, truth, 6.0)
    assert out["matched"].tolist() == [True, False]
    assert out.loc[0, "true_cell_id"] == "f000-c000" and out.loc[0, "true_cep8"] == 4
    assert out.loc[0, "true_label"] == 1 and out.loc[0, "true_cd45"] == "negative"
    assert out.loc[1, ["true_cell_id", "true_cep8", "true_label"]].isna().all()
    assert str(out["true_cep8"].dtype) == "Int16" and str(out["true_label"].dtype) == "Int8"

    unannotated = attach_truth(table, None, 6.0)
    assert not unannotated["matched"].any() and unannotated["true_label"].isna().all()
