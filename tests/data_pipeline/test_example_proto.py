"""The TF-free tf.train.Example codec against TensorFlow's own Example proto."""

import numpy as np
import pytest

from data_pipeline import example_proto
from data_pipeline.example_proto import ExampleError, TokenRecord

RECORDS = [
    TokenRecord(id="a", tokens=np.arange(5, dtype=np.int32), prompt_length=2, origin="x.py"),
    TokenRecord(id="ünïcode ✓", tokens=np.array([], np.int32), prompt_length=0, origin=""),
    TokenRecord(id="big", tokens=np.array([0, 50256, 51199, 2**31 - 1], np.int32),
                prompt_length=3, origin="stack/ö"),
    TokenRecord(id="rand", tokens=np.random.default_rng(0).integers(0, 51200, 3000,
                                                                    dtype=np.int32),
                prompt_length=1000, origin="o"),
]


def _tf_example(record):
  import tensorflow as tf
  feature = {
      "id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[record.id.encode()])),
      "tokens": tf.train.Feature(int64_list=tf.train.Int64List(value=record.tokens.tolist())),
      "prompt_length": tf.train.Feature(
          int64_list=tf.train.Int64List(value=[record.prompt_length])),
      "origin": tf.train.Feature(bytes_list=tf.train.BytesList(value=[record.origin.encode()])),
  }
  return tf.train.Example(features=tf.train.Features(feature=feature))


def _assert_same(a: TokenRecord, b: TokenRecord):
  assert (a.id, a.prompt_length, a.origin) == (b.id, b.prompt_length, b.origin)
  assert b.tokens.dtype == np.int32
  np.testing.assert_array_equal(a.tokens, b.tokens)


@pytest.mark.parametrize("record", RECORDS, ids=[r.id for r in RECORDS])
def test_tensorflow_reads_what_we_encode_and_we_read_what_it_encodes(record):
  import tensorflow as tf
  parsed = tf.train.Example.FromString(example_proto.encode(record))
  assert parsed == _tf_example(record)
  _assert_same(record, example_proto.decode(_tf_example(record).SerializeToString()))
  tokens, prompt_length = example_proto.decode_tokens(_tf_example(record).SerializeToString())
  np.testing.assert_array_equal(tokens, record.tokens)
  assert prompt_length == record.prompt_length


def test_tf_parse_example_agrees():
  """tf.io.parse_single_example (what TFDS decoding does underneath) on our bytes."""
  import tensorflow as tf
  spec = {"id": tf.io.FixedLenFeature([], tf.string),
          "tokens": tf.io.VarLenFeature(tf.int64),
          "prompt_length": tf.io.FixedLenFeature([], tf.int64),
          "origin": tf.io.FixedLenFeature([], tf.string)}
  for record in RECORDS:
    parsed = tf.io.parse_single_example(example_proto.encode(record), spec)
    np.testing.assert_array_equal(tf.sparse.to_dense(parsed["tokens"]).numpy(), record.tokens)
    assert parsed["id"].numpy().decode() == record.id
    assert int(parsed["prompt_length"]) == record.prompt_length


def test_bad_records_raise_naming_where():
  with pytest.raises(ExampleError, match="file.ar:7: not a serialized"):
    example_proto.decode(b"\xff\xff\xff", where="file.ar:7")
  example = example_proto.Example()
  example.features.feature["tokens"].bytes_list.value.append(b"x")
  with pytest.raises(ExampleError, match="'tokens' is a bytes_list"):
    example_proto.decode_tokens(example.SerializeToString())
  with pytest.raises(ExampleError, match="no feature 'tokens'"):
    example_proto.decode_tokens(example_proto.Example().SerializeToString())
