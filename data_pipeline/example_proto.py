"""`tf.train.Example` protos without TensorFlow: encode and decode token records.

TFDS stores each ArrayRecord record as a serialized `tf.train.Example`. The training
loader must read them without importing TensorFlow, so this module builds the
Example / Features / Feature / BytesList / FloatList / Int64List message classes at
runtime from a descriptor with the field numbers of
tensorflow/core/example/{example,feature}.proto, in a private descriptor pool (no clash
with TensorFlow's own classes when both are loaded). Only `protobuf` and `numpy` are
imported.

A token record holds the features TFDS writes for `tfds_builders`' datasets:
  id: text (bytes_list), tokens: int32 [n] (int64_list), prompt_length: int32 scalar
  (int64_list of one value), origin: text (bytes_list).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_PACKAGE = "tensorflow"
_LABEL_OPTIONAL, _LABEL_REPEATED = 1, 3
_TYPE_FLOAT, _TYPE_INT64, _TYPE_STRING, _TYPE_MESSAGE, _TYPE_BYTES = 2, 3, 9, 11, 12


def _file_descriptor() -> descriptor_pb2.FileDescriptorProto:
  """example.proto + feature.proto (the messages we need) as one descriptor."""
  proto = descriptor_pb2.FileDescriptorProto(
      name="phi_jax/tf_example.proto", package=_PACKAGE, syntax="proto3")

  def repeated_list(name: str, value_type: int, packed: bool) -> None:
    message = proto.message_type.add(name=name)
    field = message.field.add(name="value", number=1, type=value_type, label=_LABEL_REPEATED)
    if packed:
      field.options.packed = True

  repeated_list("BytesList", _TYPE_BYTES, packed=False)
  repeated_list("FloatList", _TYPE_FLOAT, packed=True)
  repeated_list("Int64List", _TYPE_INT64, packed=True)

  feature = proto.message_type.add(name="Feature")
  feature.oneof_decl.add(name="kind")
  for number, (name, type_name) in enumerate(
      (("bytes_list", "BytesList"), ("float_list", "FloatList"), ("int64_list", "Int64List")), 1):
    feature.field.add(name=name, number=number, type=_TYPE_MESSAGE, label=_LABEL_OPTIONAL,
                      type_name=f".{_PACKAGE}.{type_name}", oneof_index=0)

  features = proto.message_type.add(name="Features")
  entry = features.nested_type.add(name="FeatureEntry")
  entry.options.map_entry = True
  entry.field.add(name="key", number=1, type=_TYPE_STRING, label=_LABEL_OPTIONAL)
  entry.field.add(name="value", number=2, type=_TYPE_MESSAGE, label=_LABEL_OPTIONAL,
                  type_name=f".{_PACKAGE}.Feature")
  features.field.add(name="feature", number=1, type=_TYPE_MESSAGE, label=_LABEL_REPEATED,
                     type_name=f".{_PACKAGE}.Features.FeatureEntry")

  example = proto.message_type.add(name="Example")
  example.field.add(name="features", number=1, type=_TYPE_MESSAGE, label=_LABEL_OPTIONAL,
                    type_name=f".{_PACKAGE}.Features")
  return proto


_POOL = descriptor_pool.DescriptorPool()
_POOL.Add(_file_descriptor())
Example = message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"{_PACKAGE}.Example"))


class ExampleError(ValueError):
  """A record is not a token record (wrong features or types)."""


@dataclasses.dataclass(frozen=True)
class TokenRecord:
  """One document of a token dataset.

  id: the source record's id. tokens: int32 [n], the document's tokens without a
  trailing <|endoftext|>. prompt_length: leading prompt tokens (exercises), else 0.
  origin: where the document came from (the source record's "origin").
  """
  id: str
  tokens: np.ndarray
  prompt_length: int = 0
  origin: str = ""


# ---------------------------------------------------------------------- encode
def encode(record: TokenRecord) -> bytes:
  """The serialized tf.train.Example of a record, as TFDS writes it."""
  example = Example()
  feature = example.features.feature
  feature["id"].bytes_list.value.append(record.id.encode("utf-8"))
  feature["tokens"].int64_list.value.extend(np.asarray(record.tokens, np.int64).tolist())
  feature["prompt_length"].int64_list.value.append(int(record.prompt_length))
  feature["origin"].bytes_list.value.append(record.origin.encode("utf-8"))
  return example.SerializeToString()


# ---------------------------------------------------------------------- decode
def _feature(features, name: str, kind: str, where: str):
  if name not in features:
    raise ExampleError(f"{where}: the record has no feature {name!r} (has {sorted(features)})")
  feature = features[name]
  if feature.WhichOneof("kind") not in (kind, None):
    raise ExampleError(f"{where}: feature {name!r} is a {feature.WhichOneof('kind')}, "
                       f"expected {kind}")
  return getattr(feature, kind).value


def decode_tokens(serialized: bytes, where: str = "record") -> tuple[np.ndarray, int]:
  """(tokens int32 [n], prompt_length) of a serialized record: all the loader reads."""
  try:
    features = Example.FromString(serialized).features.feature
  except Exception as e:  # protobuf's DecodeError and friends
    raise ExampleError(f"{where}: not a serialized tf.train.Example ({e})") from None
  tokens = np.array(_feature(features, "tokens", "int64_list", where), dtype=np.int32)
  prompt = _feature(features, "prompt_length", "int64_list", where)
  return tokens, (int(prompt[0]) if prompt else 0)


def decode(serialized: bytes, where: str = "record") -> TokenRecord:
  """The TokenRecord of a serialized tf.train.Example."""
  try:
    features = Example.FromString(serialized).features.feature
  except Exception as e:
    raise ExampleError(f"{where}: not a serialized tf.train.Example ({e})") from None
  tokens = np.array(_feature(features, "tokens", "int64_list", where), dtype=np.int32)
  prompt = _feature(features, "prompt_length", "int64_list", where)
  ids = _feature(features, "id", "bytes_list", where)
  origin = _feature(features, "origin", "bytes_list", where)
  return TokenRecord(id=ids[0].decode("utf-8") if ids else "", tokens=tokens,
                     prompt_length=int(prompt[0]) if prompt else 0,
                     origin=origin[0].decode("utf-8") if origin else "")
