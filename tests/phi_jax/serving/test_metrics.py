"""Tests of phi_jax.serving.metrics and the server's /metrics, read back with the
reference parser of the Prometheus text format (prometheus_client)."""

import http.client
import random

import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from phi_jax import serve
from phi_jax.serving import metrics
from tests.conftest import make_servable_phi

MODEL = "tiny-phi"


def _samples(text):
  """{(sample name, frozenset of labels): value}, and {family name: type}."""
  values, types = {}, {}
  for family in text_string_to_metric_families(text):
    types[family.name] = family.type
    for sample in family.samples:
      values[sample.name, frozenset(sample.labels.items())] = sample.value
  return values, types


def test_counter_and_histogram_render_what_they_recorded():
  counter = metrics.LabelledCounter("x_requests_total", 'Requests "by" route.\\n',
                                    ("route", "status"))
  counter.inc("/a", "200")
  counter.inc("/a", "200", amount=2)
  counter.inc('/b"\\\n', "429")
  rng = random.Random(0)
  observed = [rng.expovariate(2.0) for _ in range(500)] + [0.25, 1e6]
  histogram = metrics.Histogram("x_seconds", "Latency.", ("route",), buckets=(0.1, 0.25, 1.0))
  for value in observed:
    histogram.observe(value, "/a")
  values, types = _samples(counter.render() + histogram.render())
  assert types == {"x_requests": "counter", "x_seconds": "histogram"}
  assert values["x_requests_total", frozenset({("route", "/a"), ("status", "200")})] == 3
  assert values["x_requests_total", frozenset({("route", '/b"\\\n'), ("status", "429")})] == 1
  for bound in (0.1, 0.25, 1.0, float("inf")):  # cumulative: observations <= bound
    key = ("x_seconds_bucket", frozenset({("route", "/a"), ("le", repr(bound) if bound < 1e9
                                                                 else "+Inf")}))
    assert values[key] == sum(v <= bound for v in observed), bound
  assert values["x_seconds_count", frozenset({("route", "/a")})] == len(observed)
  assert values["x_seconds_sum", frozenset({("route", "/a")})] == pytest.approx(sum(observed))


@pytest.fixture(scope="module")
def metered_server(tmp_path_factory):
  directory = make_servable_phi(str(tmp_path_factory.mktemp("metrics") / "hf"))
  model = serve.load_model(directory, dtype="float32")
  with serve.Server(model, port=0, model_name=MODEL, max_batch=4, chunk_size=4).start() as s:
    yield s


def test_server_metrics_count_requests_and_tokens(metered_server):
  client = openai.OpenAI(base_url=metered_server.url + "/v1", api_key="unused", max_retries=0)
  outs = [client.completions.create(model=MODEL, prompt=p, max_tokens=5, temperature=0, n=n)
          for p, n in (("def f(x):", 1), ("import os", 2))]
  with pytest.raises(openai.BadRequestError):
    client.completions.create(model=MODEL, prompt="x", temperature=-1)
  with pytest.raises(openai.NotFoundError):
    client.completions.create(model="other", prompt="x")
  connection = http.client.HTTPConnection(metered_server.host, metered_server.port, timeout=60)
  connection.request("GET", "/metrics")
  response = connection.getresponse()
  assert response.status == 200
  assert response.getheader("Content-Type") == metrics.CONTENT_TYPE
  values, types = _samples(response.read().decode())
  connection.close()

  def value(name, **labels):
    return values[name, frozenset(labels.items())]

  assert value("phi_jax_requests_total", route="/v1/completions", status="200") == 2
  assert value("phi_jax_requests_total", route="/v1/completions", status="400") == 1
  assert value("phi_jax_requests_total", route="/v1/completions", status="404") == 1
  assert value("phi_jax_request_duration_seconds_count", route="/v1/completions") == 4
  # Prompt tokens once per row (prompt x n); the usage field counts a prompt once.
  assert value("phi_jax_prompt_tokens_total") == len("def f(x):") + 2 * len("import os")
  assert value("phi_jax_generation_tokens_total") == sum(o.usage.completion_tokens for o in outs)
  assert value("phi_jax_rows_submitted_total") == value("phi_jax_rows_finished_total") == 3
  assert value("phi_jax_rows_cancelled_total") == 0
  assert value("phi_jax_queue_depth") == value("phi_jax_active_rows") == 0
  assert value("phi_jax_max_batch") == 4
  assert value("phi_jax_decode_rows_total") >= value("phi_jax_decode_steps_total") > 0
  assert types["phi_jax_queue_depth"] == "gauge"
  assert types["phi_jax_request_duration_seconds"] == "histogram"
