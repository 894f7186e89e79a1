"""TF Serving warm-up requests, written without the serving API package.

    write_warmup_requests(version_dir, "ganomaly", {"serving_bytes": {"encoded": files}})

TF Serving replays ``<version>/assets.extra/tf_serving_warmup_requests`` (a TFRecord
file of ``PredictionLog`` protos) when it loads a version, so the first real request
does not pay for graph tracing and memory allocation. The few protobuf fields needed
are encoded here by hand (``tensorflow-serving-api`` pulls in the GPU TensorFlow build
as a dependency); the tests parse the records with that package's own classes.
"""

from __future__ import annotations

from pathlib import Path

import tensorflow as tf

WARMUP_FILE = "tf_serving_warmup_requests"

# Field numbers in tensorflow_serving/apis/{prediction_log,predict,model}.proto.
_PREDICTION_LOG_PREDICT_LOG = 6
_PREDICT_LOG_REQUEST = 1
_REQUEST_MODEL_SPEC, _REQUEST_INPUTS = 1, 2
_MODEL_SPEC_NAME, _MODEL_SPEC_SIGNATURE = 1, 3
_MAP_KEY, _MAP_VALUE = 1, 2
_LENGTH_DELIMITED = 2


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field (a string, bytes or a message)."""
    return _varint(number << 3 | _LENGTH_DELIMITED) + _varint(len(payload)) + payload


def predict_request(model_name: str, signature: str, inputs: dict) -> bytes:
    """A serialized ``PredictRequest``; ``inputs`` maps input names to arrays or tensors."""
    spec = _field(_MODEL_SPEC_NAME, model_name.encode()) + _field(
        _MODEL_SPEC_SIGNATURE, signature.encode()
    )
    message = _field(_REQUEST_MODEL_SPEC, spec)
    for name, value in sorted(inputs.items()):
        tensor = tf.make_tensor_proto(value).SerializeToString()
        entry = _field(_MAP_KEY, name.encode()) + _field(_MAP_VALUE, tensor)
        message += _field(_REQUEST_INPUTS, entry)
    return message


def prediction_log(request: bytes) -> bytes:
    """A serialized ``PredictionLog`` holding a ``PredictLog`` with ``request``."""
    return _field(_PREDICTION_LOG_PREDICT_LOG, _field(_PREDICT_LOG_REQUEST, request))


def write_warmup_requests(version_dir: Path, model_name: str, requests: dict) -> Path:
    """Writes one warm-up record per ``{signature: inputs}`` item; returns the file."""
    folder = Path(version_dir) / "assets.extra"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / WARMUP_FILE
    with tf.io.TFRecordWriter(str(path)) as writer:
        for signature, inputs in requests.items():
            writer.write(prediction_log(predict_request(model_name, signature, inputs)))
    return path
