"""One rule for META JSON in both directions: what the writer refuses, the reader refuses, so a file
that loads also runs and saves; and the cpu device loads the bytes it was given (issue 15, item 4)."""

from __future__ import annotations

import numpy as np
import pytest
from test_format import assemble, every_kind_model, parts_of

import edgesnn as es

LONE_SURROGATE_JSON = b'{"labels": ["\\ud800"]}'


def with_meta(data: bytes, meta: bytes) -> bytes:
    """`data` with its META section replaced by `meta` (the other sections as they are)."""
    return assemble([(tag, meta if tag == b"META" else payload) for tag, payload in parts_of(data)])


@pytest.mark.parametrize("meta, words", [
    (LONE_SURROGATE_JSON, "lone surrogate"),
    (b'{"frontend": {"config": {"\\udfff": 1}}}', "lone surrogate"),
    (b'{"output_scale": 1e999}', "inf"),
    (b'{"output_scale": [1.0, -1e999]}', "-inf"),
    (b'{"threshold": NaN}', "NaN"),
])
def test_the_reader_refuses_metadata_the_writer_would_refuse(meta, words):
    data = with_meta(every_kind_model(8).to_bytes(), meta)
    with pytest.raises(es.FormatError) as info:
        es.Model.from_bytes(data)
    assert words in str(info.value) and info.value.section == "META"
    assert "\n" not in str(info.value)


def test_the_writer_refuses_a_lone_surrogate_with_a_format_error_naming_the_key():
    model = every_kind_model(8, metadata={"labels": ["ok", "bad\udc80"]})
    with pytest.raises(es.FormatError, match=r"metadata\['labels'\]\[1\] holds the lone surrogate") as info:
        model.to_bytes()
    assert info.value.section == "META"


def test_metadata_the_reader_accepts_round_trips_through_the_writer():
    meta = '{"labels": ["\\u00e9t\\u00e9", "\\ud83d\\ude00", "日本"], "scale": 1e300, "big": 123456789012345678901}'
    data = with_meta(every_kind_model(8).to_bytes(), meta.encode())
    model = es.Model.from_bytes(data)
    assert model.metadata["labels"] == ["été", "😀", "日本"]
    assert es.Model.from_bytes(model.to_bytes()).metadata == model.metadata


def test_the_cpu_device_loads_the_bytes_it_was_given():
    native = pytest.importorskip("edgesnn.native")
    data = every_kind_model(8).to_bytes()
    model = es.Model.from_bytes(data)
    model.metadata["not json"] = object()        # the model can no longer be written ...
    with pytest.raises(es.FormatError):
        model.to_bytes()
    report = model.check("cpu")                  # ... yet it runs: the device loads the bytes it was read from
    assert report.fits, report
    x = np.zeros((1, *model.input_shape), np.uint8)
    assert np.array_equal(model.forward(x, device="cpu"), es.Model.from_bytes(data).forward(x, device="reference"))
    assert model.device_cache[native.LIBRARY.key].memory_bytes > 0
