"""'Looks new': confidence or fractions outside what the validation samples showed."""

from __future__ import annotations

from chromowatch.review.novelty import GroupFigures, reference_groups, unlike_validation

GROUPS = [GroupFigures("wt", 0.85, {"A": 0.7, "B": 0.25, "C": 0.05}),
          GroupFigures("ddx11", 0.80, {"A": 0.2, "B": 0.45, "C": 0.35})]


def test_a_sample_like_validation_is_not_new() -> None:
    assert unlike_validation(0.82, {"A": 0.4, "B": 0.4, "C": 0.2}, GROUPS,
                             confidence_tolerance=0.05, fraction_tolerance=0.15) == []


def test_low_confidence_or_fractions_outside_are_named() -> None:
    why = unlike_validation(0.6, {"A": 0.1, "B": 0.18, "C": 0.8}, GROUPS,
                            confidence_tolerance=0.05, fraction_tolerance=0.15)
    assert any("confidence 0.60" in w for w in why)
    assert any("predicted C fraction 0.80" in w for w in why)
    assert not any("A fraction" in w for w in why)


def test_nothing_to_compare_with_says_nothing() -> None:
    assert unlike_validation(0.1, {"A": 1.0, "B": 0, "C": 0}, [],
                             confidence_tolerance=0.05, fraction_tolerance=0.1) == []


def test_reference_groups_prefer_cross_sample_groups() -> None:
    metrics = {
        "holdout": {"per_sample": {"wt": {"mean_confidence": 0.9, "predicted_fractions":
                                          {"A": 1, "B": 0, "C": 0}}}},
        "cross_sample": {"folds": [{"group": "ddx11", "mean_confidence": 0.7,
                                    "predicted_fractions": {"A": 0.1, "B": 0.5, "C": 0.4}}]},
    }
    assert [g.name for g in reference_groups(metrics)] == ["ddx11"]
    del metrics["cross_sample"]
    assert [g.name for g in reference_groups(metrics)] == ["wt"]
    assert reference_groups(None) == []
