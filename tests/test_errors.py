"""The error tree (schema/errors.py): each class carries its HTTP status, the module's
drawing says the same, and the api answers every one through a single handler."""

from __future__ import annotations

import re

import pytest

from docbatch.schema import errors

pytestmark = pytest.mark.fast


def test_the_drawn_tree_states_each_class_status():
    drawn = {
        name: int(status)
        for name, status in re.findall(r"── (\w+) +(\d{3}) ", errors.__doc__ or "")
    }
    assert drawn["InputError"] == 422 and drawn["NotFound"] == 404, drawn
    answers = {
        name
        for name, cls in vars(errors).items()
        if isinstance(cls, type) and issubclass(cls, errors.DocbatchError) and cls.status < 500
    }
    # Every class the api answers with is drawn with its status (BatchApiError's varies).
    assert answers - {"BatchApiError"} == set(drawn), answers ^ set(drawn)
    for name, status in drawn.items():
        assert getattr(errors, name).status == status, name
    # The worker's errors are never an answer.
    assert errors.PermanentError.status == errors.ModelUnavailable.status == 500
    assert not hasattr(errors, "TransientError")  # never raised: the driver's errors are


def test_the_api_has_one_handler_for_the_whole_tree():
    from docbatch.api.app import create_app

    handled = [c for c in create_app().exception_handlers if isinstance(c, type)]
    ours = [c for c in handled if issubclass(c, errors.DocbatchError)]
    assert ours == [errors.DocbatchError], ours
